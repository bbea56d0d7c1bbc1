"""Fold frozen BatchNorm into the convolution before it (inference and frozen stages).

Measured (R-101 res5 on 1000 RoIs of 1024 x 7 x 7, graph mode, CPU, MindSpore 2.8.0):
written as two elementwise ops, frozen BN raised the peak memory from 1.25-1.4 GiB to
6.6 GiB; FrozenBatchNorm2d now runs MindSpore's fused inference batch_norm kernel
(1.25 GiB), and folding removes the BN op altogether (1.39 GiB), at the same speed
within noise (docs/benchmark.md).

A FrozenBatchNorm2d after a convolution computes y = conv(x) * s + t with fixed
s = gamma / sqrt(var + eps), t = beta - mean * s, which equals one convolution with
weight W * s (per output channel) and bias t. `fold_frozen_bn(cell)` rewrites every
such pair under `cell` in place: the convolution becomes a biased one with the folded
weight and the BN becomes an identity, so each block runs one op per conv instead of
three (conv, mul, add).

Pairs recognised (mindcv ResNet naming): siblings `convK` / `bnK` of one parent (the stem's
conv1 / bn1, a block's conv1..3 / bn1..3), and consecutive (Conv2d, FrozenBatchNorm2d) items
of a SequentialCell (the shortcut `down_sample.0/1`).

Use it after the weights are loaded, for inference (tools/eval.py, infer.py, export.py and
benchmark's infer mode call `fold_for_inference`) or on stages that
stay frozen: the folded network computes the same function, but it has extra bias
Parameters and no BN ones (its checkpoints are not the stock layout), and the gradient
of a trainable convolution differs (training W * s is not training W with s fixed).
Folded weights are new Parameters (same names): the originals are left untouched.
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter

from defrcn.modeling.backbone import FrozenBatchNorm2d
from defrcn.modeling.winograd import WinogradConv2d

__all__ = ["fold_frozen_bn", "folded_conv", "fold_for_inference"]


def folded_conv(conv, bn):
    """A new biased Conv2d computing bn(conv(x)) (conv: nn.Conv2d, bn: FrozenBatchNorm2d)."""
    scale = bn.gamma * ops.rsqrt(bn.moving_variance + bn.eps)
    shift = bn.beta - bn.moving_mean * scale
    # The per-channel product on the host: MindSpore 2.8's CPU Mul with a broadcast operand keeps
    # 16 bytes of offsets per output element in its cached kernel for the rest of the process
    # ~100 MiB, docs/benchmark.md); float32 products are the same either way.
    weight = conv.weight.asnumpy() * scale.asnumpy().reshape((-1, 1, 1, 1))
    if conv.has_bias:
        shift = shift + conv.bias * scale
    if isinstance(conv, WinogradConv2d):
        new = WinogradConv2d(conv.in_channels, conv.out_channels, has_bias=True)
    else:
        new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                        pad_mode=conv.pad_mode, padding=conv.padding, dilation=conv.dilation,
                        group=conv.group, has_bias=True, data_format=conv.data_format)
    requires_grad = conv.weight.requires_grad
    new.weight = Parameter(ms.Tensor(weight, ms.float32), name=conv.weight.name, requires_grad=requires_grad)
    bias_name = conv.weight.name.rsplit(".", 1)[0] + ".bias"
    new.bias = Parameter(shift.astype(ms.float32), name=bias_name, requires_grad=requires_grad)
    return new


def _set_child(parent, name, child):
    if isinstance(parent, nn.SequentialCell):
        parent[int(name)] = child
    else:
        setattr(parent, name, child)


def _pairs(parent, children):
    """(conv name, bn name) pairs to fold among a parent's direct children."""
    if isinstance(parent, nn.SequentialCell):
        names = list(children)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(children[a], nn.Conv2d) and isinstance(children[b], FrozenBatchNorm2d)]
    pairs = []
    for name, child in children.items():
        if name.startswith("conv") and isinstance(child, nn.Conv2d):
            bn_name = "bn" + name[len("conv"):]
            if isinstance(children.get(bn_name), FrozenBatchNorm2d):
                pairs.append((name, bn_name))
    return pairs


def fold_frozen_bn(cell, *, only_frozen_convs=False):
    """Fold every (conv, FrozenBatchNorm2d) pair under `cell` in place; return the count.

    only_frozen_convs=True folds only pairs whose convolution has requires_grad=False
    (exact for training too: e.g. the stem, res2, res3 under freeze_at 3)."""
    children = dict(cell.name_cells())
    count = 0
    for conv_name, bn_name in _pairs(cell, children):
        if only_frozen_convs and children[conv_name].weight.requires_grad:
            continue
        conv = folded_conv(children[conv_name], children[bn_name])
        names = conv.weight.name, conv.bias.name
        _set_child(cell, conv_name, conv)
        # MindSpore renames an assigned Cell's parameters relative to its new parent: restore
        conv.weight.name, conv.bias.name = names
        _set_child(cell, bn_name, nn.Identity())
        count += 1
    for name, child in cell.name_cells().items():
        if not isinstance(child, (nn.Conv2d, nn.Identity, FrozenBatchNorm2d)):
            count += fold_frozen_bn(child, only_frozen_convs=only_frozen_convs)
    return count


def fold_for_inference(model):
    """Switch `model` to inference and fold all its frozen BN; return the number folded.

    For models that will not be trained or saved afterwards (their parameters change: see the
    module docstring). R-101 inference at 512 x 512 on CPU: 0-7 % faster, same peak memory
    (docs/benchmark.md).
    """
    model.set_train(False)
    return fold_frozen_bn(model)
