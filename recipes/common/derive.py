"""Settings that other settings are derived from, kept consistent under `--set`.

A shipped recipe derives its class lists, class count, surgery method, base weights and
output folder from `data.benchmark`, `data.setting`, `data.voc_split` and `data.shots`
(`base_cfg`, `fewshot_cfg`). `rederive` runs after the overrides: what can be derived
again is (`--set data.voc_split=2` on a split-1 recipe trains split 2 with split 2's
classes and base weights), what cannot is refused in one line naming what to run instead.
Keys the user set explicitly are never touched.
"""
from pathlib import Path

from defrcn.errors import InputError

__all__ = ["rederive", "SURGERY_OF_SETTING", "SURGERY_FILE", "base_recipe_name", "base_weights_path"]

SURGERY_OF_SETTING = {"fsod": "remove", "tfa": "randinit"}  # DeFRCN's run_coco.sh / run_voc.sh
SURGERY_FILE = {"remove": "model_reset_remove.ckpt", "randinit": "model_reset_surgery.ckpt"}
SOURCE_KEYS = ("data.benchmark", "data.setting", "data.voc_split", "data.shots")


def base_recipe_name(benchmark, voc_split=0):
    """The recipe whose run a fine-tune recipe starts from (`voc_split2_base`, `coco_base`...)."""
    return f"voc_split{voc_split}_base" if benchmark == "voc" else f"{benchmark}_base"


def base_weights_path(benchmark, voc_split, surgery):
    """Where `tools/surgery.py` writes the base run's surgery output, named as the original's files."""
    return f"output/{base_recipe_name(benchmark, voc_split)}/{SURGERY_FILE[surgery]}"


def rederive(cfg, *, before, overridden):
    """Make cfg consistent after overrides changed a source key; returns the keys re-derived.

    before: cfg as the recipe wrote it; overridden: the keys given with `--set`.
    InputError for a change no recipe setting can follow (another benchmark, base training
    <-> fine-tuning, other shots without a schedule).
    """
    changed = {key: (before.get_path(key), cfg.get_path(key)) for key in SOURCE_KEYS
               if before.get_path(key) != cfg.get_path(key)}
    if not changed:
        return []
    recipe = Path(cfg.get("recipe") or "recipe").stem
    if "data.benchmark" in changed:
        old, new = changed["data.benchmark"]
        raise InputError(f"data.benchmark: {old} -> {new}: a recipe is written for one benchmark (classes, "
                         f"input sizes, schedule); run a recipes/{new}_*.py recipe instead")
    if "data.setting" in changed and "base" in changed["data.setting"]:
        old, new = changed["data.setting"]
        raise InputError(f"data.setting: {old} -> {new}: base training and fine-tuning differ in weights, "
                         f"frozen parts, learning rate and schedule; run a recipe written for '{new}' instead")
    if "data.shots" in changed and not {"solver.max_iter", "solver.steps"} <= set(overridden):
        old, new = changed["data.shots"]
        raise InputError(f"data.shots: {old} -> {new}: solver.max_iter and solver.steps are the schedule for "
                         f"{old} shots; run the {new}-shot recipe, or set solver.max_iter and solver.steps too")
    if "data.voc_split" in changed and cfg.data.benchmark != "voc":
        raise InputError(f"data.voc_split: only VOC recipes have class splits ({recipe} is "
                         f"{cfg.data.benchmark})")
    derived = []

    def derive(key, value):
        if key not in overridden and cfg.get_path(key) != value:
            cfg.set_path(key, value)
            derived.append(key)

    data = cfg.data
    if "data.voc_split" in changed:
        from defrcn.data.classes import voc_split_classes

        base, novel, _ = voc_split_classes(data.voc_split)
        derive("data.base_classes", list(base))
        derive("data.novel_classes", list(novel))
    if data.setting != "base":
        old_surgery = before.model.surgery
        derive("model.surgery", SURGERY_OF_SETTING[data.setting])
        if before.model.base_weights == base_weights_path(before.data.benchmark, before.data.voc_split,
                                                           old_surgery):
            derive("model.base_weights", base_weights_path(data.benchmark, data.voc_split, cfg.model.surgery))
    if before.model.num_classes:  # 0: counted from the data set
        counts = {"base": len(data.base_classes), "fsod": len(data.novel_classes),
                  "tfa": len(data.base_classes) + len(data.novel_classes)}
        derive("model.num_classes", counts[data.setting])
    if cfg.output_dir == f"output/{recipe}":
        derive("output_dir", f"output/{_renamed(recipe, changed)}")
    return derived


def _renamed(recipe, changed):
    """The name of the shipped recipe the changed settings describe (`voc_split1_fsod_3shot` ->
    `voc_split2_fsod_3shot` for data.voc_split 1 -> 2)."""
    name = recipe
    if "data.voc_split" in changed:
        old, new = changed["data.voc_split"]
        name = name.replace(f"split{old}", f"split{new}")
    if "data.setting" in changed:
        old, new = changed["data.setting"]
        name = name.replace(f"_{old}_", f"_{new}_")
    return name if name != recipe else f"{recipe}-" + "-".join(
        f"{key.split('.')[-1]}{new}" for key, (_, new) in sorted(changed.items()))
