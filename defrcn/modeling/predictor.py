"""Box predictor of the ROI heads: classifier (C+1) and class-specific box deltas (4C).

Parameter names (`cls_score`, `bbox_pred`) are the ones checkpoint surgery edits.
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore.common.initializer import Normal, Zero

from defrcn.modeling.random_keys import hash_uniform_at

# Salt offset of the dropout stream: the samplers use 7919 * rank + (0 .. 2 * batch), far below.
DROPOUT_SALT = 7000


class BoxPredictor(nn.Cell):
    """Linear classifier and box regressor over pooled RoI features.

    Args:
        in_channels: feature size per RoI (2048 for ResNet-50/101 res5).
        num_classes: foreground classes C; the background score is the last column.
        cls_dropout: drop probability applied to the classifier's input only
            (DeFRCN fine-tuning uses 0.8; 0 disables it). The mask is drawn from
            counter-based keys of (training step, salt), not from MindSpore's hidden
            RNG state, so a resumed fine-tune draws the same masks as an uninterrupted one.
        sample_salt: separates the dropout streams of data-parallel ranks.
    """

    def __init__(self, in_channels, num_classes, *, cls_dropout=0.0, sample_salt=0):
        super().__init__()
        if not 0.0 <= cls_dropout < 1.0:
            raise ValueError(f"cls_dropout must be in [0, 1), got {cls_dropout}")
        self.num_classes = num_classes
        # init as the original fast_rcnn.py: cls N(0, 0.01), box N(0, 0.001), biases 0
        self.cls_score = nn.Dense(in_channels, num_classes + 1, weight_init=Normal(0.01), bias_init=Zero())
        self.bbox_pred = nn.Dense(in_channels, 4 * num_classes, weight_init=Normal(0.001), bias_init=Zero())
        self.cls_dropout = float(cls_dropout)
        self.use_dropout = cls_dropout > 0
        self.dropout_salt = 7919 * sample_salt + DROPOUT_SALT

    def dropout_mask(self, shape, step):
        """Float mask of `shape` (rows, channels): 0 for dropped entries, 1 / (1 - p) for kept
        ones (torch.nn.Dropout's scaling), a function of (step, salt) only."""
        rows, channels = shape
        index = ops.arange(0, rows * channels, dtype=ms.int32).reshape(rows, channels)
        keys = hash_uniform_at(index, step, self.dropout_salt)
        keep = (keys >= self.cls_dropout).astype(ms.float32)
        return keep * (1.0 / (1.0 - self.cls_dropout))

    def construct(self, features, step=None):
        """features (R, in_channels) -> (scores (R, C+1), deltas (R, 4C)). `step` (the
        detector's training-step counter) keys the dropout mask in training."""
        cls_in = features
        if self.training and self.use_dropout:
            if step is None:
                step = ops.zeros((), ms.int32)
            cls_in = features * self.dropout_mask(features.shape, step)
        return self.cls_score(cls_in), self.bbox_pred(features)
