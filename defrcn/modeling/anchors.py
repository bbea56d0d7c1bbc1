"""Anchors for a single stride-16 feature map (Faster R-CNN C4)."""
import math

import numpy as np
import mindspore as ms
from mindspore import nn, ops

__all__ = ["AnchorGenerator", "make_cell_anchors"]


def make_cell_anchors(sizes, aspect_ratios):
    """Anchors centred at (0, 0): numpy (len(sizes) * len(aspect_ratios), 4) float32, XYXY.

    Order: sizes outer, ratios inner. Ratio = height / width; each anchor has area size^2.
    """
    rows = []
    for size in sizes:
        area = float(size) ** 2
        for ratio in aspect_ratios:
            width = math.sqrt(area / ratio)
            height = ratio * width
            rows.append([-width / 2.0, -height / 2.0, width / 2.0, height / 2.0])
    return np.asarray(rows, dtype=np.float32)


class AnchorGenerator(nn.Cell):
    """Anchors for every position of a feature map, computed in-graph from its static shape.

    construct(feature (B, C, H, W)) -> anchors (H * W * A, 4) float32, ordered (H, W, A):
    row (y * W + x) * A + a is cell anchor a shifted to (x * stride + offset * stride,
    y * stride + offset * stride). This matches a head output (B, A, H, W) transposed to
    (B, H, W, A) and flattened.
    """

    def __init__(self, sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
                 stride=16, offset=0.0):
        super().__init__()
        self.stride = float(stride)
        self.offset = float(offset)
        cell = make_cell_anchors(sizes, aspect_ratios)
        self.num_anchors = int(cell.shape[0])
        self.cell_anchors = ms.Tensor(cell)

    def construct(self, feature):
        height, width = feature.shape[2], feature.shape[3]
        start = self.offset * self.stride
        shift_x = ops.arange(0, width, dtype=ms.float32) * self.stride + start
        shift_y = ops.arange(0, height, dtype=ms.float32) * self.stride + start
        grid_x = ops.broadcast_to(shift_x.reshape(1, width), (height, width)).reshape(-1)
        grid_y = ops.broadcast_to(shift_y.reshape(height, 1), (height, width)).reshape(-1)
        shifts = ops.stack([grid_x, grid_y, grid_x, grid_y], axis=1)
        anchors = shifts.reshape(-1, 1, 4) + self.cell_anchors.reshape(1, -1, 4)
        return anchors.reshape(-1, 4)
