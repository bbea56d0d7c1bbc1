"""Mixed precision through `mindspore.amp`: recipe keys `solver.amp_level` and `solver.loss_scale`.

`solver.amp_level`: "O0" (default, everything float32, as before) or "O1" / "O2" / "O3" as
`mindspore.amp.auto_mixed_precision` defines them, applied to the network's compute cells
only (those it lists in `mixed_precision_cells`; the detector: the ResNet trunk, the RPN
head, res5 and the box predictor), each wrapped so that its outputs are float32 again:
anchors, proposals, box coding, matching, sampling, ROIAlign and the four losses stay
float32 at every level.
- O1: the cells of `mindspore.amp.get_white_list()` (Conv2d, Dense, ...) run in float16, each
  cast back to float32, so BatchNorm and the rest run in float32. MindSpore's own O1 rewrites
  the source (mindspore.rewrite) and fails on the trunk in 2.8.0 (NameError `_check_dim` in
  the rewritten BatchNorm2d), so the white-listed cells are converted one by one (as
  `auto_mixed_precision(cell, "O3")`); operators called directly in our code stay float32.
- O2: everything in float16 except `mindspore.amp.get_black_list()` (the BatchNorms) plus our
  FrozenBatchNorm2d (`mindspore.amp.custom_mixed_precision` with that black list).
- O3: everything in those cells in float16, BatchNorm included.
At every level the frozen BNs run as their own Cells (`model.frozen_bn_impl` "kernel").

`solver.loss_scale` (used when amp_level is not O0): "dynamic" (default) for
`mindspore.amp.DynamicLossScaler` starting at 2**16, x2 after 2000 finite updates, /2 and the
update skipped on an overflow (PyTorch GradScaler's defaults), or a number for
`mindspore.amp.StaticLossScaler` (updates with non-finite gradients skipped as well).
`defrcn.engine.train_step.TrainStep` applies the scaler and checkpoints its state.
"""
from defrcn.errors import InputError

AMP_LEVELS = ("O0", "O1", "O2", "O3")
DYNAMIC = "dynamic"
DYNAMIC_INIT, DYNAMIC_FACTOR, DYNAMIC_WINDOW = 2.0 ** 16, 2, 2000


def amp_settings(solver):
    """(amp_level, loss_scale) from cfg.solver: loss_scale None (O0), "dynamic" or a float >= 1.
    Missing keys (configs written before these keys existed) mean O0. InputError if invalid."""
    level = str(solver.get("amp_level", "O0")).strip().upper()
    if level not in AMP_LEVELS:
        raise InputError(f"solver.amp_level: expected one of {', '.join(AMP_LEVELS)}, "
                         f"got {solver.get('amp_level')!r}")
    if level == "O0":
        return level, None
    text = str(solver.get("loss_scale", DYNAMIC)).strip().lower()
    if text == DYNAMIC:
        return level, DYNAMIC
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= 1.0 or value == float("inf"):
        raise InputError(f"solver.loss_scale: expected 'dynamic' or a number >= 1, "
                         f"got {solver.get('loss_scale')!r}")
    return level, value


def build_loss_scaler(loss_scale):
    """None, "dynamic" or a number -> None or a mindspore.amp loss scaler (for TrainStep)."""
    if loss_scale is None:
        return None
    from mindspore import amp

    if loss_scale == DYNAMIC:
        return amp.DynamicLossScaler(DYNAMIC_INIT, DYNAMIC_FACTOR, DYNAMIC_WINDOW)
    return amp.StaticLossScaler(float(loss_scale))


def apply_mixed_precision(network, level, cells=None):
    """Convert the compute cells of `network` in place to `level`; returns `network`.

    cells: dotted attribute paths (default: `network.mixed_precision_cells`; without it the
    whole network is converted, losses included). Each cell is replaced by what
    `mindspore.amp` returns for it (outputs cast back to float32) and every parameter keeps
    its name, so checkpoints of either precision load into the other.
    """
    if level == "O0":
        return network
    from mindspore import amp

    from defrcn.modeling.backbone import FrozenBatchNorm2d, set_frozen_bn_impl

    # each frozen BN runs as its own float32 Cell, as the levels above describe, not inside the
    # (float16) convolution before it
    set_frozen_bn_impl(network, "kernel")

    names = {id(param): param.name for param in network.get_parameters()}
    paths = cells if cells is not None else getattr(network, "mixed_precision_cells", None)
    if not paths:
        return _named_back(_converted(network, level, amp, FrozenBatchNorm2d), names)
    for path in paths:
        parent_path, _, attr = path.rpartition(".")
        parent = network
        for part in filter(None, parent_path.split(".")):
            parent = getattr(parent, part)
        cell = getattr(parent, attr)
        setattr(parent, attr, _with_settings_of(cell, _converted(cell, level, amp, FrozenBatchNorm2d)))
    return _named_back(network, names)


def _with_settings_of(cell, wrapper):
    """The plain settings of `cell` (out_channels, num_classes, ...) readable on its wrapper."""
    for key, value in vars(cell).items():
        if not key.startswith("_") and isinstance(value, (bool, int, float, str, tuple)) \
                and not hasattr(wrapper, key):
            setattr(wrapper, key, value)
    return wrapper


def _converted(cell, level, amp, frozen_bn):
    if level == "O1":
        return _white_listed_to_float16(cell, amp)
    if level == "O2":  # auto_mixed_precision's O2 with our frozen BN on the black list too
        return amp.custom_mixed_precision(cell, black_list=amp.get_black_list() + [frozen_bn])
    return amp.auto_mixed_precision(cell, level)


def _white_listed_to_float16(cell, amp):
    """O1 without mindspore.rewrite: each white-listed sub-cell in float16, float32 outputs."""
    from mindspore import nn

    white = tuple(c for c in amp.get_white_list() if isinstance(c, type) and issubclass(c, nn.Cell))
    if isinstance(cell, white):
        return amp.auto_mixed_precision(cell, "O3")
    for name, child in list(cell.name_cells().items()):
        converted = _white_listed_to_float16(child, amp)
        if converted is child:
            continue
        if isinstance(cell, nn.SequentialCell):
            cell[int(name)] = converted
        else:
            setattr(cell, name, converted)
    return cell


def _named_back(network, names):
    """The wrappers put their attribute names into the parameter names; undo that."""
    for param in network.get_parameters():
        if id(param) in names:
            param.name = names[id(param)]
    return network
