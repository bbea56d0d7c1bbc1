"""3x3 convolutions (stride 1, padding 1) on 4x4 maps as Winograd F(4x4, 3x3) matmuls.

res5 of the C4 box head runs its 3x3 convolutions on the 4x4 maps of hundreds of RoIs. A
whole 4x4 map is one Winograd F(4x4, 3x3) tile (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", CVPR 2016, section 4): its 6x6 input tile is the map with
its one-pixel zero padding, so the padding folds into the input transform and the
convolution becomes three matmuls with no pad or slice:

    V = X (R*C, 16) @ T_in (16, 36)             the input transform of every map
    M = V (36, R, C) @ U (36, C, O)             one matmul per transform point
    Y = M (R*O, 36) @ T_out (36, 16)            the output transform

with U the transformed weights (36, C, O) = W (O*C, 9) @ T_w (9, 36), computed in the graph
from the standard (O, C, 3, 3) weight, so checkpoints and gradients are those of the
convolution. 36 multiplies per output pixel pair instead of 144. Inputs of any other size
take the stock convolution.
"""
import numpy as np

import mindspore as ms
from mindspore import Tensor, nn, ops

__all__ = ["RES5_CONVS", "WinogradConv2d", "winograd_matrices", "use_winograd", "resolve_res5_conv"]

# Lavin & Gray's F(4, 3) at the points 0, 1, -1, 2, -2, infinity.
_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)
MAP_SIDE = 4
RES5_CONVS = ("auto", "direct", "winograd")


def resolve_res5_conv(choice, device=None):
    """"direct" or "winograd" for the setting `choice` on `device` (default: MindSpore's target).

    "auto" is Winograd on CPU, where MindSpore's Conv2D on 4x4 maps is the slowest op of res5
    and the matmuls are 4x faster (docs/benchmark.md, per-op profile); GPU and Ascend keep their
    own convolution kernels, which pick their algorithms themselves and run float16 under amp,
    where Winograd's transforms lose more precision."""
    if choice not in RES5_CONVS:
        raise ValueError(f"res5_conv must be one of {', '.join(RES5_CONVS)}, got {choice!r}")
    if choice != "auto":
        return choice
    return "winograd" if (device or ms.get_context("device_target")) == "CPU" else "direct"


def winograd_matrices():
    """(T_in (16, 36), T_w (9, 36), T_out (36, 16)) float64: the 2-D transforms of flattened
    4x4 maps (their zero padding folded in), 3x3 kernels and 6x6 products."""
    inner = _BT[:, 1:1 + MAP_SIDE]  # the padded tile's border rows and columns are zero
    return np.kron(inner, inner).T, np.kron(_G, _G).T, np.kron(_AT, _AT).T


class WinogradConv2d(nn.Conv2d):
    """A 3x3, stride-1, padding-1 `nn.Conv2d` (same parameters) that runs 4x4 inputs as
    Winograd F(4x4, 3x3) matmuls; other input sizes run the stock convolution."""

    def __init__(self, in_channels, out_channels, *, has_bias=False, weight_init=None):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=1, pad_mode="pad", padding=1,
                         has_bias=has_bias, weight_init=weight_init if weight_init is not None else "normal")
        t_in, t_w, t_out = winograd_matrices()
        self.t_in_t = Tensor(t_in.T, ms.float32)  # (36, 16)
        self.t_w_t = Tensor(t_w.T, ms.float32)  # (36, 9)
        self.t_out = Tensor(t_out, ms.float32)  # (36, 16)
        self.matmul_nt = ops.MatMul(transpose_b=True)
        self.matmul_tn = ops.MatMul(transpose_a=True)
        self.bmm_nt = ops.BatchMatMul(transpose_b=True)

    def construct(self, x):
        out = self.convolve(x, self.weight)
        if self.has_bias:
            out = self.bias_add(out, self.bias)
        return out

    def convolve(self, x, weight):
        """The convolution of x with `weight` (this layer's shape), without the bias."""
        if x.shape[2] != MAP_SIDE or x.shape[3] != MAP_SIDE:
            return self.conv2d(x, weight)
        return self._winograd(x, weight)

    def _winograd(self, x, weight):
        rois, channels, outputs = x.shape[0], x.shape[1], self.out_channels
        dtype = x.dtype
        # Transposed operands are the matmuls' flags, not Transpose ops, whose CPU kernel holds
        # twice its tensor (see defrcn.modeling.roi_align.swap_last_two_axes).
        v = self.matmul_nt(self.t_in_t.astype(dtype), x.reshape(rois * channels, 16))  # (36, R*C)
        u = self.matmul_nt(self.t_w_t.astype(dtype), weight.astype(dtype).reshape(outputs * channels, 9))
        m = self.bmm_nt(v.reshape(36, rois, channels), u.reshape(36, outputs, channels))  # (36, R, O)
        y = self.matmul_tn(m.reshape(36, rois * outputs), self.t_out.astype(dtype))  # (R*O, 16)
        return y.reshape(rois, outputs, MAP_SIDE, MAP_SIDE)


def _is_plain_3x3(conv):
    stride = conv.stride if isinstance(conv.stride, tuple) else (conv.stride,)
    padding = conv.padding if isinstance(conv.padding, tuple) else (conv.padding,)
    return (tuple(conv.kernel_size) == (3, 3) and set(stride) == {1} and set(padding) == {1}
            and conv.pad_mode == "pad" and conv.group == 1 and tuple(conv.dilation) in ((1, 1), (1, 1, 1, 1)))


def use_winograd(cell):
    """Replace every stride-1, padding-1 3x3 nn.Conv2d under `cell` by a WinogradConv2d holding
    the same Parameter objects (names, values, requires_grad); returns how many."""
    count = 0
    for name, child in list(cell.name_cells().items()):
        if type(child) is nn.Conv2d and _is_plain_3x3(child):
            new = WinogradConv2d(child.in_channels, child.out_channels, has_bias=child.has_bias)
            new.weight = child.weight
            if child.has_bias:
                new.bias = child.bias
            if isinstance(cell, nn.SequentialCell):
                cell[int(name)] = new
            else:
                setattr(cell, name, new)
            count += 1
        else:
            count += use_winograd(child)
    return count
