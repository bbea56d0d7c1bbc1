"""The training driver's checks and helpers (defrcn/engine/train.py), without training."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mindspore import Tensor

from defrcn.checkpoint.io import save_checkpoint
from defrcn.config.recipe import load_recipe
from defrcn.engine.train import (_check_fresh_or_resume, _check_speed_keys, _needs_surgery,
                                 _write_final_metrics, load_initial_weights, parse_seeds)
from defrcn.errors import InputError
from defrcn.modeling.param_names import CLS_WEIGHT

REPO = Path(__file__).resolve().parents[2]


def toy_cfg(*overrides):
    return load_recipe(REPO / "recipes/toy_base.py", list(overrides)).cfg


def one_line(error):
    message = str(error.value)
    assert "\n" not in message, message
    return message


# --- parse_seeds -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, seeds", [("0-2,5", [0, 1, 2, 5]), ("7", [7]), ("3,1,1", [1, 3]),
                                         (" 4 - 6 ", [4, 5, 6])])
def test_parse_seeds_reads_ranges_and_lists_sorted_and_unique(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["a", "0-x", "5-2", "1,,2", "-1"])
def test_parse_seeds_refuses_bad_text_naming_the_option(text):
    with pytest.raises(InputError) as error:
        parse_seeds(text)
    assert one_line(error).startswith("--seeds:")


# --- _check_speed_keys -----------------------------------------------------------------------

def test_dataset_sink_with_two_canvases_is_refused_in_one_line_with_advice():
    cfg = toy_cfg("solver.dataset_sink=true", "input.canvases=[[128,128],[96,160]]")
    with pytest.raises(InputError) as error:
        _check_speed_keys(cfg)
    message = one_line(error)
    assert message.startswith("solver.dataset_sink:")
    assert "input.canvases has 2" in message
    assert "set one canvas that holds them all (--set input.canvases=[[160,160]])" in message
    assert "solver.dataset_sink=false" in message


@pytest.mark.parametrize("overrides", [
    ("solver.dataset_sink=true", "input.canvases=[[128,128]]"),  # one canvas: a sink can carry it
    ("solver.dataset_sink=false", "input.canvases=[[128,128],[96,160]]"),  # no sink
    ("solver.amp_level=O2", "solver.loss_scale=1024"),
])
def test_speed_keys_that_can_run_pass(overrides):
    assert _check_speed_keys(toy_cfg(*overrides)) is None


@pytest.mark.parametrize("key, value, fragment", [
    ("amp_level", "O7", "solver.amp_level: expected one of O0, O1, O2, O3, got 'O7'"),
    ("loss_scale", "0.5", "solver.loss_scale: expected 'dynamic' or a number >= 1"),
])
def test_bad_mixed_precision_settings_are_refused(key, value, fragment):
    cfg = toy_cfg("solver.amp_level=O1")
    cfg.solver[key] = value
    with pytest.raises(InputError) as error:
        _check_speed_keys(cfg)
    assert fragment in one_line(error)


# --- _check_fresh_or_resume ------------------------------------------------------------------

def test_a_folder_of_an_earlier_run_needs_resume(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_0000006.ckpt")
    with pytest.raises(InputError) as error:
        _check_fresh_or_resume(tmp_path, resume=False)
    message = one_line(error)
    assert message.startswith(f"{tmp_path}:") and "--resume" in message and "--output-dir" in message
    assert _check_fresh_or_resume(tmp_path, resume=True) is None  # continuing it is fine


def test_a_fresh_or_missing_folder_needs_nothing(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # files other than last_checkpoint do not count
    assert _check_fresh_or_resume(tmp_path, resume=False) is None
    assert _check_fresh_or_resume(tmp_path / "absent", resume=False) is None


# --- _needs_surgery --------------------------------------------------------------------------

@pytest.fixture
def base_checkpoint(tmp_path):
    """A checkpoint whose classifier has 7 rows: 6 classes + background."""
    path = tmp_path / "base.ckpt"
    save_checkpoint([{"name": CLS_WEIGHT, "data": Tensor(np.zeros((7, 16), np.float32))}], str(path))
    return str(path)


def test_needs_surgery_by_method_and_classifier_rows(base_checkpoint):
    assert _needs_surgery("none", base_checkpoint, 9) is False
    assert _needs_surgery("none", "never/read.ckpt", 9) is False  # the file is not even read
    assert _needs_surgery("remove", base_checkpoint, 6) is True  # always applied
    assert _needs_surgery("randinit", base_checkpoint, 9) is True  # 7 rows, 10 needed
    assert _needs_surgery("randinit", base_checkpoint, 6) is False  # already a surgery output


def test_randinit_on_a_checkpoint_without_a_classifier_needs_no_surgery(tmp_path):
    path = tmp_path / "backbone.ckpt"
    save_checkpoint([{"name": "backbone.stem.conv1.weight", "data": Tensor(np.zeros((4, 3, 1, 1), np.float32))}],
                    str(path))
    assert _needs_surgery("randinit", str(path), 9) is False


# --- load_initial_weights --------------------------------------------------------------------

def test_missing_imagenet_weights_are_refused_with_the_convert_advice(tmp_path):
    missing = tmp_path / "R-18.ckpt"
    cfg = toy_cfg(f"model.weights={missing}")
    spec = SimpleNamespace(num_classes=6)
    with pytest.raises(InputError) as error:
        load_initial_weights(None, cfg, spec)  # refused before the model is touched
    message = one_line(error)
    assert message.startswith(f"{missing}:")
    assert "tools/convert.py" in message and "model.weights=''" in message


def test_no_weights_at_all_leaves_the_model_alone():
    assert load_initial_weights(None, toy_cfg("model.weights="), SimpleNamespace(num_classes=6)) is None


# --- _write_final_metrics --------------------------------------------------------------------

def test_metrics_json_holds_the_evaluation_at_max_iter(tmp_path):
    evaluations = [(6, {"AP": 1.0}), (12, {"AP": 2.5, "per_class": {"cat": 3.0}})]
    _write_final_metrics(evaluations, tmp_path, 12)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"AP": 2.5, "per_class": {"cat": 3.0}}


@pytest.mark.parametrize("evaluations", [[], [(6, {"AP": 1.0})], [(6, {"AP": 1.0}), (11, {"AP": 2.0})]])
def test_no_metrics_json_without_an_evaluation_at_max_iter(tmp_path, evaluations):
    _write_final_metrics(evaluations, tmp_path, 12)
    assert not (tmp_path / "metrics.json").exists()
