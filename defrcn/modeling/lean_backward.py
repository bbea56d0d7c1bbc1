"""3x3 convolutions (stride 1, padding 1) whose backward keeps only their input.

MindSpore 2.8's CPU kernels for a 3x3 convolution's backward (Conv2DBackpropInput and
Conv2DBackpropFilter, oneDNN `gemm:jit` on NCHW) each keep an im2col buffer of nine times
the input for as long as the compiled graph lives, so a training graph holds about 18 maps
per 3x3 convolution where PyTorch keeps one (docs/benchmark.md, "Training memory"). The
backward here is written with forward convolutions and one batched matmul, whose buffers
are the graph's ordinary tensors, freed after use:

    dx = conv(dout, W flipped and transposed)                    (padding 1)
    cols = conv(x, one-hot 3x3 kernels, groups = C)              (B, 9C, H, W): im2col
    dW = sum over the batch of dout (B, O, HW) @ cols (B, 9C, HW)^T

Measured on a chain of 3x3 convolutions (2 x 256 x 50 x 84, graph mode, CPU): 147 MiB per
layer with the stock backward, 10 MiB with this one, in the same time. The im2col is made
only once `dout` exists (`ops.depend`): scheduled early, every layer's would be alive at once.

The result equals the stock gradients to rounding, not bit for bit. cols and dW are
(B, 9C, H, W) and (B, O, 9C): meant for a few large maps (the trunk, the RPN head), not for
res5's 4x4 maps of hundreds of RoIs.
"""
import numpy as np

import mindspore as ms
from mindspore import Tensor, mint, nn, ops

__all__ = ["LeanBackwardConv2d", "use_lean_backward", "CONV_BACKWARDS", "lean_backward_for_device"]

CONV_BACKWARDS = ("auto", "stock", "lean")


def lean_backward_for_device(device=None):
    """True where the stock 3x3 backward holds im2col buffers (CPU); GPU and Ascend keep theirs."""
    device = device or ms.get_context("device_target")
    return device == "CPU"


def _unfold_kernels(channels):
    """(9C, 1, 3, 3) one-hot kernels: output channel c*9 + 3*kh + kw copies input channel c
    shifted by (kh - 1, kw - 1)."""
    kernels = np.zeros((9 * channels, 1, 3, 3), np.float32)
    for offset in range(9):
        kernels[offset::9, 0, offset // 3, offset % 3] = 1.0
    return kernels


# The nine taps of a 3x3 kernel (row-major) in reverse order: the kernel rotated by 180 degrees.
_REVERSED_TAPS = Tensor(np.arange(8, -1, -1, dtype=np.int32))


def _flipped_transposed(weight):
    """(O, C, 3, 3) -> (C, O, 3, 3) with each kernel rotated by 180 degrees: the weight of the
    convolution that gives the input's gradient.

    The rotation is a gather of the nine taps, not `ops.flip`: MindSpore 2.8's CPU ReverseV2 took
    114 ms of a training step on the RPN head's 1024 x 1024 x 3 x 3 weight (one-op probe,
    permute included: 167-219 ms against 60-87 ms for this). The transpose is `mint.permute`, not
    Transpose: MindSpore 2.8's CPU Transpose kernel keeps a table of 8 bytes per element for the
    graph's life."""
    outputs, channels = weight.shape[0], weight.shape[1]
    taps = mint.permute(weight.reshape(outputs, channels, 9), (1, 0, 2))
    return ops.gather(taps, _REVERSED_TAPS, 2).reshape(channels, outputs, 3, 3)


class _LeanConv3x3(nn.Cell):
    """conv(x, w) with the backward above. Everything the backward needs is an input, never an
    attribute: MindSpore 2.8 can run one instance's bprop for another (see
    `defrcn.modeling.gdl.GradientDecoupledLayer`)."""

    def __init__(self):
        super().__init__()
        self.bmm_nt = ops.BatchMatMul(transpose_b=True)

    def construct(self, x, weight, unfold):
        return ops.conv2d(x, weight, pad_mode="pad", padding=1)

    def bprop(self, x, weight, unfold, out, dout):
        batch, channels, height, width = x.shape
        outputs = dout.shape[1]
        # the rotated weight formed once `dout` exists (`ops.depend`): left to the scheduler, an
        # R-101 step at 800 x 1333, batch 2, peaked at 6.1-6.2 GiB against 5.7
        flipped = _flipped_transposed(ops.depend(weight, dout))
        dx = ops.Conv2D(channels, 3, pad_mode="pad", pad=1)(dout, flipped)
        cols = ops.Conv2D(9 * channels, 3, pad_mode="pad", pad=1, group=channels)(ops.depend(x, dout), unfold)
        dw = self.bmm_nt(dout.reshape(batch, outputs, height * width),
                         cols.reshape(batch, 9 * channels, height * width)).sum(0)
        return dx.astype(x.dtype), dw.reshape(outputs, channels, 3, 3).astype(weight.dtype), ops.zeros_like(unfold)


class LeanBackwardConv2d(nn.Conv2d):
    """A 3x3, stride-1, padding-1 `nn.Conv2d` (same parameters) whose backward keeps only its
    input (module docstring)."""

    def __init__(self, in_channels, out_channels, *, has_bias=False, weight_init=None):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=1, pad_mode="pad", padding=1,
                         has_bias=has_bias, weight_init=weight_init if weight_init is not None else "normal",
                         bias_init="zeros")
        self.unfold = Tensor(_unfold_kernels(in_channels))
        self.kernel = _LeanConv3x3()

    def convolve(self, x, weight):
        """The convolution of x with `weight` (this layer's shape), without the bias."""
        # the cast is explicit so that its backward returns the weight's gradient in the
        # weight's dtype under mixed precision (a Cell's own input casts do not)
        return self.kernel(x, weight.astype(x.dtype), self.unfold.astype(x.dtype))

    def construct(self, x):
        out = self.convolve(x, self.weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out


def _is_plain_3x3(conv):
    stride = conv.stride if isinstance(conv.stride, tuple) else (conv.stride,)
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    return (tuple(conv.kernel_size) == (3, 3) and set(stride) == {1} and set(padding) == {1}
            and conv.pad_mode == "pad" and conv.group == 1 and conv.data_format == "NCHW"
            and tuple(conv.dilation) in ((1, 1), (1, 1, 1, 1)))


def use_lean_backward(cell):
    """Replace every trainable stride-1, padding-1 3x3 nn.Conv2d under `cell` by a
    LeanBackwardConv2d holding the same Parameter objects; returns how many. Frozen ones
    have no weight gradient to compute and stay as they are."""
    count = 0
    for name, child in list(cell.name_cells().items()):
        if type(child) is nn.Conv2d and _is_plain_3x3(child):
            if not child.weight.requires_grad:
                continue
            # zeros: no draw from the global seed's stream, so the layers built after this
            # initialise as they would without it
            new = LeanBackwardConv2d(child.in_channels, child.out_channels, has_bias=child.has_bias,
                                     weight_init="zeros")
            names = {attr: param.name for attr, param in child.parameters_and_names()}
            new.weight = child.weight
            if child.has_bias:
                new.bias = child.bias
            if isinstance(cell, nn.SequentialCell):
                cell[int(name)] = new
            else:
                setattr(cell, name, new)
            for attr, param in new.parameters_and_names():  # MindSpore renamed them for the new parent
                param.name = names[attr]
            count += 1
        else:
            count += use_lean_backward(child)
    return count
