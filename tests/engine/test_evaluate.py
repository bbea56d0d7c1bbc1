"""tools/eval.py (defrcn.engine.evaluate.evaluate_recipe) end to end on a random toy detector."""
import json

import pytest

from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES

TINY = ["model.rpn.pre_nms_topk_test=64", "model.rpn.post_nms_topk_test=16",
        "input.canvases=[[128,128]]", "input.min_size_test=128", "input.max_size_test=128",
        "test.ims_per_device=2"]


@pytest.fixture(scope="module")
def eval_root(tmp_path_factory):
    """A 6 + 3 image synthetic data set at 128 px (smaller than the session's toy_root)."""
    from defrcn.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("toy")
    write_synthetic_dataset(str(root), train_images=6, test_images=3, size=128)
    return str(root)


@pytest.fixture
def evaluate(eval_root, toy_checkpoint, run_tool):
    """`evaluate(recipe, weights_recipe, name, *extra, memory_level=None)`: tools/eval.py of
    `recipe` on the toy data with random weights of `weights_recipe`'s model, saved as `name`
    (`memory_level`: see `run_tool`)."""
    def run(recipe, weights_recipe, name, *extra, memory_level=None):
        sets = [f"data.root={eval_root}", *TINY]
        checkpoint = toy_checkpoint(weights_recipe, *sets, name=name)
        return run_tool("eval", recipe, "--checkpoint", checkpoint, "--no-pcb", *extra, sets=sets,
                        memory_level=memory_level)

    return run


def test_eval_cli_on_a_random_detector_writes_metrics(evaluate, tmp_path):
    out = tmp_path / "eval"
    result = evaluate("recipes/toy_1shot.py", "recipes/toy_1shot.py", "model_final.ckpt", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "bAP", "bAP50", "nAP", "nAP50",
            "per_class"} <= set(metrics)
    assert list(metrics["per_class"]) == BASE_CLASS_NAMES + NOVEL_CLASS_NAMES  # toy tfa: all
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} == set(detections[0])
    assert "novel" in result.stdout and "Traceback" not in result.stderr  # the table


def test_eval_cli_plans_memory_and_detects_as_at_the_default_setting(evaluate, tmp_path):
    def detections_at(memory_level):
        out = tmp_path / memory_level
        result = evaluate("recipes/toy_1shot.py", "recipes/toy_1shot.py", "model_final.ckpt",
                          "--output-dir", out, memory_level=memory_level)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout.strip().splitlines()[-1], json.loads((out / "detections.json").read_text())

    planned_level, planned = detections_at("-")  # the tool's own setting
    default_level, default = detections_at("O0")  # MindSpore's default, set before the tool runs
    assert planned_level == "memory_optimize_level 1" and default_level == "memory_optimize_level 0"
    assert planned and planned == default


def test_eval_cli_rejects_a_checkpoint_of_another_class_count(evaluate, one_line_error):
    all_classes = len(BASE_CLASS_NAMES) + len(NOVEL_CLASS_NAMES)
    one_line_error(evaluate("recipes/toy_1shot.py", "recipes/toy_base.py", "base.ckpt"), "base.ckpt",
                   "cls_score.weight", f"trained for {len(BASE_CLASS_NAMES)} classes, this recipe has {all_classes}")


def test_one_detection_pass_gives_the_plain_and_the_pcb_tables_of_two_separate_passes(
        toy_root, toy_checkpoint, tmp_path):
    from pathlib import Path

    from defrcn.engine.evaluate import Evaluation, _build_pcb, evaluate_model

    repo = Path(__file__).resolve().parents[2]
    sets = [f"data.root={toy_root}", *TINY]
    checkpoint = toy_checkpoint("recipes/toy_1shot.py", *sets, name="model_final.ckpt")
    evaluation = Evaluation(str(repo / "recipes" / "toy_1shot.py"), checkpoint=str(checkpoint),
                            overrides=[*sets, f"output_dir={tmp_path / 'run'}"])
    out = tmp_path / "once"
    plain = evaluation.evaluate(pcb=False, output_dir=str(out), progress=False)
    calibrated = evaluation.evaluate(pcb=True, output_dir=str(out), progress=False)
    # as before: the test set detected for each table, PCB rescoring image by image during it
    model, data = evaluation.model, evaluation.data
    detections, metrics = evaluate_model(model, data, progress=False)
    rescore = _build_pcb(evaluation.cfg, model, data).rescore
    detections_pcb, metrics_pcb = evaluate_model(model, data, progress=False, rescore=rescore)
    assert json.loads((out / "detections.json").read_text()) == detections
    assert json.loads((out / "detections_pcb.json").read_text()) == detections_pcb
    assert plain == metrics and calibrated == metrics_pcb
    assert [d["score"] for d in detections_pcb] != [d["score"] for d in detections]  # PCB did rescore
