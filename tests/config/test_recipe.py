"""load_recipe: by path from any cwd, fresh modules, config.json re-runs, one-line errors."""
import json
import os
import textwrap

import pytest

import defrcn
from defrcn.config.recipe import load_recipe, save_config
from defrcn.errors import InputError

RECIPES = os.path.join(os.path.dirname(os.path.dirname(defrcn.__file__)), "recipes")

MINIMAL = """\
from defrcn.config.config import Config

cfg = Config(
    seed=0, output_dir="",
    data=dict(root="d", base_classes=["a"], novel_classes=[], shots=0, split_seed=0, setting="base"),
    model=dict(depth=18, num_classes=1),
    solver=dict(ims_per_batch=2, base_lr=0.1, max_iter=10, steps=[8], warmup_iters=0,
                checkpoint_period=5),
    test=dict(eval_period=0, pcb=dict(enable=False, alpha=0.5)),
)

def model(cfg):
    return "model"

def dataset(cfg, split):
    return split

def optimizer(cfg, model, steps):
    return steps

def callbacks(cfg, ctx):
    return []
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def one_line_error(path, overrides=()):
    with pytest.raises(InputError) as info:
        load_recipe(path, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_from_another_cwd(tmp_path, monkeypatch):
    recipe_path = os.path.join(RECIPES, "coco_tfa_10shot.py")
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(recipe_path, ["seed=4"])
    assert recipe.name == "coco_tfa_10shot"
    assert recipe.cfg.seed == 4
    assert recipe.cfg.output_dir == "output/coco_tfa_10shot"
    assert recipe.cfg.recipe == os.path.realpath(recipe_path)


def test_relative_path_and_builders(tmp_path, monkeypatch):
    write(tmp_path, "mine.py", MINIMAL)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe("mine.py")
    assert recipe.model(recipe.cfg) == "model"
    assert recipe.dataset(recipe.cfg, "test") == "test"
    assert recipe.optimizer(recipe.cfg, None, {"max_iter": 3}) == {"max_iter": 3}
    assert recipe.callbacks(recipe.cfg, None) == []


def test_fresh_module_per_load(tmp_path):
    path = write(tmp_path, "mine.py", MINIMAL)
    first = load_recipe(path)
    first.cfg.solver.base_lr = 99.0
    first.cfg.data.base_classes.append("leak")
    first.module.cfg.seed = 77  # even the module-level object of one load stays private
    second = load_recipe(path)
    assert second.cfg.solver.base_lr == 0.1
    assert second.cfg.data.base_classes == ["a"]
    assert second.cfg.seed == 0
    assert second.module is not first.module


def test_shared_parts_hand_out_new_objects():
    a = load_recipe(os.path.join(RECIPES, "voc_split1_tfa_1shot.py"))
    a.cfg.model.rpn.anchor_sizes.append(1024)
    b = load_recipe(os.path.join(RECIPES, "voc_split1_tfa_1shot.py"))
    assert b.cfg.model.rpn.anchor_sizes == [32, 64, 128, 256, 512]


def test_missing_path(tmp_path):
    message = one_line_error(tmp_path / "nope.py")
    assert "nope.py" in message and "no such recipe file" in message


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.py", "cfg = 1\nx = = 1\n")
    message = one_line_error(path)
    assert f"{path}:2: syntax error" in message


def test_raise_at_import_names_file_line_and_exception(tmp_path):
    path = write(tmp_path, "raises.py", "import os\nraise KeyError('boom')\n")
    message = one_line_error(path)
    assert message.startswith(f"{path}:2:")
    assert "KeyError" in message and "boom" in message


def test_multiline_exception_message_is_one_line(tmp_path):
    path = write(tmp_path, "raises.py", "raise ValueError('first\\nsecond')\n")
    message = one_line_error(path)
    assert "first" in message and "second" not in message


def test_missing_cfg_and_builders(tmp_path):
    assert "defines no `cfg`" in one_line_error(write(tmp_path, "a.py", "x = 1\n"))
    no_builders = MINIMAL.split("def model")[0]
    message = one_line_error(write(tmp_path, "b.py", no_builders))
    assert "model, dataset, optimizer, callbacks" in message


def test_missing_required_keys(tmp_path):
    path = write(tmp_path, "c.py", MINIMAL.replace("seed=0, ", ""))
    message = one_line_error(path)
    assert "lacks required key(s) seed" in message


def test_finetune_requires_surgery_keys(tmp_path):
    path = write(tmp_path, "d.py", MINIMAL.replace('setting="base"', 'setting="tfa"'))
    message = one_line_error(path)
    assert "model.base_weights, model.surgery" in message


def test_non_plain_value_is_rejected(tmp_path):
    path = write(tmp_path, "e.py", MINIMAL + "cfg.model.fn = print\n")
    assert "cfg.model.fn is a builtin_function_or_method" in one_line_error(path)


def test_override_errors(tmp_path):
    path = write(tmp_path, "mine.py", MINIMAL)
    assert "did you mean solver.base_lr" in one_line_error(path, ["solver.baselr=1"])
    assert "expected an int" in one_line_error(path, ["solver.max_iter=ten"])
    assert "solver.max_iter: must be a positive int" in one_line_error(path, ["solver.max_iter=0"])


def test_choice_checked_after_overrides():
    message = one_line_error(os.path.join(RECIPES, "coco_tfa_1shot.py"), ["model.surgery=keep"])
    assert message.startswith("model.surgery: 'keep' is not one of randinit")


def test_not_a_recipe_file(tmp_path):
    path = write(tmp_path, "r.yaml", "a: 1\n")
    assert "expected a recipe .py file" in one_line_error(path)


def test_config_json_rerun(tmp_path):
    recipe = load_recipe(os.path.join(RECIPES, "toy_base.py"), ["solver.max_iter=7"])
    path = save_config(recipe.cfg, tmp_path / "run")
    again = load_recipe(path, ["seed=5"])
    assert again.name == "toy_base"
    assert again.cfg.solver.max_iter == 7 and again.cfg.seed == 5
    assert again.cfg.output_dir == "output/toy_base"
    assert callable(again.module.model)


def test_config_json_falls_back_to_shipped_recipe(tmp_path):
    recipe = load_recipe(os.path.join(RECIPES, "voc_split3_base.py"))
    data = recipe.cfg.to_dict()
    data["recipe"] = "/gone/elsewhere/voc_split3_base.py"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    again = load_recipe(path)
    assert again.module.__file__ == os.path.join(os.path.realpath(RECIPES), "voc_split3_base.py")


def test_config_json_errors(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{"seed": 0,\n "x": }')
    assert "not valid JSON (line 2)" in one_line_error(bad)
    bad.write_text(json.dumps({"seed": 0}))
    assert "no `recipe` entry" in one_line_error(bad)
    bad.write_text(json.dumps({"seed": 0, "recipe": "/gone/not_a_recipe_we_ship.py"}))
    assert "does not exist" in one_line_error(bad)
