"""Load a recipe (a Python file, or the `config.json` of an earlier run) and apply overrides.

A recipe module exposes `cfg` (a `Config` of plain values) and four builders:
`model(cfg)`, `dataset(cfg, split)`, `optimizer(cfg, model, steps)`, `callbacks(cfg, ctx)`
(the README's "Recipes"). Every load executes the file as a new module, so an edit to one
loaded `cfg` never shows in the next load (shared parts hand out new objects per call).

    recipe = load_recipe("recipes/toy_base.py", ["solver.max_iter=50"])
    net = recipe.model(recipe.cfg)

`config.json` (written by `save_config`) holds the resolved cfg and, under `recipe`, the
absolute path of the recipe file; the builders are taken from that file, or from the
shipped recipe of the same name (`defrcn.recipes.<name>`) when the path has gone.
"""
import importlib.util
import itertools
import logging
import json
import os
import sys
import traceback
from pathlib import Path

from defrcn.config.config import Config, apply_overrides
from defrcn.errors import InputError
from defrcn.utils.atomic import write_json_atomic

__all__ = ["Recipe", "load_recipe", "save_config", "shipped_recipe", "REQUIRED_KEYS", "FINETUNE_KEYS"]

# Keys every recipe has; users and scripts rely on these names.
REQUIRED_KEYS = (
    "seed", "output_dir", "data.root", "data.base_classes", "data.novel_classes",
    "data.shots", "data.split_seed", "model.depth", "model.num_classes",
    "solver.ims_per_batch", "solver.base_lr", "solver.max_iter", "solver.steps",
    "solver.warmup_iters", "solver.checkpoint_period", "test.eval_period",
    "test.pcb.enable", "test.pcb.alpha",
)
# Also required in fine-tune recipes (data.setting other than "base").
FINETUNE_KEYS = ("model.base_weights", "model.surgery")
BUILDERS = ("model", "dataset", "optimizer", "callbacks")
# Settings other settings are derived from; a change by override goes through the recipe's
# optional `rederive(cfg, before=, overridden=)`, which re-derives or refuses.
DERIVING_KEYS = ("data.benchmark", "data.setting", "data.voc_split", "data.shots")
# Allowed values of the string keys with a closed set of choices (checked after --set).
CHOICES = {
    "data.benchmark": ("coco", "voc", "custom", "toy"),
    "data.setting": ("base", "fsod", "tfa"),
    "input.format": ("msra", "torchvision"),
    "model.norm": ("frozen_bn", "bn"),
    "model.res5_conv": ("auto", "direct", "winograd"),
    "model.conv_backward": ("auto", "stock", "lean"),
    "model.frozen_bn_impl": ("auto", "kernel", "in_conv"),
    "model.pooler_impl": ("matmul", "kernel"),
    "model.surgery": ("randinit", "remove", "none"),
    "solver.optimizer": ("sgd", "adamw"),
    "test.kernel_fusion": ("auto", "on", "off"),
    "test.pcb.model": ("resnet101", "self"),
}
_load_counter = itertools.count()


class Recipe:
    """A loaded recipe: `.cfg` (overrides applied), `.name`, `.path` and the four builders."""

    def __init__(self, name, path, cfg, module):
        self.name = name
        self.path = path
        self.cfg = cfg
        self.module = module

    def model(self, cfg=None, **kwargs):
        """The detector Cell for cfg (default: this recipe's cfg); kwargs e.g. rank=."""
        return self.module.model(self.cfg if cfg is None else cfg, **kwargs)

    def dataset(self, cfg=None, split="train", **kwargs):
        """The data set of `split` ("train" or "test") for cfg; kwargs: sharding, start_iter."""
        return self.module.dataset(self.cfg if cfg is None else cfg, split, **kwargs)

    def optimizer(self, cfg, model, steps=None):
        """The optimizer over model's trainable parameters; steps: see the recipe's builder."""
        return self.module.optimizer(self.cfg if cfg is None else cfg, model, steps)

    def callbacks(self, cfg, ctx):
        """The ordered list of training callbacks."""
        return self.module.callbacks(self.cfg if cfg is None else cfg, ctx)

    def __repr__(self):
        return f"Recipe({self.name!r}, path={str(self.path)!r})"


def load_recipe(path, overrides=()):
    """Load a recipe `.py` file or a run's `config.json`, apply `key=value` overrides.

    Bad input (missing file, syntax error, a recipe raising at import, missing `cfg`,
    builders or required keys, an unknown or mistyped override) raises `InputError`
    with a one-line message naming the file or key.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a recipe file" if path.is_dir() else "no such recipe file"
        raise InputError(what, path=path)
    if path.suffix == ".json":
        cfg, module, name = _from_config_json(path)
    elif path.suffix == ".py":
        module = _exec_recipe(path)
        name = path.stem
        cfg = _recipe_cfg(module, path)
        cfg["recipe"] = str(path.resolve())
        if not cfg.get("output_dir"):
            cfg["output_dir"] = f"output/{name}"
    else:
        raise InputError("expected a recipe .py file or a run's config.json", path=path)
    _check_builders(module, path)
    _check_required(cfg, path)
    before = cfg.copy()
    overrides = list(overrides or ())
    apply_overrides(cfg, overrides)
    _rederive(module, cfg, before, [item.split("=", 1)[0].strip() for item in overrides])
    _check_values(cfg)
    return Recipe(name, path, cfg, module)


def _rederive(module, cfg, before, overridden):
    """Let the recipe re-derive what depends on an overridden source key (DERIVING_KEYS); a
    recipe without a `rederive` function refuses such a change in one line."""
    changed = [key for key in DERIVING_KEYS if _get(before, key) != _get(cfg, key)]
    if not changed:
        return
    hook = getattr(module, "rederive", None)
    if not callable(hook):
        key = changed[0]
        raise InputError(f"{key}: the recipe derives other settings from it and defines no `rederive` to "
                         f"follow a change; use a recipe written for {key}={_get(cfg, key)!r}")
    derived = hook(cfg, before=before, overridden=set(overridden))
    if derived:
        logging.getLogger(__name__).info("%s changed: re-derived %s", ", ".join(changed), ", ".join(derived))


def _get(cfg, key):
    try:
        return cfg.get_path(key)
    except KeyError:
        return None


def save_config(cfg, output_dir, recipe_path=None):
    """Write cfg as `output_dir/config.json` atomically (temp file + rename); return its path.

    `recipe_path` (a `.py` file) is recorded under `recipe` so the file can be re-run;
    when it is None or a `.json`, the cfg's own `recipe` entry is kept.
    """
    data = cfg.to_dict() if isinstance(cfg, Config) else Config(cfg).to_dict()
    if recipe_path is not None and str(recipe_path).endswith(".py"):
        data["recipe"] = str(Path(recipe_path).resolve())
    return Path(write_json_atomic(str(Path(output_dir) / "config.json"), data))


def _exec_recipe(path):
    """Execute the recipe file as a new module (a fresh one on every call)."""
    module_name = f"_defrcn_recipe_{next(_load_counter)}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise InputError("cannot be loaded as a Python module", path=path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        where = f"{e.filename or path}:{e.lineno}" if e.lineno else str(e.filename or path)
        raise InputError(f"{where}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - any failure at import is a bad recipe
        sys.modules.pop(module_name, None)
        line = _line_in(e, path)
        where = f"{path}:{line}" if line else str(path)
        raise InputError(f"{where}: recipe raised {type(e).__name__} while loading: {_one_line(e)}") from None
    return module


def _line_in(exc, path):
    """The last line of `path` in the exception's traceback (None when absent)."""
    target = os.path.realpath(path)
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if os.path.realpath(frame.filename) == target:
            line = frame.lineno
    return line


def _one_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _recipe_cfg(module, path):
    if not hasattr(module, "cfg"):
        raise InputError("recipe defines no `cfg`", path=path)
    cfg = module.cfg
    if not isinstance(cfg, dict):
        raise InputError(f"recipe's `cfg` must be a Config, got {type(cfg).__name__}", path=path)
    _check_plain(cfg, path, "cfg")
    return Config(cfg).copy()  # a deep copy: the module's object is never handed out


def _check_plain(value, path, where):
    """Raise InputError naming the first value that is not str/int/float/bool/None/list/dict."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InputError(f"{where} has a non-string key {key!r}", path=path)
            _check_plain(item, path, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, path, f"{where}[{index}]")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise InputError(f"{where} is a {type(value).__name__}; cfg holds plain values only", path=path)


def _check_builders(module, path):
    missing = [name for name in BUILDERS if not callable(getattr(module, name, None))]
    if missing:
        raise InputError(f"recipe lacks the builder(s) {', '.join(missing)}", path=path)


def _check_required(cfg, path):
    keys = list(REQUIRED_KEYS)
    setting = cfg.get("data", {}).get("setting", "base") if isinstance(cfg.get("data"), dict) else "base"
    if setting != "base":
        keys += FINETUNE_KEYS
    missing = []
    for key in keys:
        try:
            cfg.get_path(key)
        except KeyError:
            missing.append(key)
    if missing:
        raise InputError(f"cfg lacks required key(s) {', '.join(missing)}", path=path)


def _check_values(cfg):
    """Closed choices and a positive schedule, checked after the overrides."""
    for key, allowed in CHOICES.items():
        try:
            value = cfg.get_path(key)
        except KeyError:
            continue
        if value not in allowed:
            raise InputError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    if not isinstance(cfg.solver.max_iter, int) or cfg.solver.max_iter < 1:
        raise InputError(f"solver.max_iter: must be a positive int, got {cfg.solver.max_iter!r}")


def _from_config_json(path):
    """cfg from a run's config.json; builders from the recipe it names."""
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON (line {e.lineno})", path=path) from None
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object of settings", path=path)
    ref = data.get("recipe")
    if not isinstance(ref, str) or not ref:
        raise InputError("has no `recipe` entry naming the recipe file", path=path)
    module_path = _resolve_recipe_ref(ref, path)
    module = _exec_recipe(module_path)
    return Config(data), module, module_path.stem


def shipped_recipe(name):
    """The file of a recipe that ships with the package (`toy_base`, `coco_tfa_10shot`...), found
    without importing it; None when there is no such recipe."""
    try:
        spec = importlib.util.find_spec(f"defrcn.recipes.{name}")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    return Path(spec.origin)


def _resolve_recipe_ref(ref, json_path):
    """The recipe file named by a config.json: the path itself, else the shipped recipe of that name."""
    as_path = Path(ref)
    if ref.endswith(".py") and as_path.is_file():
        return as_path
    name = as_path.stem if ref.endswith(".py") else ref
    if name.startswith("defrcn.recipes."):
        name = name[len("defrcn.recipes."):]
    found = shipped_recipe(name) if name and "." not in name else None
    if found is None:
        raise InputError(f"the recipe it names ({ref}) does not exist", path=json_path)
    return found
