"""Settings derived from data.benchmark / setting / voc_split / shots follow an override, or
the override is refused in one line."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from defrcn.config.recipe import load_recipe
from defrcn.data.classes import voc_split_classes
from defrcn.errors import InputError

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"


def _cfg(recipe, *overrides):
    return load_recipe(RECIPES / recipe, list(overrides)).cfg


def test_voc_split_override_derives_classes_weights_and_output():
    cfg = _cfg("voc_split1_fsod_3shot.py", "data.voc_split=2")
    base, novel, _ = voc_split_classes(2)
    assert (cfg.data.base_classes, cfg.data.novel_classes) == (list(base), list(novel))
    assert cfg.model.base_weights == "output/voc_split2_base/model_reset_remove.ckpt"
    assert cfg.output_dir == "output/voc_split2_fsod_3shot" and cfg.model.num_classes == 5
    assert _cfg("voc_split2_fsod_3shot.py").to_dict() == {**cfg.to_dict(), "recipe": str(
        (RECIPES / "voc_split2_fsod_3shot.py").resolve())}  # the same as the split-2 recipe


def test_setting_override_between_fine_tune_settings():
    cfg = _cfg("voc_split1_fsod_3shot.py", "data.setting=tfa")
    assert (cfg.model.surgery, cfg.model.num_classes) == ("randinit", 20)
    assert cfg.model.base_weights == "output/voc_split1_base/model_reset_surgery.ckpt"
    assert cfg.output_dir == "output/voc_split1_tfa_3shot"


def test_explicit_settings_are_kept():
    cfg = _cfg("voc_split1_fsod_3shot.py", "data.voc_split=2", "model.base_weights=mine.ckpt",
               "output_dir=elsewhere")
    assert (cfg.model.base_weights, cfg.output_dir) == ("mine.ckpt", "elsewhere")
    assert _cfg("toy_2shot.py", "data.setting=fsod", "model.num_classes=0").model.num_classes == 0


@pytest.mark.parametrize("recipe, overrides, message", [
    ("voc_split1_fsod_3shot.py", ["data.shots=10"], "data.shots: 3 -> 10: solver.max_iter and solver.steps"),
    ("voc_split1_fsod_3shot.py", ["data.setting=base"], "data.setting: fsod -> base: base training"),
    ("coco_tfa_10shot.py", ["data.benchmark=voc"], "data.benchmark: coco -> voc: .* recipes/voc_\\*.py"),
    ("coco_base.py", ["data.voc_split=2"], "data.voc_split: only VOC recipes have class splits"),
])
def test_changes_no_setting_can_follow_are_refused(recipe, overrides, message):
    with pytest.raises(InputError, match=message):
        _cfg(recipe, *overrides)


def test_shots_with_a_schedule_of_their_own_are_accepted():
    cfg = _cfg("voc_split1_fsod_3shot.py", "data.shots=10", "solver.max_iter=10", "solver.steps=[8]")
    assert cfg.data.shots == 10 and cfg.solver.max_iter == 10


def test_recipe_without_rederive_refuses_source_changes(tmp_path):
    recipe = tmp_path / "mine.py"
    recipe.write_text("from defrcn.recipes.common.fewshot import callbacks, dataset, fewshot_cfg, model, optimizer\n"
                      "cfg = fewshot_cfg('voc', 'fsod', shots=3, voc_split=1)\n"
                      "cfg.solver.max_iter, cfg.solver.steps = 10, [8]\n")
    assert load_recipe(recipe, ["data.split_seed=3"]).cfg.data.split_seed == 3
    with pytest.raises(InputError, match="data.voc_split: the recipe derives other settings from it"):
        load_recipe(recipe, ["data.voc_split=2"])


def _train(*args, cwd):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_train_tool_runs_split_two_with_split_two_data_or_refuses(tmp_path):
    (tmp_path / "data" / "vocsplit").mkdir(parents=True)
    out = tmp_path / "out"
    result = _train(str(RECIPES / "voc_split1_fsod_3shot.py"), "--set", "data.voc_split=2",
                    "--set", f"data.root={tmp_path / 'data'}", "--output-dir", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "box_3shot_aeroplane_train.txt" in lines[0]  # split 2's first novel class
    assert not out.exists()
    refused = _train(str(RECIPES / "toy_3shot.py"), "--set", "data.shots=10", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip() == ("error: data.shots: 3 -> 10: solver.max_iter and solver.steps are the "
                                      "schedule for 3 shots; run the 10-shot recipe, or set solver.max_iter "
                                      "and solver.steps too")
