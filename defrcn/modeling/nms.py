"""Static-shape non-maximum suppression around `ops.NMSWithMask`.

`ops.NMSWithMask` sorts its (N, 5) input by the score column and returns the keep mask in
that sorted order (checked on CPU in MindSpore 2.8.0; its returned indices are positions
in the sorted list, not in the input). The helpers here therefore sort first and pass the
rank as the score, so the mask lines up with the sorted input on every device, ties
included. A box is suppressed when its IoU (no +1) with a kept higher-scored box is
> iou_threshold, as in torchvision.
"""
import mindspore as ms
from mindspore import ops

__all__ = ["nms_keep_mask_sorted", "first_kept_positions", "nms", "batched_nms"]


def nms_keep_mask_sorted(boxes, iou_threshold):
    """Keep mask (N,) bool for boxes (N, 4) already sorted by decreasing score."""
    num_boxes = boxes.shape[0]
    rank_score = ops.arange(num_boxes, 0, -1, dtype=ms.float32).reshape(-1, 1)
    with_score = ops.concat([ops.stop_gradient(boxes).astype(ms.float32), rank_score], axis=1)
    _, _, keep = ops.NMSWithMask(float(iou_threshold))(with_score)
    return keep


def first_kept_positions(keep, max_out):
    """Positions of the first `max_out` True entries of keep (N,), in order; validity mask."""
    num_boxes = keep.shape[0]
    take = min(max_out, num_boxes)
    rank_key = ops.arange(num_boxes, 0, -1, dtype=ms.float32)
    key = ops.where(keep, rank_key, ops.zeros_like(rank_key))
    top_key, positions = ops.topk(key, take)
    valid = top_key > 0
    positions = positions.astype(ms.int32)
    if take < max_out:
        pad = max_out - take
        positions = ops.concat([positions, ops.zeros((pad,), ms.int32)])
        valid = ops.concat([valid, ops.zeros((pad,), ms.bool_)])
    return ops.where(valid, positions, ops.zeros_like(positions)), valid


def nms(boxes, scores, iou_threshold, max_out, valid=None):
    """NMS with a fixed output count.

    Args:
        boxes (N, 4) XYXY, scores (N,), valid (N,) bool or None: invalid boxes are never
        kept and never suppress a valid one.

    Returns:
        indices (max_out,) int32 into N, by decreasing score (0 in padded slots);
        valid (max_out,) bool.
    """
    scores = ops.stop_gradient(scores).astype(ms.float32)
    if valid is not None:
        scores = ops.where(valid.astype(ms.bool_), scores, ops.full_like(scores, float("-inf")))
    order = ops.sort(scores, descending=True)[1].astype(ms.int32)
    keep = nms_keep_mask_sorted(boxes[order], iou_threshold)
    keep = ops.logical_and(keep, scores[order] > float("-inf"))
    positions, out_valid = first_kept_positions(keep, max_out)
    indices = order[positions]
    return ops.where(out_valid, indices, ops.zeros_like(indices)), out_valid


def batched_nms(boxes, scores, classes, iou_threshold, max_out, valid=None):
    """Per-class NMS (boxes of different classes never suppress each other).

    Shifts each class's boxes by class * (max coordinate + 1) so classes cannot overlap,
    then runs `nms`. boxes (N, 4), scores (N,), classes (N,) int, valid (N,) bool or None.
    Returns indices (max_out,) int32 into N by decreasing score, valid (max_out,) bool.
    """
    boxes = ops.stop_gradient(boxes).astype(ms.float32)
    span = boxes.max() - ops.minimum(boxes.min(), 0.0) + 1.0
    shifted = boxes + (classes.astype(ms.float32) * span).reshape(-1, 1)
    return nms(shifted, scores, iou_threshold, max_out, valid)
