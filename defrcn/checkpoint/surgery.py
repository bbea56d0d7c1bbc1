"""Checkpoint surgery: turn a base-training checkpoint into the start of a fine-tune run.

DeFRCN's `tools/model_surgery.py`, on parameter dicts:

- `randinit` (gFSOD, the "tfa" setting): the box predictor is grown from the C_base base
  classes to the T target classes. Every base class keeps its classifier row and its 4 box
  rows, moved to the index of the same class NAME in the target order (COCO's novel classes
  interleave with the base ones in the 80-class ascending-id order; VOC's come last); the
  background row (the LAST classifier row) is copied; every new row, classifier and box
  alike, is drawn from N(0, 0.01) and every new bias is 0.
- `remove` (FSOD, the "fsod" setting): the four predictor entries are dropped (a checkpoint
  that has none passes as it is); the fine-tune model keeps its own freshly initialised predictor.

Both drop the training state (names starting with `io.STATE_PREFIXES`: optimizer slots,
iteration, RNG) and reset the detector's `sample_step` counter to 0; every other entry
(backbone, RPN, GDL affines, res5) is carried over unchanged.
"""
import logging


import numpy as np

from mindspore import Parameter, Tensor

from defrcn.checkpoint import io
from defrcn.errors import InputError
from defrcn.modeling.param_names import BOX_BIAS, BOX_WEIGHT, CLS_BIAS, CLS_WEIGHT, PREDICTOR_KEYS, SAMPLE_STEP

logger = logging.getLogger(__name__)

__all__ = ["METHODS", "CLS_WEIGHT", "CLS_BIAS", "BOX_WEIGHT", "BOX_BIAS", "PREDICTOR_KEYS",
           "surgery", "apply_surgery_to_model", "surgery_classes", "to_save_list"]

METHODS = ("randinit", "remove")
NEW_ROW_STD = 0.01  # model_surgery.py: new cls and box rows ~ N(0, 0.01), new biases 0


def _as_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    return value.asnumpy()


def _like(template, array, name):
    """`array` in the container type of `template` (numpy stays numpy, else a Parameter)."""
    if isinstance(template, np.ndarray):
        return array
    return Parameter(Tensor(array), name=name, requires_grad=getattr(template, "requires_grad", True))


def _check_names(names, what, source):
    names = list(names)
    if not names:
        raise InputError(f"surgery: no {what} class names given", path=source)
    seen = set()
    for name in names:
        if name in seen:
            raise InputError(f"surgery: {what} class '{name}' is listed twice", path=source)
        seen.add(name)
    return names


def _predictor(params, num_base, source):
    """The four predictor arrays, checked against the base class count."""
    absent = [key for key in PREDICTOR_KEYS if key not in params]
    if absent:
        raise InputError(f"not a detector checkpoint: no '{absent[0]}' (box predictor)", path=source)
    cls_w, cls_b, box_w, box_b = (_as_numpy(params[key]) for key in PREDICTOR_KEYS)
    if cls_w.ndim != 2 or box_w.ndim != 2 or cls_w.shape[1] != box_w.shape[1]:
        raise InputError(f"box predictor weights have shapes {cls_w.shape} and {box_w.shape}; expected "
                         f"(C+1, D) and (4C, D)", path=source)
    expected = {CLS_WEIGHT: num_base + 1, CLS_BIAS: num_base + 1, BOX_WEIGHT: 4 * num_base, BOX_BIAS: 4 * num_base}
    for key, array in zip(PREDICTOR_KEYS, (cls_w, cls_b, box_w, box_b)):
        if array.shape[0] != expected[key]:
            found = array.shape[0] - 1 if key.startswith("roi_heads.box_predictor.cls") else array.shape[0] / 4
            raise InputError(f"'{key}' has {array.shape[0]} rows ({found:g} classes) but {num_base} base "
                             f"classes were given (expected {expected[key]} rows)", path=source)
    return cls_w, cls_b, box_w, box_b


def _grow_predictor(arrays, base_names, target_names, seed, source):
    """randinit: (cls_w, cls_b, box_w, box_b) of T target classes from the base ones."""
    cls_w, cls_b, box_w, box_b = arrays
    missing = [name for name in base_names if name not in target_names]
    if missing:
        raise InputError(f"surgery randinit: base class '{missing[0]}' is not among the target classes "
                         f"({len(target_names)}: {', '.join(target_names)})"[:300], path=source)
    num_target, dim = len(target_names), cls_w.shape[1]
    rng = np.random.default_rng(seed)
    new_cls_w = rng.normal(0.0, NEW_ROW_STD, size=(num_target + 1, dim)).astype(cls_w.dtype)
    new_box_w = rng.normal(0.0, NEW_ROW_STD, size=(4 * num_target, dim)).astype(box_w.dtype)
    new_cls_b = np.zeros((num_target + 1,), dtype=cls_b.dtype)
    new_box_b = np.zeros((4 * num_target,), dtype=box_b.dtype)
    position = {name: index for index, name in enumerate(target_names)}
    for src, name in enumerate(base_names):
        dst = position[name]
        new_cls_w[dst], new_cls_b[dst] = cls_w[src], cls_b[src]
        new_box_w[4 * dst:4 * dst + 4] = box_w[4 * src:4 * src + 4]
        new_box_b[4 * dst:4 * dst + 4] = box_b[4 * src:4 * src + 4]
    new_cls_w[-1], new_cls_b[-1] = cls_w[-1], cls_b[-1]  # background: last row in both orders
    return new_cls_w, new_cls_b, new_box_w, new_box_b


def surgery(base_params, *, method, base_class_names, target_class_names=None, seed=0, source=None):
    """A fine-tune start dict from a base checkpoint dict (the input is not modified).

    Args:
        base_params: {name: np.ndarray | ms.Parameter | Tensor | str}, e.g. `io.load_checkpoint`'s result.
        method: "randinit" (grow the predictor to `target_class_names`) or "remove" (drop it).
        base_class_names: the base model's classes in its contiguous-id order (C_base names).
        target_class_names: the fine-tune model's classes in its contiguous-id order
            (randinit: every base class must be among them; remove: only checked for duplicates).
        seed: seed of the N(0, 0.01) draw of the new rows (numpy default_rng).
        source: the checkpoint's path, named in error messages.
    Returns:
        {name: value}: every network entry of base_params except the training state
        (`io.STATE_PREFIXES`), `sample_step` = 0, and the predictor grown (randinit, new entries
        of the input's container type, float dtype kept) or absent (remove).
    Raises:
        InputError (one line naming `source`) for an unknown method, duplicate or missing class
        names, a missing predictor or predictor shapes that disagree with the base class count.
    """
    source = source or "base checkpoint"
    if method not in METHODS:
        raise InputError(f"surgery: unknown method '{method}' (one of {', '.join(METHODS)})", path=source)
    base_names = _check_names(base_class_names, "base", source)
    target_names = _check_names(target_class_names, "target", source) \
        if method == "randinit" or target_class_names else []
    # remove: a checkpoint without a predictor (the original's model_reset_remove.pth, converted)
    # has nothing to drop.
    has_predictor = method == "randinit" or any(key in base_params for key in PREDICTOR_KEYS)
    arrays = _predictor(base_params, len(base_names), source) if has_predictor else None

    result = {}
    for name, value in base_params.items():
        if name.startswith(io.STATE_PREFIXES) or name in PREDICTOR_KEYS:
            continue
        if name == SAMPLE_STEP:
            value = _like(value, np.zeros_like(_as_numpy(value)), name)
        result[name] = value
    if method == "randinit":
        grown = _grow_predictor(arrays, base_names, target_names, seed, source)
        for key, array in zip(PREDICTOR_KEYS, grown):
            result[key] = _like(base_params[key], array, key)
    return result


def surgery_classes(spec):
    """(base class names, target class names) of a fine-tune `DataSpec`, each in the order its
    model's predictor uses: base = the base run's classes; target = all classes ("tfa") or
    the novel ones ("fsod"). InputError for a base-training spec."""
    if spec.setting not in ("fsod", "tfa"):
        raise InputError(f"data.setting: surgery needs a fine-tune recipe (setting 'fsod' or 'tfa'), "
                         f"got '{spec.setting}'")
    return list(spec.base_classes), list(spec.model_classes)


def _model_predictor_check(model, method, num_target, source):
    """InputError unless the model's predictor has the target class count."""
    shapes = {param.name: tuple(param.shape) for param in model.get_parameters()}
    if CLS_WEIGHT not in shapes:
        raise InputError("surgery: the model has no box predictor "
                         f"('{CLS_WEIGHT}')", path=source)
    rows = shapes[CLS_WEIGHT][0]
    if num_target and rows != num_target + 1:
        raise InputError(f"surgery {method}: the model's predictor has {rows - 1} classes but "
                         f"{num_target} target classes were given", path=source)


def apply_surgery_to_model(model, base_checkpoint_path, *, method, base_class_names, target_class_names,
                           seed=0):
    """Load `base_checkpoint_path`, run `surgery` and load the result into `model` (a DeFRCN Cell
    built for the target classes; with "remove" its own predictor init is kept).

    Returns:
        `io.LoadReport(missing, unexpected, shape_mismatch)` (with "remove", `missing` lists the
        four predictor entries).
    Raises:
        InputError (one line naming the checkpoint) for a bad checkpoint, bad class lists, or a
        model whose predictor does not have len(target_class_names) classes.
    """
    source = str(base_checkpoint_path)
    target = list(target_class_names or [])
    _model_predictor_check(model, method, len(target), source)
    params = io.load_checkpoint(source)
    result = surgery(params, method=method, base_class_names=base_class_names,
                     target_class_names=target, seed=seed, source=source)
    from defrcn.checkpoint.loader import load_weights

    # partial: `remove` leaves the predictor to the model; other gaps are reported below
    missing, unexpected, shape_mismatch = load_weights(model, source, params=result, partial=True)
    expected_missing = set(PREDICTOR_KEYS) if method == "remove" else set()
    other_missing = [name for name in missing if name not in expected_missing]
    if other_missing or unexpected:
        logger.warning("%s: after surgery %d model parameters were not in the checkpoint (e.g. %s), "
                       "%d checkpoint entries not in the model (e.g. %s)", source, len(other_missing),
                       other_missing[:2], len(unexpected), unexpected[:2])
    return io.LoadReport(missing, unexpected, shape_mismatch)


def to_save_list(params):
    """{name: value} -> the list `io.save_checkpoint` takes ([{"name", "data": Tensor|Parameter}])."""
    entries = []
    for name, value in params.items():
        if isinstance(value, str):
            continue
        data = Tensor(value) if isinstance(value, np.ndarray) else value
        entries.append({"name": name, "data": data})
    return entries

