"""`--set` overrides on Config and the config.json round trip."""
import json

import pytest

from defrcn.config.config import Config, apply_overrides
from defrcn.config.recipe import save_config
from defrcn.errors import InputError


def make_cfg():
    return Config(
        seed=0,
        output_dir="output/x",
        data=dict(root="datasets", novel_classes=[], shots=0, min_sizes=[640, 672]),
        input=dict(canvases=[[800, 1344], [1344, 800]], flip_prob=0.5),
        solver=dict(base_lr=0.02, max_iter=100, steps=[80], accumulate=False, weights=None),
    )


def test_int_float_bool_str_parse():
    cfg = apply_overrides(make_cfg(), ["seed=3", "solver.base_lr=0.005", "solver.accumulate=true",
                                       "data.root=/data/my set", "input.flip_prob=1"])
    assert cfg.seed == 3 and isinstance(cfg.seed, int)
    assert cfg.solver.base_lr == 0.005
    assert cfg.solver.accumulate is True
    assert cfg.data.root == "/data/my set"
    assert cfg.input.flip_prob == 1.0 and isinstance(cfg.input.flip_prob, float)


@pytest.mark.parametrize("text, expected", [("off", False), ("0", False), ("Yes", True)])
def test_bool_spellings(text, expected):
    cfg = apply_overrides(make_cfg(), [f"solver.accumulate={text}"])
    assert cfg.solver.accumulate is expected


def test_list_parse():
    cfg = apply_overrides(make_cfg(), ["solver.steps=50,70", "data.min_sizes=480", "data.novel_classes=cat, 7"])
    assert cfg.solver.steps == [50, 70]
    assert cfg.data.min_sizes == [480]
    assert cfg.data.novel_classes == ["cat", "7"]  # class names stay strings
    cfg = apply_overrides(cfg, ["solver.steps="])
    assert cfg.solver.steps == []


def test_list_of_lists_needs_json():
    cfg = apply_overrides(make_cfg(), ["input.canvases=[[256, 256]]"])
    assert cfg.input.canvases == [[256, 256]]
    with pytest.raises(InputError, match="JSON"):
        apply_overrides(make_cfg(), ["input.canvases=256,256"])
    with pytest.raises(InputError, match="expected items like"):
        apply_overrides(make_cfg(), ["input.canvases=[256, 256]"])


def test_unknown_key_names_closest():
    with pytest.raises(InputError) as info:
        apply_overrides(make_cfg(), ["solver.base_l=0.1"])
    message = str(info.value)
    assert "solver.base_l: unknown key" in message and "solver.base_lr" in message
    assert "\n" not in message


def test_unknown_key_without_neighbours():
    with pytest.raises(InputError, match="unknown key$"):
        apply_overrides(make_cfg(), ["zzzzzzzz=1"])


@pytest.mark.parametrize("item, word", [
    ("seed=three", "int"),
    ("solver.base_lr=fast", "float"),
    ("solver.accumulate=maybe", "bool"),
    ("solver.steps=10,x", "int"),
])
def test_wrong_type(item, word):
    with pytest.raises(InputError, match=word):
        apply_overrides(make_cfg(), [item])


def test_group_key_and_missing_equals():
    with pytest.raises(InputError, match="group of settings"):
        apply_overrides(make_cfg(), ["solver=1"])
    with pytest.raises(InputError, match="key=value"):
        apply_overrides(make_cfg(), ["seed"])


def test_none_value_is_guessed():
    cfg = apply_overrides(make_cfg(), ["solver.weights=3"])
    assert cfg.solver.weights == 3


def test_config_json_round_trip(tmp_path):
    cfg = apply_overrides(make_cfg(), ["solver.steps=5,7"])
    recipe = tmp_path / "r.py"
    recipe.write_text("")
    path = save_config(cfg, tmp_path / "run", recipe)
    data = json.loads(path.read_text())
    assert data["recipe"] == str(recipe.resolve())
    restored = Config(data)
    del restored["recipe"]
    assert restored.to_dict() == cfg.to_dict()
    assert restored.solver.steps == [5, 7]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name != "config.json"]  # no temp file left


def test_save_config_keeps_recipe_entry_for_json_source(tmp_path):
    cfg = make_cfg()
    cfg.recipe = "/somewhere/recipes/toy_base.py"
    path = save_config(cfg, tmp_path, tmp_path / "config.json")
    assert json.loads(path.read_text())["recipe"] == "/somewhere/recipes/toy_base.py"
