"""Gradient Decoupled Layer (DeFRCN, Qiao et al. 2021, section 3.2).

res4 feature -> GradientDecoupledLayer(lambda) -> ChannelAffine -> head; the detector has two
separate branches, one for the RPN (lambda 0 in every DeFRCN config) and one for the RoI head
(0.75 base training; 0.01 COCO / 0.001 VOC fine-tuning).
"""

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter
from mindspore.common.initializer import initializer

__all__ = ["GradientDecoupledLayer", "ChannelAffine", "DecoupledBranch"]


class GradientDecoupledLayer(nn.Cell):
    """Identity forward; backward multiplies the incoming gradient by `scale`.

    scale 0 returns exact zeros (not 0 * gradient, which would turn inf into NaN).
    Works in GRAPH_MODE and PYNATIVE_MODE (custom bprop).
    """

    def __init__(self, scale):
        super().__init__()
        self.scale = float(scale)

    def construct(self, x):
        return x

    def bprop(self, x, out, dout):
        if self.scale == 0.0:
            return (ops.zeros_like(dout),)
        return (dout * self.scale,)

    def extend_repr(self):
        return f"scale={self.scale}"


class ChannelAffine(nn.Cell):
    """Learnable per-channel y = x * weight + bias over NCHW; weight (C,) init 1, bias (C,) init 0.

    Named `weight`/`bias` so optimiser groups treat the bias as a bias (DeFRCN's AffineLayer
    stores them as (1, C, 1, 1); reshape when converting its checkpoints).
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.weight = Parameter(initializer("ones", (channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (channels,), ms.float32), name="bias")

    def construct(self, x):
        return x * self.weight.reshape((1, -1, 1, 1)) + self.bias.reshape((1, -1, 1, 1))

    def extend_repr(self):
        return f"channels={self.channels}"


class DecoupledBranch(nn.Cell):
    """GradientDecoupledLayer(scale) then ChannelAffine(channels): (B, C, H, W) -> (B, C, H, W).

    The affine parameters get their full gradient; only what flows back into the input is scaled.
    """

    def __init__(self, channels, scale):
        super().__init__()
        self.gdl = GradientDecoupledLayer(scale)
        self.affine = ChannelAffine(channels)

    def construct(self, x):
        return self.affine(self.gdl(x))
