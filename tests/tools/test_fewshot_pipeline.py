"""The few-shot pipeline end to end through the real tools, on the toy data:
base training (the session's toy_base_run) -> tools/surgery.py --method randinit ->
a 3-seed 10-shot fine-tune sweep (tools/train.py --seeds 0-2) that ends with the aggregate
table -> the same sweep again (every seed skipped) -> tools/eval.py without and with PCB
(the detector's own features: test.pcb.model "self") -> tools/aggregate.py over the sweep."""
import json

import numpy as np
import pytest

from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES

pytestmark = pytest.mark.slow
RECIPE = "recipes/toy_10shot.py"
SEEDS = (0, 1, 2)
FINETUNE = ("solver.max_iter=2", "solver.steps=[1]")  # tiny: the pipeline, not the accuracy
METRIC_KEYS = {"AP", "AP50", "AP75", "bAP", "bAP50", "bAP75", "nAP", "nAP50", "nAP75", "per_class"}


@pytest.fixture(scope="module")
def pipeline(toy_tools, toy_base_run, tmp_path_factory):
    """Runs every stage once; returns {stage: CompletedProcess} and the folders."""
    root = tmp_path_factory.mktemp("pipeline")
    rec = {"surgery_ckpt": root / "model_reset_surgery.ckpt", "sweep_dir": root / "toy_10shot"}
    rec["surgery"] = toy_tools.run("surgery", "--checkpoint", toy_base_run / "model_final.ckpt",
                                   "--method", "randinit", "--recipe", RECIPE, "--output", rec["surgery_ckpt"],
                                   *toy_tools.sets(fast=False))
    assert rec["surgery"].returncode == 0, rec["surgery"].stderr[-3000:]
    sweep_args = [RECIPE, "--seeds", "0-2", "--output-dir", rec["sweep_dir"],
                  *toy_tools.sets(*FINETUNE, f"model.base_weights={rec['surgery_ckpt']}")]
    rec["sweep"] = toy_tools.run("train", *sweep_args, timeout=1800)
    rec["trained_metrics"] = {s: _json(rec["sweep_dir"] / f"seed{s}" / "metrics.json") for s in SEEDS}
    rec["logged"] = {s: _lines(rec["sweep_dir"] / f"seed{s}" / "metrics.jsonl") for s in SEEDS}
    rec["rerun"] = toy_tools.run("train", *sweep_args)
    checkpoint = rec["sweep_dir"] / "seed0" / "model_final.ckpt"
    for name, flag in (("eval", "--no-pcb"), ("eval_pcb", "--pcb")):
        rec[name] = toy_tools.run("eval", RECIPE, "--checkpoint", checkpoint, flag, *toy_tools.sets())
    rec["aggregate"] = toy_tools.run("aggregate", rec["sweep_dir"])
    return rec


def _json(path):
    return json.loads(path.read_text()) if path.is_file() else None


def _lines(path):
    return path.read_text().splitlines() if path.is_file() else []


def test_surgery_then_each_seed_fine_tunes_into_its_folder_from_the_surgery_output(pipeline):
    assert "predictor grown from 6 to 9 classes" in pipeline["surgery"].stdout
    sweep = pipeline["sweep"]
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    for seed in SEEDS:
        run = pipeline["sweep_dir"] / f"seed{seed}"
        assert f"seed {seed}: training into {run}" in sweep.stdout
        config = _json(run / "config.json")
        assert config["data"]["split_seed"] == seed and config["data"]["shots"] == 10
        assert config["model"]["base_weights"] == str(pipeline["surgery_ckpt"])
        assert (run / "model_final.ckpt").is_file()
        assert [json.loads(line)["iter"] for line in pipeline["logged"][seed]] == [1, 2]
        metrics = pipeline["trained_metrics"][seed]  # the trainer's final evaluation (metrics.json)
        assert metrics is not None and METRIC_KEYS <= set(metrics), seed
        assert list(metrics["per_class"]) == BASE_CLASS_NAMES + NOVEL_CLASS_NAMES


def test_fine_tuning_leaves_res5_bit_identical(pipeline):
    """ROI_HEADS.FREEZE_FEAT: res5 keeps the surgery checkpoint's values exactly while the
    rest trains (tests/modeling/test_detector.py checks the gradient that reaches the ROI
    affine and res4 through res5)."""
    import mindspore as ms

    start = ms.load_checkpoint(str(pipeline["surgery_ckpt"]))
    final = ms.load_checkpoint(str(pipeline["sweep_dir"] / "seed0" / "model_final.ckpt"))
    res5 = [name for name in start if name.startswith("roi_heads.res5.")]
    assert res5
    for name in res5:
        assert np.array_equal(start[name].asnumpy(), final[name].asnumpy()), name
    assert not np.array_equal(start["roi_branch.affine.weight"].asnumpy(),
                              final["roi_branch.affine.weight"].asnumpy())  # trained


def test_the_sweep_ends_with_the_aggregate_table(pipeline):
    out = pipeline["sweep"].stdout
    table = out[out.rindex("### metrics.json"):]
    assert table.startswith("### metrics.json (3 of 3 runs)")
    assert "| metric | mean | std | 95% CI | n |" in table
    for key in ("AP", "bAP50", "nAP50"):
        assert f"| {key} |" in table and table.split(f"| {key} |")[1].split("\n")[0].endswith("| 3 |")
    written = _json(pipeline["sweep_dir"] / "aggregate.json")
    assert written["files"]["metrics.json"]["runs"] == [str(pipeline["sweep_dir"] / f"seed{s}") for s in SEEDS]


def test_rerunning_the_sweep_skips_every_finished_seed(pipeline):
    rerun = pipeline["rerun"]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for seed in SEEDS:
        assert f"seed {seed}: finished earlier" in rerun.stdout
        assert _lines(pipeline["sweep_dir"] / f"seed{seed}" / "metrics.jsonl") == pipeline["logged"][seed]
    assert "training into" not in rerun.stdout and "resuming" not in rerun.stdout
    assert "### metrics.json (3 of 3 runs)" in rerun.stdout


@pytest.mark.parametrize("stage, file_name", [("eval", "metrics.json"), ("eval_pcb", "metrics_pcb.json")])
def test_eval_without_and_with_pcb_writes_its_metrics(pipeline, stage, file_name):
    result = pipeline[stage]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    run = pipeline["sweep_dir"] / "seed0"
    metrics = _json(run / file_name)
    assert METRIC_KEYS <= set(metrics)
    assert set(metrics["per_class"]) == set(BASE_CLASS_NAMES + NOVEL_CLASS_NAMES)
    detections = _json(run / file_name.replace("metrics", "detections"))
    assert isinstance(detections, list)
    assert f"wrote {run / file_name}" in result.stdout


def test_aggregate_over_the_sweep_separates_pcb_runs(pipeline):
    result = pipeline["aggregate"]
    assert result.returncode == 0, result.stderr
    assert "### metrics.json (3 of 3 runs)" in result.stdout
    assert "### metrics_pcb.json (1 of 3 runs)" in result.stdout
    assert f"- {pipeline['sweep_dir'] / 'seed1'}: no metrics_pcb.json" in result.stdout
