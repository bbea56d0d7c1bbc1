"""tools/benchmark.py: each mode prints one JSON line with the agreed keys (a tiny ResNet-18
toy detector at 128 px, one timed step; no timing assertions); bad input is one line, exit 2."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = "recipes/toy_base.py"
# A tiny toy detector: ResNet-18, one 128 x 128 canvas, few proposals and RoIs.
TINY = ["model.depth=18", "input.canvases=[[128,128]]", "input.min_size_train=[128]",
        "input.max_size_train=128", "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
        "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=50",
        "model.roi.batch_size_per_image=8", "data.num_workers=1"]
PEER_KEYS = {"median_ms", "min_ms", "peak_rss_mib", "params"}
OUR_KEYS = {"compile_s", "proposals_per_image", "device", "mindspore", "mode", "batch", "size"}


def _run(*args, overrides=TINY):
    command = [sys.executable, "tools/benchmark.py", RECIPE, *map(str, args)]
    for item in overrides:
        command += ["--set", item]
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)


def _json_line(proc):
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # --json: the JSON line only (build log goes to stderr)
    return json.loads(lines[0])


# train: DeFRCN's frozen BN; the frozen stem + res2 folded into their convolutions
FROZEN = ("--set", "model.norm=frozen_bn", "--set", "model.freeze_at=2", "--fold-bn")

# infer: also "auto" for res5, which the tool reports as the form it resolves to on this CPU;
# DeFRCN's frozen BN, all folded in inference, and the tails fused (on this small canvas only
# when asked: "auto" fuses from 600 x 800 on)
AUTO_RES5 = ("--set", "model.res5_conv=auto", "--set", "model.norm=frozen_bn", "--set", "test.kernel_fusion=on")


@pytest.mark.slow
@pytest.mark.parametrize("mode, extra", [("infer", ("--breakdown", *AUTO_RES5)), ("train", FROZEN)])
def test_model_modes_print_the_peer_keys(mode, extra):
    result = _json_line(_run("--mode", mode, "--batch", 1, "--size", 128, 128, "--iters", 1,
                             "--warmup", 0, "--json", *extra))
    assert PEER_KEYS | OUR_KEYS <= set(result)
    assert result["mode"] == mode and result["batch"] == 1 and result["size"] == [128, 128]
    assert result["median_ms"] > 0 and result["compile_s"] > 0 and result["peak_rss_mib"] > 100
    assert result["params"] == 11_798_940  # ResNet-18 C4 with 6 classes
    assert result["res5_conv"] == "winograd"  # the toy recipe's; "auto" on CPU
    assert result["conv_backward"] == "stock"  # the toy recipe's
    # calibrated statistics: the RPN keeps proposals (up to the post-NMS top-k of the mode)
    assert 0 < result["proposals_per_image"] <= 50
    assert result["device"] == "CPU" and result["mindspore"].startswith("2.")
    # memory planned at compile time, as training, eval and infer run (MindSpore's default: O0)
    assert result["memory_optimize_level"] == "O1"
    # the folded convolutions' tails fused in inference (on CPU) when the recipe says so
    assert result["kernel_fusion"] is (mode == "infer")
    if mode == "infer":  # --breakdown: each stage timed as its own graph
        for key in ("backbone_ms", "rpn_ms", "roi_heads_ms"):
            assert result[key] > 0
        assert result["folded_bn"] == 20  # every BN of the R-18
    else:  # folded: the stem's conv1/bn1 and res2's two basic blocks (2 pairs each)
        assert result["folded_bn"] == 5


def test_data_mode_reports_loader_throughput():
    result = _json_line(_run("--mode", "data", "--batch", 2, "--size", 96, 128, "--images", 8,
                             "--iters", 2, "--warmup", 1, "--json"))
    assert PEER_KEYS | OUR_KEYS <= set(result)
    assert result["images_per_s"] > 0 and result["num_images"] == 8
    assert result["size"] == [96, 128]


def test_summary_line_comes_before_the_json_without_flag():
    proc = _run("--mode", "data", "--batch", 1, "--size", 64, 64, "--images", 2, "--iters", 1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary, line = proc.stdout.strip().splitlines()
    assert summary.startswith("toy_base data batch 1")
    assert json.loads(line)["mode"] == "data"


@pytest.mark.parametrize("args, needle", [
    (("--mode", "train", "--iters", 0), "--iters"),
    (("--mode", "infer", "--size", 8, 8), "--size"),
    (("--mode", "train", "--breakdown"), "--breakdown"),
    (("--mode", "bogus"), "--mode"),
])
def test_bad_arguments_are_one_line_exit_2(args, needle):
    proc = _run(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr



@pytest.mark.slow
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_direct_res5_runs_through_the_tool_with_the_same_parameters(mode):
    # The toy recipe's own choice is "winograd" (test_model_modes_print_the_peer_keys runs it).
    # ... and its 3x3 backward is the stock one: here the lean one (training: every trainable 3x3)
    direct = _json_line(_run("--mode", mode, "--batch", 1, "--size", 128, 128, "--iters", 1, "--warmup", 0,
                             "--json", "--set", "model.res5_conv=direct", "--set", "model.conv_backward=lean"))
    assert direct["median_ms"] > 0 and 0 < direct["proposals_per_image"] <= 50
    assert direct["params"] == 11_798_940  # the same checkpoint layout as the Winograd and lean forms
    assert direct["res5_conv"] == "direct" and direct["conv_backward"] == "lean"
    refused = _run("--mode", mode, "--set", "model.res5_conv=fft")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: model.res5_conv: 'fft' is not one of auto, direct, winograd"


@pytest.mark.slow
def test_frozen_bn_setting_reaches_the_trained_model_through_the_tool():
    """model.frozen_bn_impl on a frozen-BN toy R-18 (20 frozen BNs, 5 of them in res5): "auto"
    puts res5's inside their convolutions, "in_conv" all, "kernel" none; the same parameters, and
    a training step runs each way. An unknown value is one line, exit 2."""
    counts = {}
    for impl in ("kernel", "auto", "in_conv"):
        result = _json_line(_run("--mode", "train", "--batch", 1, "--size", 128, 128, "--iters", 1, "--warmup", 0,
                                 "--json", "--set", "model.norm=frozen_bn", "--set", "model.freeze_at=0",
                                 "--set", f"model.frozen_bn_impl={impl}"))
        assert result["median_ms"] > 0 and result["params"] == 11_798_940
        counts[impl] = result["frozen_bn_in_conv"]
    assert counts == {"kernel": 0, "auto": 5, "in_conv": 20}
    refused = _run("--mode", "train", "--set", "model.frozen_bn_impl=fold")
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: model.frozen_bn_impl: 'fold' is not one of auto, kernel, in_conv"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_a_bottleneck_res5_reads_the_sampled_pooled_bins_through_the_tool(mode):
    """R-50 with the stride in the 1x1 (MSRA weights): res5 takes the 4 x 4 of the 7 x 7 pooled
    bins its stride-2 1x1 convolutions read, in training and inference; the torchvision layout
    (stride in the 3x3) reads all 49."""
    overrides = [item for item in TINY if not item.startswith("model.depth")] + ["model.depth=50"]
    for stride_in_1x1, expected in (("True", 2), ("False", 1)):
        result = _json_line(_run("--mode", mode, "--batch", 1, "--size", 128, 128, "--iters", 1, "--warmup", 0,
                                 "--json", "--set", f"model.stride_in_1x1={stride_in_1x1}",
                                 overrides=overrides))
        assert result["depth"] == 50 and result["pooler"] == 7
        assert result["res5_input_stride"] == expected
        assert result["median_ms"] > 0 and 0 < result["proposals_per_image"] <= 50


def test_the_peak_memory_is_read_before_the_benchmarks_own_checks():
    # the proposal count (the benchmark's check, which eval never runs) made to hold 600 MiB
    script = (
        "import json, resource, sys, numpy as np\n"
        "import defrcn.apps.benchmark as B\n"
        "count = B.count_proposals\n"
        "def heavy(*args, **kwargs):\n"
        "    global held\n"
        "    held = np.ones(600 * 2**18, np.float32)\n"
        "    return count(*args, **kwargs)\n"
        "B.count_proposals = heavy\n"
        "result = B.benchmark_recipe(sys.argv[1], mode='infer', batch=1, size=(128, 128), iters=1,\n"
        "                            warmup=0, overrides=sys.argv[2:])\n"
        "print(json.dumps([result['peak_rss_mib'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))\n")
    proc = subprocess.run([sys.executable, "-c", script, RECIPE, *TINY], cwd=REPO, capture_output=True,
                          text=True, env=dict(os.environ, GLOG_v="3"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reported, process_peak = json.loads(proc.stdout.strip().splitlines()[-1])
    assert process_peak - reported > 500  # the 600 MiB came after the reading
