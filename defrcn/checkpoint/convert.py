"""ImageNet ResNet weights from PyTorch / Caffe2 files to MindSpore checkpoints.

Two sources:

- `torchvision`: a torchvision ResNet state dict (`resnet101-*.pth`, stride in the 3x3) ->
  mindcv's ResNet names, for the PCB feature net (`mindcv.create_model("resnet101")`):
  `bnK.{weight,bias,running_mean,running_var}` -> `bnK.{gamma,beta,moving_mean,moving_variance}`,
  `downsample.{0,1}` -> `down_sample.{0,1}`, `fc` -> `classifier`, `num_batches_tracked` dropped.
  The `.pth` is read as data, without PyTorch (`safe_load.load_torch`).
- `detectron2`: a detectron2 / Detectron `.pkl` (read as data by `safe_load.load_pickle`: a
  pickle of `{"model": {...}}`, `{"blobs": {...}}` or a flat dict of numpy arrays) with Caffe2
  names (`conv1_w`, `res_conv1_bn_s`,
  `res2_0_branch2a_w`, `res2_0_branch2a_bn_{s,b}`, `res2_0_branch1_w`, ...; the MSRA R-101 that
  DeFRCN starts from, stride in the 1x1) or detectron2 names (`backbone.res2.0.conv1.weight`,
  `...conv1.norm.{weight,bias,running_mean,running_var}`, `stem.conv1.*`, `res5.*` /
  `roi_heads.res5.*`) -> the DeFRCN detector's backbone names: res2-res4 and the stem under
  `backbone.` (`backbone.layer1.0.conv1.weight`, ...), res5 under `roi_heads.res5.layer4.`.
  Caffe2's frozen BN stores only scale s and bias b; they become gamma = s, beta = b,
  moving_mean = 0, moving_variance = 1 - eps (eps = FrozenBatchNorm2d's 1e-5), so that
  gamma / sqrt(moving_variance + eps) = s exactly in float32 (checked: (1 - 1e-5) + 1e-5 == 1.0).

Whole detectors (the original DeFRCN's `.pth`, the MindSpore port's `.ckpt`) are in
`convert_detector.py`.

Names and shapes are checked against the model they are meant for (mindcv's ResNet of the
detected depth, or `build_detector` of that depth); a file that is not a ResNet gives one
InputError line.
"""
import re
from collections import defaultdict
from typing import List, NamedTuple

import numpy as np

from defrcn.checkpoint.safe_load import load_pickle, load_torch
from defrcn.errors import InputError

__all__ = ["KINDS", "ConversionSummary", "torchvision_to_mindcv_name", "detectron2_to_detector_name",
           "read_torch_state_dict", "read_detectron2_pickle", "convert_torchvision_state",
           "convert_detectron2_weights", "convert"]

KINDS = ("torchvision", "detectron2")
BN_EPS = 1e-5  # defrcn.modeling.backbone.BN_EPS (detectron2 FrozenBatchNorm2d eps)

_TORCH_BN = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
_CAFFE2_BN = {"s": "gamma", "b": "beta", "rm": "moving_mean", "riv": "moving_variance"}
_BN_FIELDS = ("gamma", "beta", "moving_mean", "moving_variance")
# Caffe2 branch / detectron2 conv name -> (mindcv conv, mindcv norm) inside a block.
_BLOCK_LAYERS = {"branch2a": ("conv1", "bn1"), "branch2b": ("conv2", "bn2"), "branch2c": ("conv3", "bn3"),
                 "branch1": ("down_sample.0", "down_sample.1"), "conv1": ("conv1", "bn1"),
                 "conv2": ("conv2", "bn2"), "conv3": ("conv3", "bn3"), "shortcut": ("down_sample.0", "down_sample.1")}

_C2_STEM_CONV = re.compile(r"^conv1_w$")
_C2_STEM_BN = re.compile(r"^res_conv1_bn_(s|b|rm|riv)$")
_C2_CONV = re.compile(r"^res(\d)_(\d+)_(branch2a|branch2b|branch2c|branch1)_w$")
_C2_BN = re.compile(r"^res(\d)_(\d+)_(branch2a|branch2b|branch2c|branch1)_bn_(s|b|rm|riv)$")
_D2_PREFIX = r"^(?:backbone\.)?(?:bottom_up\.)?"
_D2_STEM_CONV = re.compile(_D2_PREFIX + r"stem\.conv1\.weight$")
_D2_STEM_BN = re.compile(_D2_PREFIX + r"stem\.conv1\.norm\.(weight|bias|running_mean|running_var)$")
_D2_CONV = re.compile(r"^(?:backbone\.|roi_heads\.)?(?:bottom_up\.)?res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)"
                      r"\.weight$")
_D2_BN = re.compile(r"^(?:backbone\.|roi_heads\.)?(?:bottom_up\.)?res(\d)\.(\d+)\.(conv1|conv2|conv3|shortcut)"
                    r"\.norm\.(weight|bias|running_mean|running_var)$")


class ConversionSummary(NamedTuple):
    """What `convert` wrote: depth, entry count, source names left out, and a note on the stride."""

    depth: int
    converted: int
    ignored: List[str]
    note: str


# --------------------------------------------------------------------------------------------
# torchvision -> mindcv


def torchvision_to_mindcv_name(name):
    """torchvision ResNet parameter name -> mindcv's (None for `num_batches_tracked`)."""
    if name.endswith("num_batches_tracked"):
        return None
    if name.startswith("fc."):
        return "classifier." + name[len("fc."):]
    name = name.replace(".downsample.", ".down_sample.")
    match = re.match(r"^(.*\bbn\d|.*down_sample\.1)\.(weight|bias|running_mean|running_var)$", name)
    if match:
        return f"{match.group(1)}.{_TORCH_BN[match.group(2)]}"
    return name


def _resnet_depth(stage_blocks, bottleneck, source):
    """Depth of a ResNet with `stage_blocks` [n2, n3, n4, n5] blocks (None if no such ResNet)."""
    from defrcn.modeling.backbone import RESNET_SPECS
    from mindcv.models.resnet import Bottleneck

    for depth, (block, layers) in RESNET_SPECS.items():
        if list(layers) == list(stage_blocks) and (block is Bottleneck) == bottleneck:
            return depth
    kind = "bottleneck" if bottleneck else "basic"
    raise InputError(f"not a known ResNet: {kind} blocks per stage {list(stage_blocks)} "
                     f"(known depths {sorted(RESNET_SPECS)})", path=source)


def _count_blocks(names, pattern):
    """[blocks in stage 1..4] from names matched by `pattern` (groups: stage, block index)."""
    blocks = defaultdict(set)
    for name in names:
        match = pattern.match(name)
        if match:
            blocks[int(match.group(1))].add(int(match.group(2)))
    return blocks


def _check_against(converted, expected_shapes, source, what):
    """InputError if `converted` misses a name of `expected_shapes` or has another shape."""
    missing = [name for name in expected_shapes if name not in converted]
    if missing:
        raise InputError(f"not a complete {what}: {len(missing)} parameters missing (e.g. {missing[0]})",
                         path=source)
    for name, shape in expected_shapes.items():
        if tuple(converted[name].shape) != tuple(shape):
            raise InputError(f"{name}: shape {tuple(converted[name].shape)} where {what} has {tuple(shape)}",
                             path=source)


def convert_torchvision_state(state, source="state dict"):
    """{torchvision name: array} -> ({mindcv name: float32 array}, depth). InputError if it is not
    a torchvision ResNet state dict (names and shapes checked against mindcv's model)."""
    import mindcv

    state = {name[len("module."):] if name.startswith("module.") else name: value for name, value in state.items()}
    if "conv1.weight" not in state or "fc.weight" not in state or "layer1.0.conv1.weight" not in state:
        raise InputError("not a torchvision ResNet state dict (no conv1.weight / layer1.0.conv1.weight / "
                         "fc.weight)", path=source)
    blocks = _count_blocks(state, re.compile(r"^layer(\d)\.(\d+)\."))
    stage_blocks = [len(blocks.get(stage, ())) for stage in (1, 2, 3, 4)]
    bottleneck = any(".conv3." in name for name in state)
    depth = _resnet_depth(stage_blocks, bottleneck, source)
    converted = {}
    for name, value in state.items():
        target = torchvision_to_mindcv_name(name)
        if target is not None:
            converted[target] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    num_classes = int(converted["classifier.weight"].shape[0])
    model = mindcv.create_model(f"resnet{depth}", num_classes=num_classes, pretrained=False)
    expected = {name: tuple(param.shape) for name, param in model.parameters_dict().items()}
    del model
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise InputError(f"not a torchvision ResNet-{depth} state dict: unexpected entry '{extra[0]}'",
                         path=source)
    _check_against(converted, expected, source, f"torchvision ResNet-{depth}")
    return converted, depth


def read_torch_state_dict(path):
    """{name: np.ndarray} of a PyTorch `.pth` state dict, bare or under a "state_dict" / "model"
    key, read as data (`defrcn.checkpoint.safe_load.load_torch`; PyTorch is not needed)."""
    content = load_torch(path)
    for key in ("state_dict", "model"):  # a bare state dict, or a checkpoint (detectron2 keeps "model")
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
            break
    if not isinstance(content, dict):
        raise InputError(f"not a state dict (a {type(content).__name__})", path=str(path))
    return {name: value for name, value in content.items() if isinstance(name, str) and isinstance(value, np.ndarray)}


# --------------------------------------------------------------------------------------------
# detectron2 / Caffe2 -> the detector's backbone


def _stage_prefix(stage, block):
    """Our prefix of res<stage> block <block> (res2-4 in the trunk, res5 in the ROI heads)."""
    if stage == 5:
        return f"roi_heads.res5.layer4.{block}."
    return f"backbone.layer{stage - 1}.{block}."


def detectron2_to_detector_name(name):
    """Caffe2 or detectron2 ResNet name -> the DeFRCN detector's name (None if not a backbone entry).

    Caffe2 BN names map to gamma/beta (`_s`, `_b`) or moving_mean/moving_variance (`_rm`, `_riv`,
    which detectron2 also reads as the running variance)."""
    if _C2_STEM_CONV.match(name) or _D2_STEM_CONV.match(name):
        return "backbone.conv1.weight"
    match = _C2_STEM_BN.match(name)
    if match:
        return f"backbone.bn1.{_CAFFE2_BN[match.group(1)]}"
    match = _D2_STEM_BN.match(name)
    if match:
        return f"backbone.bn1.{_TORCH_BN[match.group(1)]}"
    for pattern in (_C2_CONV, _D2_CONV):
        match = pattern.match(name)
        if match and 2 <= int(match.group(1)) <= 5:
            conv, _ = _BLOCK_LAYERS[match.group(3)]
            return f"{_stage_prefix(int(match.group(1)), int(match.group(2)))}{conv}.weight"
    for pattern, fields in ((_C2_BN, _CAFFE2_BN), (_D2_BN, _TORCH_BN)):
        match = pattern.match(name)
        if match and 2 <= int(match.group(1)) <= 5:
            _, norm = _BLOCK_LAYERS[match.group(3)]
            return f"{_stage_prefix(int(match.group(1)), int(match.group(2)))}{norm}.{fields[match.group(4)]}"
    return None


def read_detectron2_pickle(path):
    """({name: np.ndarray}, author) of a detectron2 / Detectron `.pkl` (`_momentum` blobs dropped;
    author is the file's `__author__`, "Caffe2" for a `blobs` file, else None), read as data
    (`defrcn.checkpoint.safe_load.load_pickle`)."""
    path = str(path)
    content = load_pickle(path)
    if not isinstance(content, dict):
        raise InputError(f"not a weights pickle (a {type(content).__name__}, expected a dict)", path=path)
    author = content.get("__author__") if isinstance(content.get("__author__"), str) else None
    if isinstance(content.get("model"), dict):
        content = content["model"]
    elif isinstance(content.get("blobs"), dict):
        content, author = content["blobs"], author or "Caffe2"
    weights = {}
    for name, value in content.items():
        if not isinstance(name, str) or name.endswith("_momentum"):
            continue
        if isinstance(value, np.ndarray):
            weights[name] = value
    return weights, author


def _fill_caffe2_statistics(converted):
    """Give norms that have only gamma/beta (Caffe2 frozen BN) mean 0 and variance 1 - eps."""
    norms = {name.rsplit(".", 1)[0] for name in converted if name.endswith((".gamma", ".beta"))}
    for norm in sorted(norms):
        gamma = converted.get(f"{norm}.gamma")
        if gamma is None:
            continue
        if f"{norm}.moving_mean" not in converted:
            converted[f"{norm}.moving_mean"] = np.zeros_like(gamma)
        if f"{norm}.moving_variance" not in converted:
            converted[f"{norm}.moving_variance"] = np.full_like(gamma, np.float32(1.0) - np.float32(BN_EPS))


def _detector_backbone_shapes(depth):
    """{name: shape} of the detector's stem, res2-res4 and res5 parameters at `depth`."""
    from defrcn.modeling.detector import build_detector

    model = build_detector(num_classes=1, depth=depth, verbose=False)
    shapes = {param.name: tuple(param.shape) for param in model.get_parameters()
              if param.name.startswith(("backbone.", "roi_heads.res5."))}
    del model
    return shapes


def convert_detectron2_weights(weights, source="weights"):
    """{Caffe2 or detectron2 name: array} -> ({detector name: float32 array}, depth, ignored names).

    InputError if no ResNet backbone is found or names/shapes disagree with `build_detector`."""
    converted, ignored = {}, []
    for name, value in weights.items():
        target = detectron2_to_detector_name(name)
        if target is None:
            ignored.append(name)
            continue
        if target in converted:
            raise InputError(f"two entries map to {target} (one is '{name}')", path=source)
        converted[target] = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
    if "backbone.conv1.weight" not in converted:
        raise InputError("not a detectron2/Caffe2 ResNet: no stem conv (conv1_w or stem.conv1.weight)",
                         path=source)
    _fill_caffe2_statistics(converted)
    prefixes = {2: r"^backbone\.layer1\.(\d+)\.", 3: r"^backbone\.layer2\.(\d+)\.",
                4: r"^backbone\.layer3\.(\d+)\.", 5: r"^roi_heads\.res5\.layer4\.(\d+)\."}
    stage_blocks = []
    for stage in (2, 3, 4, 5):
        pattern = re.compile(prefixes[stage])
        stage_blocks.append(len({pattern.match(n).group(1) for n in converted if pattern.match(n)}))
    bottleneck = any(".conv3." in name for name in converted)
    depth = _resnet_depth(stage_blocks, bottleneck, source)
    expected = _detector_backbone_shapes(depth)
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise InputError(f"entry maps to '{extra[0]}', which a ResNet-{depth} detector does not have",
                         path=source)
    _check_against(converted, expected, source, f"ResNet-{depth} backbone")
    return converted, depth, sorted(ignored)


def _stride_note(author, weights):
    caffe2 = author == "Caffe2" or any(_C2_CONV.match(name) for name in weights)
    if caffe2:
        return "Caffe2/MSRA weights: stride in the 1x1 conv, BGR 0-255 input (model.stride_in_1x1=True)"
    if author == "torchvision":
        return "torchvision weights: stride in the 3x3 conv, RGB input (model.stride_in_1x1=False)"
    return "set model.stride_in_1x1 to match how these weights were trained"


# --------------------------------------------------------------------------------------------


def _save(arrays, dst):
    from mindspore import Tensor

    from defrcn.checkpoint import io

    if not str(dst).endswith(".ckpt"):
        raise InputError("the output file name must end in .ckpt", path=dst)
    io.save_checkpoint([{"name": name, "data": Tensor(value)} for name, value in arrays.items()], str(dst))


def convert(kind, src, dst):
    """Convert `src` (a torchvision `.pth` or a detectron2/Caffe2 `.pkl`) to a MindSpore `.ckpt`.

    Returns ConversionSummary; InputError (one line naming the file) for bad input."""
    if kind == "torchvision":
        state = read_torch_state_dict(src)
        converted, depth = convert_torchvision_state(state, source=str(src))
        ignored = sorted(name for name in state if torchvision_to_mindcv_name(name) is None)
        note = "torchvision weights (mindcv names): stride in the 3x3 conv, RGB ImageNet mean/std input"
    elif kind == "detectron2":
        weights, author = read_detectron2_pickle(src)
        converted, depth, ignored = convert_detectron2_weights(weights, source=str(src))
        note = _stride_note(author, weights)
    else:
        raise InputError(f"unknown source kind '{kind}' (one of {', '.join(KINDS)})")
    _save(converted, dst)
    return ConversionSummary(depth, len(converted), ignored, note)
