"""ResNet C4 backbone on mindcv's ResNet: a stride-16 trunk (stem + res2..res4) and res5.

Parameter names are mindcv's (`conv1.weight`, `layer3.5.bn2.gamma`, `layer4.0.down_sample.0.weight`,
...), relative to the trunk and to the res5 Cell, so a mindcv ResNet checkpoint (minus the
classifier) maps onto trunk + res5 name for name.

Two deliberate differences from a stock mindcv ResNet, both to match detectron2/torchvision
(where the weights DeFRCN uses come from):
- the stem max-pool pads 1 pixel on each side (mindcv's pad_mode="same" pads bottom/right
  only, which shifts the stride-4 grid by one input pixel of the stride-2 map);
- `stride_in_1x1=True` moves the stride of each strided bottleneck from the 3x3 conv to the
  first 1x1 conv (MSRA/Caffe2 weights, detectron2 RESNETS.STRIDE_IN_1X1); names and shapes
  are unchanged.
And two for speed with the same values: with the stride in the 1x1, res5 reads its input only
at stride 2, so it takes that input already sampled (`ResNetRes5.input_stride`); and a frozen
BatchNorm can run inside the convolution before it (`FrozenBatchNorm2d.in_conv`, set by
`set_frozen_bn_impl`), in training too, with the stock parameters.
"""

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter
from mindspore.common.initializer import initializer
from mindcv.models.resnet import BasicBlock, Bottleneck, ResNet

from defrcn.modeling.padding import apply_mask, region_mask
from defrcn.modeling.param_count import count_parameters  # noqa: F401  (re-exported)

__all__ = ["FrozenBatchNorm2d", "FROZEN_BN_IMPLS", "set_frozen_bn_impl", "conv_then_norm",
           "ResNetTrunk", "ResNetRes5", "build_resnet_c4", "freeze_cell",
           "count_parameters", "residual_stage", "RESNET_SPECS"]

# Block type and blocks per stage (res2..res5); He et al. 2016, table 1 (= mindcv's factories).
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# detectron2 FrozenBatchNorm2d and mindcv's BatchNorm2d both use eps 1e-5.
BN_EPS = 1e-5
# 1 + 1e-12 rounds to 1 in float32: batch_norm(x, 0, 1, gamma, beta) with it is x * gamma + beta.
_UNIT_EPS = 1e-12


class _FrozenNormKernel(nn.Cell):
    """MindSpore's inference batch-norm kernel with a backward that gives the input's gradient
    only: dx = dout * scale, scale = gamma / sqrt(moving_variance + eps) (given as an input).

    The stock backward (BatchNormGrad) also computes gamma's and beta's gradients, which need
    the kernel's input, so a graph keeps every frozen BN's input alive until the backward even
    though nothing uses those gradients. R-101's res5 on 1024 RoIs, forward and backward: 1,665
    MiB with the stock backward, 1,031 MiB with this one (PyTorch's FrozenBatchNorm2d: 898).

    dx runs the same forward kernel with mean 0, variance 1 - eps and weight `scale`: on CPU it is
    bit-identical to BatchNormGrad's dx ((1 - 1e-5) + 1e-5 rounds to exactly 1 in float32). The
    backward reads no attribute of the instance (MindSpore 2.8 can run one instance's bprop for
    another, see `defrcn.modeling.gdl.GradientDecoupledLayer`), so every instance shares `_EPS`
    there.
    """

    _EPS = BN_EPS

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def construct(self, x, mean, variance, gamma, beta, scale):
        return ops.batch_norm(x, mean, variance, gamma, beta, False, 0.1, self.eps)

    def bprop(self, x, mean, variance, gamma, beta, scale, out, dout):
        zeros = ops.zeros_like(scale)
        unit_variance = ops.ones_like(scale) - self._EPS
        dx = ops.batch_norm(dout, zeros, unit_variance, scale, zeros, False, 0.1, self._EPS)
        return dx, ops.zeros_like(mean), ops.zeros_like(variance), ops.zeros_like(gamma), \
            ops.zeros_like(beta), zeros


class FrozenBatchNorm2d(nn.Cell):
    """BatchNorm with fixed statistics and fixed affine: y = x * scale + shift over NCHW, where
    scale = gamma / sqrt(moving_variance + eps) and shift = beta - moving_mean * scale.

    Parameters keep mindcv's BatchNorm names (gamma, beta, moving_mean, moving_variance), all
    with requires_grad=False, so checkpoints load either way. The forward is one inference
    batch-norm kernel: written as two elementwise ops, res5 over 1000 RoIs kept 6.6 GiB of
    intermediates alive (1.25 GiB fused), too much to train R-101 at batch 2 in 24 GB. The
    backward keeps nothing of the input (`_FrozenNormKernel`).

    With `in_conv` True, `conv_then_norm` (which the blocks here call) runs the convolution
    before this norm and the norm as one convolution with weight W * scale, then + shift
    (`after_conv`).
    """

    def __init__(self, num_features, eps=BN_EPS):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.in_conv = False
        shape = (num_features,)
        self.gamma = Parameter(initializer("ones", shape, ms.float32), name="gamma", requires_grad=False)
        self.beta = Parameter(initializer("zeros", shape, ms.float32), name="beta", requires_grad=False)
        self.moving_mean = Parameter(initializer("zeros", shape, ms.float32), name="moving_mean",
                                     requires_grad=False)
        self.moving_variance = Parameter(initializer("ones", shape, ms.float32), name="moving_variance",
                                         requires_grad=False)
        self.kernel = _FrozenNormKernel(eps)
        self.bias_add = ops.BiasAdd()
        # `after_conv`'s W * scale, recomputed for the backward instead of kept from the forward
        # (MindSpore's primitive recompute, graph mode): kept, the scaled weights and what their
        # kernel holds raised a training step's peak by 250 MiB (R-101 res5, 512 x 512, batch 2).
        self.to_rows, self.from_rows = ops.Reshape(), ops.Reshape()
        self.scale_rows = ops.BatchNorm(is_training=False, epsilon=_UNIT_EPS)
        for primitive in (self.to_rows, self.scale_rows, self.from_rows):
            primitive.add_prim_attr("recompute", True)  # Primitive.recompute() refuses PyNative mode

    def construct(self, x):
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.eps)
        return self.kernel(x, self.moving_mean, self.moving_variance, self.gamma, self.beta, scale)

    def after_conv(self, conv, x):
        """self(conv(x)) as conv(x, W * scale) + shift (`conv`: an NCHW nn.Conv2d, or one with
        `convolve(x, weight)`). W is still the Parameter that trains: its gradient is the scaled
        weight's times scale, as with the norm after the convolution."""
        scale = self.gamma * ops.rsqrt(self.moving_variance + self.eps)
        shift = self.beta - self.moving_mean * scale
        weight = conv.weight
        outputs = weight.shape[0]
        # W * scale per output channel through the batch-norm kernel (mean 0, variance 1, an epsilon
        # that rounds away: exact): a broadcast Mul on MindSpore 2.8's CPU keeps two int64 offsets
        # per element of its output for the graph's life. Recomputed for the backward (see __init__).
        zeros, ones = ops.zeros_like(scale), ops.ones_like(scale)
        scaled = self.scale_rows(self.to_rows(weight, (1, outputs, -1, 1)), scale, zeros, zeros, ones)[0]
        scaled = self.from_rows(scaled, weight.shape)
        if scaled.dtype != x.dtype:
            scaled = scaled.astype(x.dtype)
        if hasattr(conv, "convolve"):
            out = conv.convolve(x, scaled)
        else:
            out = conv.conv2d(x, scaled)
        if conv.has_bias:
            shift = shift + conv.bias * scale
        return self.bias_add(out, shift.astype(out.dtype))

    def extend_repr(self):
        return f"num_features={self.num_features}, eps={self.eps}, in_conv={self.in_conv}"


FROZEN_BN_IMPLS = ("kernel", "in_conv")


def set_frozen_bn_impl(cell, impl):
    """How every FrozenBatchNorm2d under `cell` runs after its convolution: "kernel" (MindSpore's
    inference batch-norm kernel on the convolution's output) or "in_conv" (inside the
    convolution: weight W * scale, then + shift; see `conv_then_norm`). Same parameters and
    checkpoints either way; results equal to rounding. Returns how many norms were set.

    "in_conv" saves the kernel's pass over each output and, in training, its backward pass over
    the output's gradient: MindSpore 2.8's CPU kernel takes 85 ms on res5's (1024, 2048, 4, 4)
    maps against 27 ms for the BiasAdd that replaces it. On the trunk's large maps the two cost
    the same, and there the scaled weights stay alive for the backward (the lean 3x3 backward
    takes its weight as an input): an R-101 step at 512 x 512, batch 2, peaked at 5,042 MiB
    with every norm inside its convolution, 4,046 with res5's only (docs/benchmark.md)."""
    if impl not in FROZEN_BN_IMPLS:
        raise ValueError(f"frozen BN impl must be one of {', '.join(FROZEN_BN_IMPLS)}, got {impl!r}")
    count = 0
    for _, child in cell.cells_and_names():
        if isinstance(child, FrozenBatchNorm2d):
            child.in_conv = impl == "in_conv"
            count += 1
    return count


def conv_then_norm(conv, norm, x):
    """norm(conv(x)), inside the convolution when `norm` is a FrozenBatchNorm2d set `in_conv` and
    `conv` a plain convolution (not a mixed-precision wrapper, not folded for inference)."""
    if isinstance(norm, FrozenBatchNorm2d) and norm.in_conv and isinstance(conv, nn.Conv2d) \
            and conv.data_format == "NCHW":
        return norm.after_conv(conv, x)
    return norm(conv(x))


def _shortcut(block, x):
    """A block's shortcut: x, or its projection (mindcv's `down_sample`: conv, norm)."""
    if block.down_sample is None:
        return x
    down = block.down_sample
    if isinstance(down, nn.SequentialCell) and len(down) == 2:
        return conv_then_norm(down[0], down[1], x)
    return down(x)


_NORMS = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d}


def _replace_child(parent, name, child, names_from):
    """Put `child` at `parent.<name>` (attribute or SequentialCell index), then give its
    parameters the full names of the same-named parameters of `names_from` (MindSpore renames
    a Cell's parameters relative to the parent it is assigned to)."""
    if isinstance(parent, nn.SequentialCell):
        parent[int(name)] = child
    else:
        setattr(parent, name, child)
    old_names = {attr: param.name for attr, param in names_from.parameters_and_names()}
    for attr, param in child.parameters_and_names():
        param.name = old_names[attr]


def _host_copy(parameter):
    """A new Tensor with `parameter`'s values, copied on the host: a MindSpore copy op would
    leave its cached PyNative kernel, with buffers the size of the tensor, for the rest of the
    process (two of 18 MiB for an R-101's res5 3x3 weight, docs/benchmark.md)."""
    return ms.Tensor(parameter.asnumpy().copy())


def _frozen_copy(bn):
    """FrozenBatchNorm2d with the values of a BatchNorm2d."""
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
        getattr(frozen, attr).set_data(_host_copy(getattr(bn, attr)))
    return frozen


def freeze_cell(cell):
    """Freeze a Cell in place and return it: every parameter gets requires_grad=False and every
    BatchNorm2d inside becomes a FrozenBatchNorm2d holding its statistics (as detectron2 does).
    Parameter names are kept."""
    for name, child in list(cell.name_cells().items()):
        if isinstance(child, nn.BatchNorm2d):
            _replace_child(cell, name, _frozen_copy(child), names_from=child)
        else:
            freeze_cell(child)
    for param in cell.get_parameters():
        param.requires_grad = False
    return cell


class ResNetTrunk(nn.Cell):
    """Stem + res2..res4 (mindcv conv1/bn1/relu/max_pool + layer1..layer3): (B,3,H,W) -> (B,C4,H/16,W/16).

    construct(x, extent=None): with `extent` (B, 2) float32 (see `defrcn.modeling.padding`),
    every map is zeroed outside the extent before the max-pool and before each 3x3
    convolution, so the result inside the extent is what the network gives on an input of
    exactly that size (zero-padded), whatever the canvas.

    Attributes: out_channels (1024 bottleneck, 256 basic), stride (16), freeze_at. Stages up to
    `freeze_at` (1 stem, 2 +res2, 3 +res3, 4 +res4) have no trainable parameters and their output
    is cut from the gradient.
    """

    def __init__(self, resnet, out_channels, freeze_at):
        super().__init__()
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        # torchvision/detectron2 stem pooling: 3x3, stride 2, 1 pixel on every side.
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.out_channels = out_channels
        self.stride = 16
        self.freeze_at = freeze_at

    def construct(self, x, extent=None):
        if extent is None:
            return self._unmasked(x)
        x = self.relu(conv_then_norm(self.conv1, self.bn1, x))
        x = self.max_pool(apply_mask(x, region_mask(extent, x.shape[2], x.shape[3], 2)))
        if self.freeze_at >= 1:
            x = ops.stop_gradient(x)
        x = self._masked_stage(self.layer1, x, extent, 4, 4)
        if self.freeze_at >= 2:
            x = ops.stop_gradient(x)
        x = self._masked_stage(self.layer2, x, extent, 4, 8)
        if self.freeze_at >= 3:
            x = ops.stop_gradient(x)
        x = self._masked_stage(self.layer3, x, extent, 8, 16)
        if self.freeze_at >= 4:
            x = ops.stop_gradient(x)
        return x

    def _unmasked(self, x):
        x = self.max_pool(self.relu(conv_then_norm(self.conv1, self.bn1, x)))
        if self.freeze_at >= 1:
            x = ops.stop_gradient(x)
        x = self.layer1(x)
        if self.freeze_at >= 2:
            x = ops.stop_gradient(x)
        x = self.layer2(x)
        if self.freeze_at >= 3:
            x = ops.stop_gradient(x)
        x = self.layer3(x)
        if self.freeze_at >= 4:
            x = ops.stop_gradient(x)
        return x

    def _masked_stage(self, stage, x, extent, stride_in, stride_out):
        mask_in = region_mask(extent, x.shape[2], x.shape[3], stride_in)
        height, width = _strided(x.shape[2], stride_out // stride_in), _strided(x.shape[3], stride_out // stride_in)
        mask_out = region_mask(extent, height, width, stride_out)
        for block in stage:
            x = _masked_block(block, x, mask_in, mask_out)
            mask_in = mask_out
        return x


def _strided(length, factor):
    return (length + factor - 1) // factor


def _masked_block(block, x, mask_in=None, mask_out=None):
    """A mindcv BasicBlock / Bottleneck forward with an out-of-place residual sum and, given the
    region masks at the block's input and output strides, the input of each 3x3 conv masked."""
    out = _block_branch(block, x, mask_in, mask_out)
    return block.relu(out + _shortcut(block, x))


def _block_branch(block, x, mask_in=None, mask_out=None):
    """The residual branch of a mindcv BasicBlock / Bottleneck, the input of each 3x3 conv
    masked when the masks are given."""
    masked = mask_in is not None
    if isinstance(block, Bottleneck):
        out = block.relu(conv_then_norm(block.conv1, block.bn1, x))
        if masked:
            out = apply_mask(out, mask_in if out.shape[2] == mask_in.shape[2] else mask_out)
        out = block.relu(conv_then_norm(block.conv2, block.bn2, out))
        return conv_then_norm(block.conv3, block.bn3, out)
    out = block.relu(conv_then_norm(block.conv1, block.bn1, apply_mask(x, mask_in) if masked else x))
    return conv_then_norm(block.conv2, block.bn2, apply_mask(out, mask_out) if masked else out)


def residual_stage(stage, x):
    """Run a mindcv ResNet stage (a SequentialCell of blocks) on x, as the stage itself would,
    with `conv_then_norm`.

    mindcv's blocks sum the residual in place (`out += identity`), which MindSpore 2.8's graph
    mode runs as an Add and an Assign copying the sum back: on CPU the copies of res5's
    (1000, 2048, 4, 4) outputs took 83 ms of an R-101 inference. In training the in-place sum
    was once the leaner one (+540 MiB without it, 2 Dec); on 4 Dec an R-101 step at 512 x 512,
    batch 2, peaked at 4,036-4,065 MiB without it, against 4,034-4,056 with mindcv's blocks."""
    for block in stage:
        x = _masked_block(block, x)
    return x


class ResNetRes5(nn.Cell):
    """res5 (mindcv layer4), the C4 box head: (R, C4, 7, 7) -> (R, C5, 4, 4).

    Attributes: out_channels (2048 bottleneck, 512 basic); input_stride: 2 when the stage reads
    its input only at stride 2 (a bottleneck with the stride in the 1x1: conv1 and the shortcut
    are 1x1 convolutions at stride 2). Such a res5 takes the input already sampled, (R, C4, 4, 4)
    = cells 0, 2, 4, 6 of the 7 x 7 grid, and runs those two convolutions at stride 1: the same
    values, and the pooler computes 16 of the 49 bins (`ROIPooler(bin_stride=...)`).
    Parameters are named `layer4.*`.
    """

    def __init__(self, layer4, out_channels, input_stride=1):
        super().__init__()
        self.layer4 = layer4
        self.out_channels = out_channels
        self.input_stride = int(input_stride)

    def construct(self, x):
        return residual_stage(self.layer4, x)


def _move_stride_to_1x1(block):
    """Rebuild a strided Bottleneck's conv1 (1x1) and conv2 (3x3) so conv1 carries the stride;
    weights, parameter names and shapes are kept."""
    conv1, conv2 = block.conv1, block.conv2
    stride = _last(conv2.stride)
    if stride == 1:
        return
    new_conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, kernel_size=1, stride=stride,
                          weight_init=_host_copy(conv1.weight))
    new_conv2 = nn.Conv2d(conv2.in_channels, conv2.out_channels, kernel_size=3, stride=1, padding=1,
                          pad_mode="pad", group=conv2.group, weight_init=_host_copy(conv2.weight))
    _replace_child(block, "conv1", new_conv1, names_from=conv1)
    _replace_child(block, "conv2", new_conv2, names_from=conv2)


def _read_input_unstrided(block):
    """For a Bottleneck whose input is read only by 1x1 convolutions at stride s (conv1 and the
    shortcut): rebuild both at stride 1, for an input already sampled at stride s; return s
    (1 when the block reads its input otherwise). Weights, parameter names and shapes are kept."""
    shortcut = block.down_sample[0] if isinstance(block.down_sample, nn.SequentialCell) else None
    convs = [block.conv1] + ([shortcut] if shortcut is not None else [])
    strides = {_last(conv.stride) for conv in convs}
    if shortcut is None or len(strides) != 1 or any(_last(conv.kernel_size) != 1 or conv.has_bias for conv in convs):
        return 1
    stride = strides.pop()
    if stride == 1:
        return 1
    for parent, name, conv in ((block, "conv1", block.conv1), (block.down_sample, "0", shortcut)):
        unstrided = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=1, stride=1,
                              weight_init=_host_copy(conv.weight))
        _replace_child(parent, name, unstrided, names_from=conv)
    return stride


def _last(value):
    """The width entry of a Conv2d's stride or kernel_size (an int or a tuple)."""
    return value[-1] if isinstance(value, tuple) else value


def build_resnet_c4(depth=101, *, norm="frozen_bn", freeze_at=3, stride_in_1x1=True):
    """Build the C4 backbone from mindcv's ResNet (random init; load weights afterwards).

    Args:
        depth: 18, 34, 50, 101 or 152.
        norm: "frozen_bn" (statistics and affine fixed; DeFRCN) or "bn" (trainable BatchNorm,
            for from-scratch toy training; random init + frozen BN diverges).
        freeze_at: 0 nothing, 1 stem, 2 stem+res2, 3 stem+res2+res3 (DeFRCN), 4 also res4.
        stride_in_1x1: bottleneck stride in the first 1x1 conv (MSRA/detectron2 weights) instead
            of the 3x3 (torchvision/mindcv weights). Ignored for basic blocks.

    Returns:
        (trunk, res5): ResNetTrunk (stride 16) and ResNetRes5, each with `out_channels`.
    """
    if depth not in RESNET_SPECS:
        raise ValueError(f"resnet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
    if not 0 <= freeze_at <= 4:
        raise ValueError(f"freeze_at must be in 0..4, got {freeze_at}")
    block, layers = RESNET_SPECS[depth]
    resnet = ResNet(block, list(layers), norm=_NORMS[norm])
    input_stride = 1
    if stride_in_1x1 and block is Bottleneck:
        for stage in (resnet.layer2, resnet.layer3, resnet.layer4):
            _move_stride_to_1x1(stage[0])
        input_stride = _read_input_unstrided(resnet.layer4[0])

    trunk = ResNetTrunk(resnet, out_channels=256 * block.expansion, freeze_at=freeze_at)
    res5 = ResNetRes5(resnet.layer4, out_channels=512 * block.expansion, input_stride=input_stride)
    stem_and_stages = [("conv1", trunk.conv1), ("bn1", trunk.bn1), ("layer1", trunk.layer1),
                       ("layer2", trunk.layer2), ("layer3", trunk.layer3)]
    if freeze_at >= 1:
        for name, part in stem_and_stages[:freeze_at + 1]:
            if isinstance(part, nn.BatchNorm2d):
                _replace_child(trunk, name, _frozen_copy(part), names_from=part)
            freeze_cell(getattr(trunk, name))
    return trunk, res5
