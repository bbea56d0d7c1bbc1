"""Box predictor of the ROI heads: classifier (C+1) and class-specific box deltas (4C).

Parameter names (`cls_score`, `bbox_pred`) are the ones checkpoint surgery edits.
"""
import mindspore.nn as nn
from mindspore.common.initializer import Normal, Zero


class BoxPredictor(nn.Cell):
    """Linear classifier and box regressor over pooled RoI features.

    Args:
        in_channels: feature size per RoI (2048 for ResNet-50/101 res5).
        num_classes: foreground classes C; the background score is the last column.
        cls_dropout: drop probability applied to the classifier's input only
            (DeFRCN fine-tuning uses 0.8; 0 disables it).
    """

    def __init__(self, in_channels, num_classes, *, cls_dropout=0.0):
        super().__init__()
        self.num_classes = num_classes
        # init as the original fast_rcnn.py: cls N(0, 0.01), box N(0, 0.001), biases 0
        self.cls_score = nn.Dense(in_channels, num_classes + 1, weight_init=Normal(0.01), bias_init=Zero())
        self.bbox_pred = nn.Dense(in_channels, 4 * num_classes, weight_init=Normal(0.001), bias_init=Zero())
        self.use_dropout = cls_dropout > 0
        self.dropout = nn.Dropout(p=cls_dropout) if self.use_dropout else nn.Identity()

    def construct(self, features):
        """features (R, in_channels) -> (scores (R, C+1), deltas (R, 4C))."""
        cls_in = self.dropout(features)
        return self.cls_score(cls_in), self.bbox_pred(features)
