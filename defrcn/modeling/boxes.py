"""Box maths on MindSpore tensors (XYXY, absolute pixels, no +1 in widths).

Every function is static-shape and works in GRAPH and PyNative mode on any device.
"""
from mindspore import ops

from defrcn.modeling.broadcast import expand_all

__all__ = ["box_areas", "pairwise_iou", "clip_boxes", "nonempty_mask"]

# Smallest union area divided by (square pixels): only guards 0 / 0 for empty boxes.
_MIN_UNION = 1e-6

# The same IEEE division as `/`; MindSpore 2.8's CPU `Div` kernel kept 16 bytes per element of
# the (N, M) IoU in the training graph (defrcn.modeling.broadcast), `RealDiv` nothing.
_divide = ops.RealDiv()


def box_areas(boxes):
    """Areas of boxes (..., 4) -> (...); width = x1 - x0, height = y1 - y0."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(boxes1, boxes2):
    """IoU of every pair: boxes1 (N, 4), boxes2 (M, 4) -> (N, M) float.

    Pairs that do not overlap (including empty boxes) get 0. The intersection is
    min(ends) - max(starts) per axis, as detectron2's `pairwise_intersection`; every
    (N, M) op runs on equal shapes (`expand_all`: a broadcast op would keep 4 x its output).
    """
    x0a, y0a, x1a, y1a = [boxes1[:, i].reshape(-1, 1) for i in range(4)]
    x0b, y0b, x1b, y1b = [boxes2[:, i].reshape(1, -1) for i in range(4)]
    width = ops.relu(ops.minimum(*expand_all(x1a, x1b)) - ops.maximum(*expand_all(x0a, x0b)))
    height = ops.relu(ops.minimum(*expand_all(y1a, y1b)) - ops.maximum(*expand_all(y0a, y0b)))
    inter = width * height
    area_a, area_b = expand_all(box_areas(boxes1).reshape(-1, 1), box_areas(boxes2).reshape(1, -1))
    union = (area_a + area_b) - inter
    # inter > 0 implies both boxes are non-empty, so union >= inter > 0 there; elsewhere
    # inter is 0 and the clamp only keeps the division finite (for empty boxes).
    return _divide(inter, ops.clamp(union, min=_MIN_UNION))


def clip_boxes(boxes, height, width):
    """Clip boxes (..., 4) into [0, width] x [0, height].

    `height` and `width` are Python numbers or tensors broadcastable to boxes[..., 0]
    (e.g. shape (B, 1) for boxes (B, K, 4)).
    """
    x0 = ops.minimum(ops.clamp(boxes[..., 0], min=0.0), width)
    y0 = ops.minimum(ops.clamp(boxes[..., 1], min=0.0), height)
    x1 = ops.minimum(ops.clamp(boxes[..., 2], min=0.0), width)
    y1 = ops.minimum(ops.clamp(boxes[..., 3], min=0.0), height)
    return ops.stack([x0, y0, x1, y1], axis=-1)


def nonempty_mask(boxes, threshold=0.0):
    """Bool mask (...) of boxes (..., 4) whose width and height both exceed `threshold`."""
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return ops.logical_and(widths > threshold, heights > threshold)
