"""Every shipped recipe loads, has the keys every recipe has and the original configs' numbers."""
import os
import re

import pytest

import defrcn
from defrcn.config.recipe import FINETUNE_KEYS, REQUIRED_KEYS, load_recipe

RECIPES = os.path.join(os.path.dirname(os.path.dirname(defrcn.__file__)), "recipes")
FILES = sorted(f for f in os.listdir(RECIPES) if f.endswith(".py") and f != "__init__.py")

# Fact sheet section 1.3: (steps, max_iter) per K; one LR drop at 0.8 x max_iter.
COCO_SCHEDULE = {
    "fsod": {1: (800, 1000), 2: (1200, 1500), 3: (1600, 2000), 5: (2000, 2500), 10: (2000, 2500), 30: (3200, 4000)},
    "tfa": {1: (2560, 3200), 2: (3200, 4000), 3: (3840, 4800), 5: (4800, 6000), 10: (4800, 6000),
            30: (9600, 12000)},
}
VOC_SCHEDULE = {
    "fsod": {1: (640, 800), 2: (960, 1200), 3: (1280, 1600), 5: (1600, 2000), 10: (3200, 4000)},
    "tfa": {1: (800, 1000), 2: (1200, 1500), 3: (1600, 2000), 5: (2000, 2500), 10: (3200, 4000)},
}


def expected_names():
    names = ["coco_base", "custom_base", "toy_base"]
    names += [f"coco_{s}_{k}shot" for s in ("fsod", "tfa") for k in (1, 2, 3, 5, 10, 30)]
    for n in (1, 2, 3):
        names += [f"voc_split{n}_base"]
        names += [f"voc_split{n}_{s}_{k}shot" for s in ("fsod", "tfa") for k in (1, 2, 3, 5, 10)]
    names += [f"{b}_{k}shot" for b in ("custom", "toy") for k in (1, 2, 3, 5, 10)]
    return sorted(names)


def test_every_design_recipe_is_shipped():
    assert sorted(f[:-3] for f in FILES) == expected_names()


@pytest.fixture(scope="module")
def loaded():
    return {f[:-3]: load_recipe(os.path.join(RECIPES, f)) for f in FILES}


@pytest.mark.parametrize("file_name", FILES)
def test_recipe_loads_with_required_keys(file_name, loaded):
    recipe = loaded[file_name[:-3]]
    cfg = recipe.cfg
    finetune = cfg.data.setting != "base"
    for key in REQUIRED_KEYS + (FINETUNE_KEYS if finetune else ()):
        cfg.get_path(key)  # KeyError fails the test
    assert cfg.output_dir == f"output/{recipe.name}"
    assert cfg.solver.max_iter >= 1 and cfg.solver.steps
    if finetune:
        assert cfg.data.shots >= 1
        assert cfg.solver.steps == [cfg.solver.max_iter * 4 // 5]  # one drop at 0.8 x max_iter
        assert cfg.solver.warmup_iters == 0 and cfg.test.pcb.enable
        assert cfg.model.freeze_res5 and cfg.model.cls_dropout == 0.8
        assert cfg.model.surgery == {"fsod": "remove", "tfa": "randinit"}[cfg.data.setting]
        assert cfg.model.base_weights.startswith(f"output/{cfg.data.benchmark}")
    else:
        assert cfg.data.shots == 0 and cfg.model.surgery == "none" and not cfg.test.pcb.enable
    assert cfg.model.gdl_scale_rpn == 0.0
    assert cfg.test.pcb.alpha == 0.5


@pytest.mark.parametrize("file_name", [f for f in FILES if re.match(r"(coco|voc_split\d)_(fsod|tfa)_", f)])
def test_finetune_numbers_match_fact_sheet(file_name, loaded):
    name = file_name[:-3]
    match = re.match(r"(coco|voc)(?:_split(\d))?_(fsod|tfa)_(\d+)shot$", name)
    benchmark, split, setting, shots = match.group(1), match.group(2), match.group(3), int(match.group(4))
    cfg = loaded[name].cfg
    table = COCO_SCHEDULE if benchmark == "coco" else VOC_SCHEDULE
    step, max_iter = table[setting][shots]
    assert (cfg.solver.max_iter, cfg.solver.steps) == (max_iter, [step])
    assert cfg.data.shots == shots and cfg.data.setting == setting
    assert cfg.solver.base_lr == 0.01 and cfg.solver.ims_per_batch == 16
    assert cfg.model.gdl_scale_roi == (0.01 if benchmark == "coco" else 0.001)
    classes = {("coco", "fsod"): 20, ("coco", "tfa"): 80, ("voc", "fsod"): 5, ("voc", "tfa"): 20}
    assert cfg.model.num_classes == classes[benchmark, setting]
    if benchmark == "voc":
        assert cfg.data.voc_split == int(split)
        assert cfg.model.base_weights.startswith(f"output/voc_split{split}_base/")


def test_spot_checks(loaded):
    coco = loaded["coco_tfa_10shot"].cfg
    assert (coco.solver.max_iter, coco.solver.steps) == (6000, [4800])
    assert coco.model.base_weights == "output/coco_base/model_reset_surgery.ckpt"
    voc = loaded["voc_split2_fsod_3shot"].cfg
    assert (voc.solver.max_iter, voc.solver.steps, voc.model.gdl_scale_roi) == (1600, [1280], 0.001)
    assert voc.data.novel_classes == ["aeroplane", "bottle", "cow", "horse", "sofa"]
    assert voc.model.base_weights == "output/voc_split2_base/model_reset_remove.ckpt"
    base = loaded["coco_base"].cfg
    assert (base.solver.max_iter, base.solver.steps, base.solver.warmup_iters) == (110000, [85000, 100000], 1000)
    assert base.model.num_classes == 60 and base.model.gdl_scale_roi == 0.75 and base.solver.base_lr == 0.02
    assert base.input.min_size_train == [640, 672, 704, 736, 768, 800] and base.model.freeze_at == 3
    assert (base.solver.weight_decay, base.solver.weight_decay_bias) == (5e-5, 1e-4)
    assert base.model.pooler_resolution == 7 and base.model.roi.batch_size_per_image == 512
    for n in (1, 2, 3):
        vb = loaded[f"voc_split{n}_base"].cfg
        assert (vb.solver.max_iter, vb.solver.steps, vb.solver.warmup_iters) == (15000, [10000, 13300], 100)
        assert vb.model.num_classes == 15 and len(vb.input.min_size_train) == 11


def test_toy_recipes_are_small(loaded):
    base = loaded["toy_base"].cfg
    assert base.data.benchmark == "toy" and base.data.root == "datasets/toy"
    assert base.model.depth == 18 and base.model.norm == "bn" and base.model.freeze_at == 0
    assert base.input.canvases == [[256, 256]] and base.solver.optimizer == "adamw"
    assert 32 <= base.model.roi.batch_size_per_image <= 64
    assert base.model.num_classes == len(base.data.base_classes) > 0 and base.data.novel_classes
    shot = loaded["toy_5shot"].cfg
    assert shot.model.num_classes == len(base.data.base_classes) + len(base.data.novel_classes)
    assert shot.model.base_weights == "output/toy_base/model_reset_surgery.ckpt"


def test_custom_recipes_take_classes_from_data(loaded):
    cfg = loaded["custom_3shot"].cfg
    assert cfg.data.novel_classes == [] and cfg.model.num_classes == 0 and cfg.data.setting == "tfa"
