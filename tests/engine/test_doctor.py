"""The recipe checks of defrcn/engine/doctor.py as a library: findings, the one-line refusal,
the layout of a finding, the frozen-part warnings."""
from pathlib import Path

import pytest

from defrcn.config.recipe import load_recipe
from defrcn.engine.doctor import Finding, _check_frozen, check_or_raise, format_finding, run_checks
from defrcn.errors import InputError

REPO = Path(__file__).resolve().parents[2]
RECIPE = "recipes/toy_10shot.py"


def cfg_of(recipe, *overrides):
    return load_recipe(REPO / recipe, list(overrides)).cfg


def by_topic(findings):
    """{text before the first ':' of the message: finding}."""
    return {f.message.split(":")[0]: f for f in findings}


def test_the_toy_recipe_on_the_toy_data_passes_classes_split_and_test_set(toy_root, tmp_path):
    missing = tmp_path / "model_reset_surgery.ckpt"
    findings = run_checks(cfg_of("recipes/toy_1shot.py", f"data.root={toy_root}", f"model.base_weights={missing}"))
    assert all(isinstance(f, Finding) for f in findings)
    topics = by_topic(findings)
    assert topics["classes"] == ("ok", "classes: 6 base + 3 novel; setting 'tfa' -> model.num_classes 9")
    assert topics["split"] == ("ok", "split: each of the 9 classes has 1 instance(s) in the 1-shot split, seed 0")
    assert topics["test set"] == ("ok", "test set: 12 images, every one of the 9 classes present")
    assert topics["model.base_weights"].level == "error" and str(missing) in topics["model.base_weights"].message
    assert [f.level for f in findings].count("error") == 1


def test_an_empty_data_root_is_one_error_naming_the_missing_file(tmp_path):
    findings = run_checks(cfg_of("recipes/toy_1shot.py", f"data.root={tmp_path}"))
    assert findings == [Finding("error", f"{tmp_path / 'annotations' / 'train.json'}: file not found")]
    with pytest.raises(InputError) as error:
        check_or_raise(cfg_of("recipes/toy_1shot.py", f"data.root={tmp_path}"))
    assert str(error.value) == f"doctor: {findings[0].message}"  # one error: no count of others


def test_several_errors_raise_the_first_in_one_line_with_the_count_of_the_others(toy_root, tmp_path):
    empty = tmp_path / "no_splits"
    empty.mkdir()
    cfg = cfg_of("recipes/toy_1shot.py", f"data.root={toy_root}", f"data.fewshot_dir={empty}",
                 f"model.base_weights={tmp_path / 'absent.ckpt'}")
    errors = [f for f in run_checks(cfg) if f.level == "error"]
    assert len(errors) == 2 and "split file of class" in errors[0].message
    with pytest.raises(InputError) as error:
        check_or_raise(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert message == f"doctor: {errors[0].message} (and 1 more problem(s): run tools/doctor.py)"


def test_check_or_raise_returns_the_warnings_when_nothing_is_wrong(toy_root):
    warnings = check_or_raise(cfg_of("recipes/toy_base.py", f"data.root={toy_root}", "model.norm=frozen_bn"))
    assert [f.level for f in warnings] == ["warning"]
    assert warnings[0].message.startswith("model.norm=frozen_bn with random initialisation")
    assert check_or_raise(cfg_of("recipes/toy_base.py", f"data.root={toy_root}")) == []


@pytest.mark.parametrize("finding, line", [
    (Finding("ok", "classes: 6 base"), "ok:      classes: 6 base"),
    (Finding("warning", "model.freeze_at=4"), "warning: model.freeze_at=4"),
    (Finding("error", "data: x"), "error:   data: x"),
])
def test_format_finding_pads_the_level_to_one_column(finding, line):
    assert format_finding(finding) == line


def test_freezing_res4_in_a_fine_tune_is_a_warning():
    findings = _check_frozen(cfg_of("recipes/toy_1shot.py", "model.freeze_at=4"), None)
    assert [f.level for f in findings] == ["warning"]
    assert findings[0].message.startswith("model.freeze_at=4 freezes res4, which DeFRCN fine-tunes (freeze_at 3)")
    assert "with model.freeze_res5 only the RPN" in findings[0].message  # the toy fine-tune freezes res5
    # the fine-tune's own setting (stem..res3) is fine
    assert _check_frozen(cfg_of("recipes/toy_1shot.py"), None) == [Finding("ok", "frozen: stem..res3")]


def test_frozen_bn_or_frozen_stages_at_random_initialisation_are_warnings():
    base = cfg_of("recipes/toy_base.py", "model.norm=frozen_bn", "model.freeze_at=2")
    topics = by_topic(_check_frozen(base, None))
    assert set(topics) == {"model.norm=frozen_bn with random initialisation", "model.freeze_at=2"}
    assert {f.level for f in topics.values()} == {"warning"}
    assert "stages frozen at their random initial values" in topics["model.freeze_at=2"].message
    # starting from a checkpoint, the same settings are fine
    assert _check_frozen(base, "some/init.ckpt") == [Finding("ok", "frozen: stem..res2")]


def test_nothing_frozen_in_a_base_training_from_scratch_is_ok():
    assert _check_frozen(cfg_of("recipes/toy_base.py"), None) == [Finding("ok", "frozen: nothing")]


def test_run_checks_library(toy_root, toy_checkpoint):
    base_run = toy_checkpoint("recipes/toy_base.py", f"data.root={toy_root}", name="model_final.ckpt")
    cfg = load_recipe(REPO / RECIPE, [f"data.root={toy_root}", "model.surgery=none",
                               f"model.base_weights={base_run}"]).cfg
    findings = run_checks(cfg)
    assert all(isinstance(f, Finding) for f in findings)
    errors = [f.message for f in findings if f.level == "error"]
    assert len(errors) == 1 and "a predictor for 6 classes, but model.num_classes is 9" in errors[0]
    assert cfg.model.base_weights.endswith("model_final.ckpt")  # cfg left as it was
    base = load_recipe(REPO / "recipes/toy_base.py", [f"data.root={toy_root}", "model.norm=frozen_bn",
                                               "model.freeze_at=2"]).cfg
    base_findings = run_checks(base)
    levels = {f.message.split(":")[0]: f.level for f in base_findings}
    assert levels["model.norm=frozen_bn with random initialisation"] == "warning"
    assert levels["model.freeze_at=2"] == "warning"
    assert not [f for f in base_findings if f.level == "error"]
