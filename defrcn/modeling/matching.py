"""Assign each prediction (anchor or proposal) to a ground-truth box by IoU.

Same semantics as detectron2's Matcher, with static shapes and padded ground truth.
"""
import mindspore as ms
from mindspore import ops

from defrcn.modeling.broadcast import expand_all

__all__ = ["match"]


def match(iou, gt_valid, thresholds, labels, allow_low_quality_matches=False):
    """Match predictions to ground truth.

    Args:
        iou: (G, N) float, IoU of gt g with prediction n. G >= 1 (pad with invalid rows).
        gt_valid: (G,) bool or number, nonzero for real gts; padded gts are never matched.
        thresholds: increasing floats, e.g. (0.3, 0.7) for the RPN or (0.5,) for ROI heads.
        labels: len(thresholds) + 1 ints in {-1, 0, 1}: label for max IoU in
            [-inf, t0), [t0, t1), ..., [t_last, inf); e.g. (0, -1, 1) or (0, 1).
        allow_low_quality_matches: also label 1 every prediction whose IoU with some gt
            equals that gt's highest IoU (ties included; gts that overlap nothing excluded).

    Returns:
        matched_gt_idx (N,) int32: gt index with the highest IoU (0 when no valid gt:
            only meaningful where match_labels == 1).
        match_labels (N,) int32 in {-1 ignore, 0 background, 1 foreground}. With no valid
            gt every prediction is background (label 0).
    """
    if len(labels) != len(thresholds) + 1:
        raise ValueError("match: need len(labels) == len(thresholds) + 1")
    # Padded gts get IoU -1: never the argmax over a valid gt, below every threshold.
    # (Arithmetic instead of a Select: much faster on CPU for (G, #anchors); the gts' column
    # expanded to (G, N) first: `expand_all`.)
    iou, valid = expand_all(iou, gt_valid.astype(ms.bool_).astype(iou.dtype).reshape(-1, 1))
    masked = iou * valid + (valid - 1.0)
    matched_gt_idx, matched_iou = ops.ArgMaxWithValue(axis=0)(masked)
    match_labels = ops.full_like(matched_gt_idx, labels[0]).astype(ms.int32)
    for threshold, label in zip(thresholds, labels[1:]):
        match_labels = ops.where(matched_iou >= threshold,
                                 ops.full_like(match_labels, label), match_labels)
    if allow_low_quality_matches:
        best_per_gt = masked.max(axis=1, keepdims=True)
        # Padded gts (best -1) and gts that overlap nothing (best 0) promote nobody:
        # their target becomes 2, above any IoU.
        best_per_gt = ops.where(best_per_gt > 0, best_per_gt, ops.full_like(best_per_gt, 2.0))
        is_best = ops.equal(*expand_all(masked, best_per_gt)).any(axis=0)
        match_labels = ops.where(is_best, ops.ones_like(match_labels), match_labels)
    return matched_gt_idx.astype(ms.int32), match_labels
