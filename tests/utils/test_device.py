"""defrcn.utils.device: the device names the tools accept, Ascend's operator precision kept at
the graph's dtypes, and the memory setting every graph-running process makes (MindSpore's setters are
replaced by recorders: each can be set once per process)."""
import logging
import shutil

import mindspore as ms
import pytest

from defrcn.config.config import Config
from defrcn.errors import InputError
from defrcn.utils import device as device_module
from defrcn.utils.device import (ASCEND_PRECISION_MODE, DEVICES, KERNEL_FUSION_ENV, check_device,
                                 fuse_inference_kernels, fusion_pays, keep_graph_precision, plan_graph_memory,
                                 set_kernel_fusion)


@pytest.mark.parametrize("device", DEVICES)
def test_known_devices_pass(device):
    assert check_device(device) is None


@pytest.mark.parametrize("device", ["cpu", "NPU", ""])
def test_other_names_are_one_input_error(device):
    with pytest.raises(InputError) as info:
        check_device(device)
    assert str(info.value) == f"--device: expected one of CPU, GPU, Ascend, got {device!r}"


@pytest.fixture
def precision_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", calls.append)
    return calls


def test_ascend_keeps_the_graph_dtypes(precision_calls):
    keep_graph_precision("Ascend")
    assert precision_calls == [ASCEND_PRECISION_MODE] == ["must_keep_origin_dtype"]


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_other_devices_are_left_alone(precision_calls, device):
    keep_graph_precision(device)
    assert precision_calls == []


def test_a_mode_chosen_elsewhere_is_kept_with_a_warning(monkeypatch, caplog):
    def refuse(mode):
        raise RuntimeError("The 'precision_mode' can not be set repeatedly.")

    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", refuse)
    with caplog.at_level(logging.WARNING, logger="defrcn.utils.device"):
        keep_graph_precision("Ascend")
    assert "left as configured" in caplog.text and "set repeatedly" in caplog.text


@pytest.fixture
def memory_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(ms.runtime, "set_memory", lambda **kw: calls.append(kw))
    monkeypatch.setattr(device_module, "_GRAPH_MEMORY_PLANNED", False)
    return calls


def test_memory_is_planned_once_per_process(memory_calls):
    plan_graph_memory()
    plan_graph_memory()  # training then eval (the demo): MindSpore would refuse a second call
    assert memory_calls == [{"optimize_level": "O1"}]


def test_a_memory_setting_made_elsewhere_is_kept_with_a_warning(monkeypatch, caplog):
    def refuse(**kwargs):
        raise RuntimeError("The 'set_memory' can not be set repeatedly.")

    monkeypatch.setattr(ms.runtime, "set_memory", refuse)
    monkeypatch.setattr(device_module, "_GRAPH_MEMORY_PLANNED", False)
    with caplog.at_level(logging.WARNING, logger="defrcn.utils.device"):
        plan_graph_memory()
    assert "left as configured" in caplog.text and "set repeatedly" in caplog.text


@pytest.fixture
def context_calls(monkeypatch):
    """set_kernel_fusion's MindSpore context settings, recorded (AKG's folders untouched)."""
    calls = []
    fusion = {"enable_graph_kernel": False}

    def record(**settings):
        calls.append(settings)
        fusion.update((k, v) for k, v in settings.items() if k in fusion)

    monkeypatch.setattr(ms, "set_context", record)
    monkeypatch.setattr(ms, "get_context", fusion.__getitem__)
    monkeypatch.setattr(device_module, "_keep_akg_files_out_of_cwd", lambda: None)
    monkeypatch.delenv(KERNEL_FUSION_ENV, raising=False)
    return calls


def test_cpu_inference_fuses_only_the_convolution_tails(context_calls):
    assert set_kernel_fusion("CPU", inference=True) is True
    assert context_calls == [dict(enable_graph_kernel=True,
                                  graph_kernel_flags="--enable_cluster_ops_only=BiasAdd,ReLU,Add")]


def test_training_turns_fusion_off_and_leaves_it_off(context_calls):
    assert set_kernel_fusion("CPU", inference=False) is False
    assert context_calls == []  # off already: nothing set
    set_kernel_fusion("CPU", inference=True)
    assert set_kernel_fusion("CPU", inference=False) is False
    assert context_calls[1:] == [dict(enable_graph_kernel=False)]


LARGE, SMALL = 800 * 1344, 512 * 512  # DeFRCN's test canvas; one where fusing gained nothing


@pytest.mark.parametrize("setting, folded, pixels, fused", [
    ("auto", 104, LARGE, True),  # the R-101's frozen BN, folded
    ("auto", 0, LARGE, False),  # trainable BN: no bias tails
    ("auto", 104, SMALL, False),
    ("on", 0, SMALL, True),
    ("off", 104, LARGE, False),
])
def test_the_loaders_fuse_folded_convolutions_on_large_canvases(context_calls, setting, folded, pixels, fused):
    assert fusion_pays(setting, folded, pixels) is fused
    cfg = Config(test=dict(kernel_fusion=setting), input=dict(canvases=[[1, pixels]]))
    assert fuse_inference_kernels("CPU", cfg, folded=folded) is fused
    assert bool(context_calls and context_calls[-1].get("enable_graph_kernel")) is fused


def test_a_misspelt_fusion_setting_is_refused():
    with pytest.raises(ValueError, match="one of auto, on, off, got 'yes'"):
        fusion_pays("yes", 1, LARGE)


@pytest.mark.parametrize("device", ["GPU", "Ascend"])
def test_other_devices_are_not_touched(context_calls, device):
    assert set_kernel_fusion(device, inference=True) is False
    assert context_calls == []


def test_the_environment_switch_and_a_missing_linker_leave_fusion_off(context_calls, monkeypatch, caplog):
    monkeypatch.setenv(KERNEL_FUSION_ENV, "0")
    with caplog.at_level(logging.INFO, logger="defrcn.utils.device"):
        assert set_kernel_fusion("CPU", inference=True) is False
    monkeypatch.delenv(KERNEL_FUSION_ENV)
    monkeypatch.setattr(device_module.shutil, "which", lambda name: None)
    with caplog.at_level(logging.INFO, logger="defrcn.utils.device"):
        assert set_kernel_fusion("CPU", inference=True) is False
    assert context_calls == []
    assert "DEFRCN_KERNEL_FUSION=0" in caplog.text and "no g++ on PATH" in caplog.text


# Compiles, with fusion on and then off, a convolution tail and a Select whose (N, 1) condition
# broadcasts over (N, 4) boxes (what MindSpore 2.8's CPU fusion miscompiles when it may take
# it); prints both as JSON with the files AKG left in its folder, and leaves as the tools do.
FUSION_SCRIPT = """
import json, os
import numpy as np
import mindspore as ms
from mindspore import nn, ops
from defrcn.utils.device import set_kernel_fusion
ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")

class Tail(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, has_bias=True, weight_init="normal", bias_init="normal")
    def construct(self, x):
        return ops.relu(self.conv(x) + x)

class KeepBoxes(nn.Cell):
    def construct(self, boxes, scores):
        usable = ops.logical_and(boxes[:, 2] - boxes[:, 0] > 0, scores > 0.1)
        return ops.where(usable.reshape(-1, 1), boxes * 1.0, ops.zeros_like(boxes))

rng = np.random.default_rng(0)
x = ms.Tensor(rng.normal(size=(1, 8, 16, 16)).astype(np.float32))
boxes = ms.Tensor(rng.uniform(1, 500, (6000, 4)).astype(np.float32))
scores = ms.Tensor(rng.uniform(0, 1, 6000).astype(np.float32))
ms.set_seed(0)
tail = Tail()
out = {}
for fused in (True, False):
    out[f"fusion_{fused}"] = set_kernel_fusion("CPU", inference=fused)
    weights = {p.name: p.asnumpy() for p in tail.get_parameters()}
    copy = Tail()
    for p in copy.get_parameters():
        p.set_data(ms.Tensor(weights[p.name]))
    out[f"tail_{fused}"] = copy(x).asnumpy().ravel().tolist()
    out[f"boxes_{fused}"] = KeepBoxes()(boxes, scores).asnumpy().ravel().tolist()
    if fused:
        out["akg_folder"] = os.environ["MS_COMPILER_CACHE_PATH"]
        out["kernels"] = sorted(os.listdir(os.path.join(out["akg_folder"], "akg_kernel_meta")))
print(json.dumps(out))
from defrcn.engine.cli import _leave
_leave(0)  # as every tool leaves: os._exit, no atexit handlers
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None, reason="AKG links its kernels with g++")
def test_fused_kernels_compute_what_the_stock_ones_do_and_leave_no_files(tmp_path):
    import json
    import os
    import subprocess
    import sys

    import numpy as np

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MS_COMPILER_CACHE", "AKG_"))}
    env.update(GLOG_v="3", PYTHONPATH=repo)
    env.pop(KERNEL_FUSION_ENV, None)
    script, workdir = tmp_path / "fusion.py", tmp_path / "workdir"  # MindSpore parses a file
    script.write_text(FUSION_SCRIPT)
    workdir.mkdir()
    proc = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # AKG prints nothing of its own
    out = json.loads(lines[0])
    assert out["fusion_True"] is True and out["fusion_False"] is False
    assert any(name.startswith("Fused_BiasAdd_Add_ReLU") for name in out["kernels"]), out["kernels"]
    assert out["tail_True"] == out["tail_False"]  # bit for bit
    boxes = np.array(out["boxes_False"]).reshape(-1, 4)
    assert (boxes == 0).all(axis=1).sum() > 100  # some rows zeroed, none partly
    np.testing.assert_array_equal(np.array(out["boxes_True"]).reshape(-1, 4), boxes)
    assert os.listdir(workdir) == []  # AKG's log and kernels are not left in the working folder
    assert not os.path.exists(out["akg_folder"])
