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

    Written as stop_gradient(x) + (x * scale - stop_gradient(x * scale)): the bracket is exactly
    0 for finite x, and only x * scale carries a gradient. scale 0 is stop_gradient(x): exact
    zeros (not 0 * gradient, which would turn inf into NaN). A Cell `bprop` would be shorter,
    but MindSpore 2.8 may run one instance's bprop for another instance of the class after a
    PyNative run, which gave every GDL the first one's scale.
    """

    def __init__(self, scale):
        super().__init__()
        self.scale = float(scale)

    def construct(self, x):
        if self.scale == 0.0:
            return ops.stop_gradient(x)
        if self.scale == 1.0:
            return x
        scaled = x * self.scale
        return ops.stop_gradient(x) + (scaled - ops.stop_gradient(scaled))

    def extend_repr(self):
        return f"scale={self.scale}"


class ChannelAffine(nn.Cell):
    """Learnable per-channel y = x * weight + bias over NCHW; weight (C,) init 1, bias (C,) init 0.

    Named `weight`/`bias` so optimiser groups treat the bias as a bias (DeFRCN's AffineLayer
    stores them as (1, C, 1, 1); reshape when converting its checkpoints).

    The forward is MindSpore's inference batch-norm kernel with mean 0, variance 1 and an
    epsilon that rounds away in float32 (1 + 1e-12 == 1), which is exactly x * weight + bias.
    Written as a broadcast Mul and Add, a training step on MindSpore 2.8's CPU held about 12
    extra maps per affine (two affines on res4's output; 400 MiB each at 800 x 1333, batch 2).
    Its backward gives the weight and bias gradients with is_training=False (tested on CPU;
    CANN's aclnnBatchNormBackward documents them for Ascend).
    """

    _EPS = 1e-12

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        self.weight = Parameter(initializer("ones", (channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer("zeros", (channels,), ms.float32), name="bias")

    def construct(self, x):
        return ops.batch_norm(x, ops.zeros_like(self.weight), ops.ones_like(self.weight), self.weight,
                              self.bias, False, 0.1, self._EPS)

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
