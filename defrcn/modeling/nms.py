"""Static-shape non-maximum suppression around `ops.NMSWithMask`, exact at any box count.

`ops.NMSWithMask` sorts its (N, 5) input by the score column and returns the keep mask in
that sorted order (checked on CPU in MindSpore 2.8.0; its returned indices are positions
in the sorted list, not in the input). On Ascend it takes at most 2864 boxes and ignores the
score column, keeping input order (mindspore.ops.NMSWithMask, "Supported Platforms" notes).
The helpers here therefore sort first and pass the rank as the score, so the mask lines up
with the sorted input on every device, ties included. A box is suppressed when its IoU (no
+1) with a kept higher-scored box is > iou_threshold, as in torchvision.

More than `block_size` sorted boxes run in blocks of at most `block_size`: the boxes of a
block that overlap an already-kept box are removed (an IoU matrix block x kept, the kept
set capped at the output count), then greedy NMS runs inside the block over the rest. A
box's fate in greedy NMS depends only on the kept boxes above it, which are those earlier
blocks kept plus those its own block keeps before it, so this equals one global greedy NMS.
Once the cap is reached later blocks cannot change the first `max_out` kept boxes.
"""
import math

import mindspore as ms
from mindspore import ops

from defrcn.modeling.boxes import pairwise_iou

__all__ = ["NMS_BLOCK", "EXCLUDED_SCORE", "nms_block_for_device", "nms_keep_mask_sorted", "first_kept_positions", "nms_sorted", "nms", "batched_nms"]

NMS_BLOCK = 2864  # the most boxes ops.NMSWithMask takes at once on Ascend
UNBLOCKED = 1 << 30  # one NMSWithMask call at any box count


def nms_block_for_device(device=None):
    """The block size NMS needs on `device` (default: MindSpore's device target): NMS_BLOCK on
    Ascend; CPU and GPU take any count in one call, which at R-101 inference holds 1.6 GiB
    less than blocks of 2864 and compiles faster (docs/benchmark.md)."""
    device = device or ms.get_context("device_target")
    return NMS_BLOCK if device == "Ascend" else UNBLOCKED


# Score of boxes that take no part: finite, because TopK's handling of -inf is undocumented
# (GPU TopK has returned index -1 among many tied -inf values, MindSpore 2.2 bug reports).
EXCLUDED_SCORE = -1.0e30


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


def _block_keep(boxes, usable, iou_threshold):
    """Greedy keep mask over the usable ones of sorted boxes (n <= block): unusable boxes
    become empty boxes at the origin (IoU 0 with everything), so they suppress nothing."""
    candidates = ops.where(usable.reshape(-1, 1), boxes, ops.zeros_like(boxes))
    return ops.logical_and(nms_keep_mask_sorted(candidates, iou_threshold), usable)


def nms_sorted(boxes, usable, iou_threshold, max_out, block_size=NMS_BLOCK):
    """Greedy NMS over boxes (N, 4) sorted by decreasing score; `usable` (N,) bool marks the
    boxes that take part (the others are neither kept nor suppress).

    Returns (positions (max_out,) int32 into N of the first `max_out` kept boxes, in order,
    0 in padded slots; valid (max_out,) bool). Exactly greedy NMS for any N (module doc)."""
    boxes = ops.stop_gradient(boxes).astype(ms.float32)
    usable = usable.astype(ms.bool_)
    num_boxes = boxes.shape[0]
    if num_boxes <= block_size:
        return first_kept_positions(_block_keep(boxes, usable, iou_threshold), max_out)
    num_blocks = math.ceil(num_boxes / block_size)
    pad = num_blocks * block_size - num_boxes
    if pad:
        boxes = ops.concat([boxes, ops.zeros((pad, 4), ms.float32)])
        usable = ops.concat([usable, ops.zeros((pad,), ms.bool_)])
    slots = ops.arange(0, max_out, dtype=ms.float32).reshape(1, -1)
    kept_boxes = ops.zeros((max_out, 4), ms.float32)
    kept_valid = ops.zeros((max_out,), ms.float32)
    kept_count = ops.zeros((), ms.float32)
    masks = []
    for block in range(num_blocks):
        part = boxes[block * block_size:(block + 1) * block_size]
        part_usable = usable[block * block_size:(block + 1) * block_size]
        overlaps = (pairwise_iou(part, kept_boxes) > iou_threshold).astype(ms.float32)
        suppressed = (overlaps * kept_valid.reshape(1, -1)).max(axis=1) > 0
        keep = _block_keep(part, ops.logical_and(part_usable, ops.logical_not(suppressed)), iou_threshold)
        masks.append(keep)
        # append this block's kept boxes to the kept set, in order, at slots count.. (capped)
        keep_f = keep.astype(ms.float32)
        slot = kept_count + ops.cumsum(keep_f, 0) - 1.0
        placement = (slot.reshape(-1, 1) == slots).astype(ms.float32) * keep_f.reshape(-1, 1)
        kept_boxes = kept_boxes + ops.matmul(placement.transpose(), part)
        kept_valid = ops.maximum(kept_valid, placement.max(axis=0))
        kept_count = kept_count + keep_f.sum()
    keep_all = ops.concat(masks)[:num_boxes]
    return first_kept_positions(keep_all, max_out)


def nms(boxes, scores, iou_threshold, max_out, valid=None, block_size=NMS_BLOCK):
    """NMS with a fixed output count.

    Args:
        boxes (N, 4) XYXY, scores (N,), valid (N,) bool or None: invalid boxes are never
        kept and never suppress a valid one. block_size: see `nms_sorted`.

    Returns:
        indices (max_out,) int32 into N, by decreasing score (0 in padded slots);
        valid (max_out,) bool.
    """
    scores = ops.stop_gradient(scores).astype(ms.float32)
    if valid is not None:
        scores = ops.where(valid.astype(ms.bool_), scores, ops.full_like(scores, EXCLUDED_SCORE))
    # TopK rather than Sort: its docs list float32 on Ascend (Sort warns of accuracy loss)
    # and a documented tie order, the smaller index first
    sorted_scores, order = ops.topk(scores, scores.shape[0])
    order = order.astype(ms.int32)
    positions, out_valid = nms_sorted(boxes[order], sorted_scores > EXCLUDED_SCORE, iou_threshold, max_out,
                                      block_size)
    indices = order[positions]
    return ops.where(out_valid, indices, ops.zeros_like(indices)), out_valid


def batched_nms(boxes, scores, classes, iou_threshold, max_out, valid=None, block_size=NMS_BLOCK):
    """Per-class NMS (boxes of different classes never suppress each other).

    Shifts each class's boxes by class * (max coordinate + 1) so classes cannot overlap,
    then runs `nms`. boxes (N, 4), scores (N,), classes (N,) int, valid (N,) bool or None.
    Returns indices (max_out,) int32 into N by decreasing score, valid (max_out,) bool.
    """
    boxes = ops.stop_gradient(boxes).astype(ms.float32)
    span = boxes.max() - ops.minimum(boxes.min(), 0.0) + 1.0
    shifted = boxes + (classes.astype(ms.float32) * span).reshape(-1, 1)
    return nms(shifted, scores, iou_threshold, max_out, valid, block_size)
