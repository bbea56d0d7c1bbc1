"""Whole DeFRCN detectors from other code bases onto this project's detector.

Two sources:

- `defrcn`: a checkpoint of the original er-muyue/DeFRCN (detectron2 v0.3): `model_final.pth`,
  `model_reset_surgery.pth`, `model_reset_remove.pth`, fine-tuned models; a `.pth` holding
  `{"model": state_dict, ...}` or a bare state dict, or a detectron2 `.pkl` of numpy arrays.
  Names (DeFRCN `defrcn/modeling/meta_arch/rcnn.py`, `roi_heads/roi_heads.py`,
  `roi_heads/fast_rcnn.py`; detectron2 `modeling/backbone/resnet.py`, `proposal_generator/rpn.py`):
  `backbone.stem.*`, `backbone.res{2,3,4}.*`, `roi_heads.res5.*` (the ResNet names that
  `convert.detectron2_to_detector_name` maps), `proposal_generator.rpn_head.{conv,objectness_logits,
  anchor_deltas}.*` -> `proposal_generator.head.*`, `affine_rpn.*` / `affine_rcnn.*` (1, C, 1, 1)
  (`gdl.py` AffineLayer) -> `rpn_branch.affine.*` / `roi_branch.affine.*` (C,), and
  `roi_heads.box_predictor.{cls_score,bbox_pred}.*` (same names; background is the LAST cls row,
  4 box rows per class).
- `port`: a `.ckpt` of the MindSpore model-zoo port (CSberlin/DeFRCN-mindspore, `src/defrcn/de_frcn.py`):
  `backbone.stem.{conv1,bn1}.*`, `backbone.layer{1,2,3}.*` with `conv_down_sample` / `bn_down_sample`
  (`src/defrcn/resnet.py`), res5 as the top-level `layer4.*`, `affine_rpn` / `affine_rcnn`
  (`src/defrcn/gdl.py`), `rpn_with_loss.rpn_convs_list.0.{rpn_conv,rpn_cls,rpn_reg}.*`
  (`src/defrcn/rpn.py`) and `rcnn.{cls_scores,reg_scores}.*` (`src/defrcn/rcnn.py`: DenseNoTranpose
  weights stored (D, out), background FIRST). Its anchors are ratio-major (`anchor_generator.py`,
  scale_major) where ours are size-major (`defrcn/modeling/anchors.py`), so the RPN output
  channels are permuted to keep each one on the anchor of the same size and ratio.

The predictor's rows are mapped BY CLASS NAME: the source's class list is stated
(`source_classes`) or inferred from its row count among the recipe's base / novel / all lists
(the original's orders are the ones `defrcn.data.classes` uses: DeFRCN `builtin_meta.py`), then
written in the order of the recipe's model; a base-class predictor converted for a fine-tune
recipe is written in the base order, ready for surgery (`defrcn.checkpoint.surgery`).
Everything else is checked against the recipe model's shapes; a bad file gives one InputError.
"""
import os
import re
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from defrcn.checkpoint.convert import (_fill_caffe2_statistics, detectron2_to_detector_name,
                                       read_detectron2_pickle, read_torch_state_dict)
from defrcn.errors import InputError
from defrcn.modeling.param_names import BOX_BIAS, BOX_WEIGHT, CLS_BIAS, CLS_WEIGHT, PREDICTOR_KEYS

__all__ = ["KINDS", "DetectorTarget", "DetectorConversion", "defrcn_to_detector_name", "port_to_detector_name",
           "read_defrcn_weights", "read_port_weights", "read_detector_weights", "convert_detector_weights",
           "convert_detector"]

KINDS = ("defrcn", "port")
AFFINES = ("rpn_branch.affine.weight", "rpn_branch.affine.bias", "roi_branch.affine.weight",
           "roi_branch.affine.bias")
RPN_OBJECTNESS = ("proposal_generator.head.objectness_logits.weight", "proposal_generator.head.objectness_logits.bias")
RPN_DELTAS = ("proposal_generator.head.anchor_deltas.weight", "proposal_generator.head.anchor_deltas.bias")
STEM_CONV = "backbone.conv1.weight"

_D2_RPN = re.compile(r"^proposal_generator\.rpn_head\.(conv|objectness_logits|anchor_deltas)\.(weight|bias)$")
_D2_AFFINE = re.compile(r"^affine_(rpn|rcnn)\.(weight|bias)$")
_PREDICTOR = re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$")
_BRANCH = {"rpn": "rpn_branch", "rcnn": "roi_branch"}
# Why a source entry is not converted (shown in the coverage summary).
_REASONS = (
    (re.compile(r"anchor_generator\.cell_anchors|base_anchors"), "anchors are rebuilt from model.rpn"),
    (re.compile(r"^pixel_(mean|std)$"), "input normalisation is input.format"),
    (re.compile(r"num_batches_tracked$"), "BN step counter"),
    (re.compile(r"^(moments|accum|stat|optimizer|scheduler)\.|^(learning_rate|global_step|momentum|iteration|"
                r"scale_sense|epoch_num|step_num|current_iterator_step|last_overflow_iterator_step)$"),
     "training state"),
)

# port name pieces (src/defrcn/resnet.py ResidualBlockUsing) -> ours (mindcv ResNet blocks)
_PORT_BLOCK = re.compile(r"^(?:backbone\.layer([123])|layer(4))\.(\d+)\."
                         r"(conv1|conv2|conv3|conv_down_sample|bn1|bn2|bn3|bn_down_sample)\."
                         r"(weight|gamma|beta|moving_mean|moving_variance)$")
_PORT_MODULE = {"conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "conv_down_sample": "down_sample.0",
                "bn1": "bn1", "bn2": "bn2", "bn3": "bn3", "bn_down_sample": "down_sample.1"}
_PORT_STEM = re.compile(r"^backbone\.stem\.(conv1\.weight|bn1\.(?:gamma|beta|moving_mean|moving_variance))$")
_PORT_RPN = re.compile(r"^rpn_with_loss\.rpn_convs_list\.0\.(rpn_conv|rpn_cls|rpn_reg)\.(weight|bias)$")
_PORT_RPN_LAYER = {"rpn_conv": "conv", "rpn_cls": "objectness_logits", "rpn_reg": "anchor_deltas"}
_PORT_PREDICTOR = re.compile(r"^rcnn\.(cls_scores|reg_scores)\.(weight|bias)$")
_PORT_PREDICTOR_LAYER = {"cls_scores": "cls_score", "reg_scores": "bbox_pred"}


class DetectorTarget(NamedTuple):
    """What the converted checkpoint must fit (resolved from a recipe by tools/convert.py).

    shapes: {name: shape} of the recipe model's parameters; class_names: its predictor's class
    order; base/novel/all_classes: the benchmark's lists (the source's candidates);
    anchor_sizes, anchor_ratios: counts of model.rpn.anchor_sizes / anchor_aspect_ratios."""

    shapes: Dict[str, Tuple[int, ...]]
    class_names: List[str]
    base_classes: List[str]
    novel_classes: List[str]
    all_classes: List[str]
    anchor_sizes: int = 5
    anchor_ratios: int = 3


class DetectorConversion(NamedTuple):
    """The converted arrays and the coverage: source names converted, source names left out
    ({name: reason}), model parameters the source has nothing for, the predictor's class lists
    (None without a predictor) and notes for the user."""

    arrays: Dict[str, np.ndarray]
    converted: List[str]
    left_out: Dict[str, str]
    not_in_source: List[str]
    source_classes: Optional[List[str]]
    written_classes: Optional[List[str]]
    notes: List[str]


# --------------------------------------------------------------------------------------------
# names


def defrcn_to_detector_name(name):
    """Original DeFRCN / detectron2 name -> ours (None if it has no counterpart)."""
    if name.startswith("module."):  # DistributedDataParallel's wrapper
        name = name[len("module."):]
    match = _D2_RPN.match(name)
    if match:
        return f"proposal_generator.head.{match.group(1)}.{match.group(2)}"
    match = _D2_AFFINE.match(name)
    if match:
        return f"{_BRANCH[match.group(1)]}.affine.{match.group(2)}"
    if _PREDICTOR.match(name):
        return name
    return detectron2_to_detector_name(name)


def port_to_detector_name(name):
    """MindSpore-port name -> ours (None if it has no counterpart)."""
    match = _PORT_STEM.match(name)
    if match:
        return "backbone." + match.group(1)
    match = _PORT_BLOCK.match(name)
    if match:
        stage, res5, block, module, field = match.groups()
        prefix = "roi_heads.res5.layer4." if res5 else f"backbone.layer{stage}."
        return f"{prefix}{block}.{_PORT_MODULE[module]}.{field}"
    match = _D2_AFFINE.match(name)
    if match:
        return f"{_BRANCH[match.group(1)]}.affine.{match.group(2)}"
    match = _PORT_RPN.match(name)
    if match:
        return f"proposal_generator.head.{_PORT_RPN_LAYER[match.group(1)]}.{match.group(2)}"
    match = _PORT_PREDICTOR.match(name)
    if match:
        return f"roi_heads.box_predictor.{_PORT_PREDICTOR_LAYER[match.group(1)]}.{match.group(2)}"
    return None


def _reason(name):
    for pattern, reason in _REASONS:
        if pattern.search(name):
            return reason
    return "no counterpart in this detector"


# --------------------------------------------------------------------------------------------
# reading


def read_defrcn_weights(path):
    """{name: np.ndarray} of an original DeFRCN checkpoint: a `.pth` (`{"model": ...}` or a bare
    state dict) or a detectron2 `.pkl` (numpy arrays), both read as data (`safe_load`)."""
    if str(path).endswith(".pkl"):
        weights, _ = read_detectron2_pickle(path)
        return weights
    return read_torch_state_dict(path)


def read_port_weights(path):
    """{name: np.ndarray} of a MindSpore `.ckpt` (string entries dropped)."""
    from defrcn.checkpoint import io

    params = io.load_checkpoint(str(path))
    return {name: value.asnumpy() for name, value in params.items() if not isinstance(value, str)}


# --------------------------------------------------------------------------------------------
# class lists


def _parse_source_classes(source_classes, num_classes, source):
    names = [name.strip() for name in source_classes if name.strip()]
    if len(names) != num_classes:
        raise InputError(f"--source-classes lists {len(names)} classes but the predictor has {num_classes} "
                         f"({num_classes + 1} classifier rows)", path=source)
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"--source-classes: '{repeated[0]}' is listed twice", path=source)
    return names


def _infer_source_classes(num_classes, target, source):
    """The recipe's class list with `num_classes` names (model order first); InputError if none
    or several different ones fit."""
    candidates = [("the recipe model's", target.class_names), ("base", target.base_classes),
                  ("novel", target.novel_classes), ("all", target.all_classes)]
    fitting = [(what, list(names)) for what, names in candidates if len(names) == num_classes]
    if not fitting:
        sizes = ", ".join(f"{what} {len(names)}" for what, names in candidates[1:])
        raise InputError(f"the predictor has {num_classes} classes, which matches none of the recipe's "
                         f"class lists ({sizes}); is it the right recipe? (or state them with "
                         f"--source-classes)", path=source)
    if any(set(names) != set(fitting[0][1]) for _, names in fitting[1:]):
        raise InputError(f"the predictor has {num_classes} classes and several of the recipe's class lists "
                         f"have that many; state them with --source-classes", path=source)
    return fitting[0][1]


def _written_classes(source_names, target, source):
    """Order to write the predictor in: the model's (all its classes are in the source), else
    the base order (a base model converted for a fine-tune recipe: surgery follows)."""
    if set(target.class_names) <= set(source_names):
        return list(target.class_names), None
    if set(source_names) == set(target.base_classes):
        return list(target.base_classes), (
            f"the predictor holds the {len(source_names)} base classes and the recipe's model has "
            f"{len(target.class_names)}: written in the base order, for model.base_weights (surgery "
            f"'{'randinit' if set(target.base_classes) <= set(target.class_names) else 'remove'}' applies) "
            f"or tools/surgery.py")
    absent = [name for name in target.class_names if name not in source_names]
    raise InputError(f"the predictor's classes lack the recipe model's class '{absent[0]}' "
                     f"({len(absent)} missing); convert with the recipe it was trained for", path=source)


def _reorder_predictor(arrays, source_names, written_names):
    """The four predictor arrays (ours: background last, 4 box rows per class) with rows
    moved from the source order to `written_names` by class name."""
    cls_w, cls_b, box_w, box_b = arrays
    index = [source_names.index(name) for name in written_names]
    cls_rows = index + [len(source_names)]  # background stays last
    box_rows = [4 * i + k for i in index for k in range(4)]
    return cls_w[cls_rows], cls_b[cls_rows], box_w[box_rows], box_b[box_rows]


# --------------------------------------------------------------------------------------------
# layout fixes per source


def _port_anchor_order(num_sizes, num_ratios):
    """Source channel of each of our anchors: ours a = size * R + ratio (size-major), the
    port's a = ratio * S + size (its AnchorGenerator, scale_major=True)."""
    return [ratio * num_sizes + size for size in range(num_sizes) for ratio in range(num_ratios)]


def _port_layout(converted, target, source):
    """The port's predictor (transposed, background first) and RPN (ratio-major anchors) in ours."""
    for key in (CLS_WEIGHT, BOX_WEIGHT):
        if key in converted:
            if converted[key].ndim != 2:
                raise InputError(f"{key}: a port predictor weight is 2-D, got shape {converted[key].shape}",
                                 path=source)
            converted[key] = np.ascontiguousarray(converted[key].T)  # DenseNoTranpose keeps (D, out)
    for key in (CLS_WEIGHT, CLS_BIAS):
        if key in converted:
            rows = converted[key]
            converted[key] = np.ascontiguousarray(np.concatenate([rows[1:], rows[:1]], axis=0))  # bg 0 -> last
    order = _port_anchor_order(target.anchor_sizes, target.anchor_ratios)
    for key in RPN_OBJECTNESS:
        if key in converted:
            if converted[key].shape[0] != len(order):
                raise InputError(f"{key}: {converted[key].shape[0]} anchors where the recipe has "
                                 f"{len(order)} (model.rpn anchor sizes x ratios)", path=source)
            converted[key] = np.ascontiguousarray(converted[key][order])
    for key in RPN_DELTAS:
        if key in converted:
            if converted[key].shape[0] != 4 * len(order):
                raise InputError(f"{key}: {converted[key].shape[0]} rows where the recipe has "
                                 f"{4 * len(order)} (4 x anchors)", path=source)
            rows = [4 * a + k for a in order for k in range(4)]
            converted[key] = np.ascontiguousarray(converted[key][rows])


# --------------------------------------------------------------------------------------------


def _map_names(weights, to_ours, source):
    converted, used, left_out = {}, {}, {}
    for name, value in weights.items():
        ours = to_ours(name)
        if ours is None:
            left_out[name] = _reason(name)
            continue
        if ours in converted:
            raise InputError(f"'{name}' and '{used[ours]}' both map to {ours}", path=source)
        converted[ours], used[ours] = np.ascontiguousarray(np.asarray(value, dtype=np.float32)), name
    return converted, used, left_out


def _predictor(converted, source_classes, target, source, notes):
    """Reorder the predictor in `converted` in place; (source names, written names) or (None, None)."""
    present = [key for key in PREDICTOR_KEYS if key in converted]
    if not present:
        notes.append("no box predictor in the source (a surgery 'remove' checkpoint): the model keeps its "
                     "own predictor init")
        return None, None
    if len(present) != len(PREDICTOR_KEYS):
        absent = [key for key in PREDICTOR_KEYS if key not in converted]
        raise InputError(f"incomplete box predictor: no {absent[0]}", path=source)
    cls_w, cls_b, box_w, box_b = (converted[key] for key in PREDICTOR_KEYS)
    if cls_w.ndim != 2 or box_w.ndim != 2 or cls_w.shape[1] != box_w.shape[1] \
            or cls_b.shape != cls_w.shape[:1] or box_b.shape != box_w.shape[:1]:
        raise InputError(f"box predictor shapes {cls_w.shape}, {cls_b.shape}, {box_w.shape}, {box_b.shape} are "
                         f"not (C+1, D), (C+1,), (4C, D), (4C,)", path=source)
    num_classes = cls_w.shape[0] - 1
    if box_w.shape[0] != 4 * num_classes:
        raise InputError(f"bbox_pred has {box_w.shape[0]} rows for {num_classes} classes (class-agnostic box "
                         f"regression is not supported; expected {4 * num_classes})", path=source)
    if source_classes:
        source_names = _parse_source_classes(source_classes, num_classes, source)
    else:
        source_names = _infer_source_classes(num_classes, target, source)
    written, note = _written_classes(source_names, target, source)
    if note:
        notes.append(note)
    for key, array in zip(PREDICTOR_KEYS, _reorder_predictor((cls_w, cls_b, box_w, box_b), source_names, written)):
        converted[key] = np.ascontiguousarray(array)
    return source_names, written


def _check_shapes(converted, target, written, source):
    base_predictor = written is not None and list(written) != list(target.class_names)
    extra = sorted(name for name in converted if name not in target.shapes)
    if extra:
        raise InputError(f"'{extra[0]}' is not a parameter of the recipe's model ({len(extra)} such entries; "
                         f"another model.depth?)", path=source)
    for name, array in converted.items():
        want = tuple(target.shapes[name])
        if base_predictor and name in PREDICTOR_KEYS:
            want = (array.shape[0],) + want[1:]  # rows follow the base classes; feature size must agree
        if tuple(array.shape) != want:
            raise InputError(f"{name}: shape {tuple(array.shape)} where the recipe's model has {want} "
                             f"(another model.depth or anchor setting?)", path=source)


def convert_detector_weights(weights, kind, target, *, source_classes=None, source="weights"):
    """{source name: array} of a `kind` ("defrcn" | "port") detector -> DetectorConversion for `target`.

    source_classes: the predictor's class names in its row order (default: inferred from the
    row count among target's lists). InputError (one line naming `source`) for a file that is
    not such a detector, classes that do not fit, or shapes that disagree with the target."""
    if kind not in KINDS:
        raise InputError(f"unknown detector source '{kind}' (one of {', '.join(KINDS)})", path=source)
    to_ours = defrcn_to_detector_name if kind == "defrcn" else port_to_detector_name
    converted, used, left_out = _map_names(weights, to_ours, source)
    what = "an original DeFRCN / detectron2 detector" if kind == "defrcn" else "a MindSpore-port DeFRCN detector"
    if STEM_CONV not in converted:
        stem = "backbone.stem.conv1.weight"
        raise InputError(f"not {what} checkpoint: no '{stem}'", path=source)
    heads = [name for name in converted if not name.startswith(("backbone.", "roi_heads.res5."))]
    if not heads:
        hint = "; for ImageNet backbones use `convert.py detectron2`" if kind == "defrcn" else ""
        raise InputError(f"not {what} checkpoint: a backbone only, no RPN, GDL affine or predictor{hint}",
                         path=source)
    _fill_caffe2_statistics(converted)
    for name in AFFINES:  # the original's (1, C, 1, 1) -> our (C,)
        if name in converted and converted[name].ndim == 4:
            converted[name] = converted[name].reshape(-1)
    if kind == "port":
        _port_layout(converted, target, source)
    notes = []
    source_names, written = _predictor(converted, source_classes, target, source, notes)
    _check_shapes(converted, target, written, source)
    not_in_source = sorted(name for name in target.shapes if name not in converted
                           and not (written is not None and name in PREDICTOR_KEYS))
    if kind == "port" and any(name.startswith("proposal_generator.") for name in converted):
        notes.append("the port's RPN was trained with anchors centred at +7.5 px and +1 box widths "
                     "(its anchor_generator.py / BoundingBoxEncode); ours are centred at 0 (detectron2): "
                     "proposals shift slightly")
    return DetectorConversion(converted, sorted(used.values()), dict(sorted(left_out.items())), not_in_source,
                              source_names, written, notes)


def read_detector_weights(kind, src):
    """{name: array} of a whole detector ("defrcn": .pth/.pkl; "port": .ckpt), read as data."""
    if kind == "port":
        weights = read_port_weights(src)
    elif kind == "defrcn":
        weights = read_defrcn_weights(src)
    else:
        raise InputError(f"unknown detector source '{kind}' (one of {', '.join(KINDS)})")
    if not weights:
        raise InputError("no weights in the file", path=src)
    return weights


def convert_detector(kind, src, dst, target, *, source_classes=None, weights=None):
    """Read `src` (unless its `weights` are given), convert it for `target`, write `dst` (.ckpt).

    Returns the DetectorConversion; InputError (one line naming the file) for bad input."""
    from mindspore import Tensor

    from defrcn.checkpoint import io

    if not str(dst).endswith(".ckpt"):
        raise InputError("the output file name must end in .ckpt", path=dst)
    if weights is None:
        weights = read_detector_weights(kind, src)
    result = convert_detector_weights(weights, kind, target, source_classes=source_classes, source=str(src))
    folder = os.path.dirname(os.path.abspath(str(dst)))
    os.makedirs(folder, exist_ok=True)
    io.save_checkpoint([{"name": name, "data": Tensor(value)} for name, value in result.arrays.items()], str(dst))
    return result
