"""Inference post-processing of the ROI heads (detectron2's fast_rcnn_inference).

Per image: softmax scores, class-specific decoding, clipping to the image, score
threshold, per-class NMS, the best `detections_per_image`. Static shapes: a fixed
number of output slots with a validity mask.

Candidates are first cut to the `pre_nms_topk` best (class, box) pairs, where detectron2
keeps every pair above the threshold. The cut is exact whenever at least
`detections_per_image` of those best pairs survive NMS: greedy NMS decides a pair's fate
from higher-scored pairs only, and all of those are inside the cut, so the survivors among
the best pairs are the same and every pair below the cut scores lower than them. Only an
image where fewer than `detections_per_image` of the best pairs survive can miss tail
detections (those scoring below the cut's lowest score).
"""
import mindspore as ms
import mindspore.ops as ops

from defrcn.modeling.boxes import clip_boxes
from defrcn.modeling.nms import NMS_BLOCK, batched_nms


def detect(logits, deltas, proposals, proposal_valid, image_sizes, box_coder, *, num_classes,
           score_thresh=0.05, nms_thresh=0.5, detections_per_image=100, pre_nms_topk=4096,
           nms_block=NMS_BLOCK):
    """Turn predictor outputs into detections.

    Args:
        logits (B*P, C+1), deltas (B*P, 4C): predictor outputs for P proposals per image.
        proposals (B, P, 4), proposal_valid (B, P): the RPN's boxes in canvas pixels.
        image_sizes (B, 2): (h, w) of the image content inside the canvas.
        nms_block: NMS block size (`defrcn.modeling.nms.nms_sorted`: exact at any size).
    Returns:
        boxes (B, D, 4) in canvas pixels, scores (B, D), classes (B, D) int32,
        valid (B, D) float, with D = detections_per_image, best first.
    """
    batch, num_props = proposals.shape[0], proposals.shape[1]
    probs = ops.softmax(logits, axis=-1)[:, :num_classes].reshape(batch, num_props, num_classes)
    flat_props = proposals.reshape(batch * num_props, 4)
    boxes = box_coder.decode(deltas, flat_props).reshape(batch, num_props, num_classes, 4)
    num_pairs = num_props * num_classes
    k = min(pre_nms_topk, num_pairs)
    out_boxes, out_scores, out_classes, out_valid = [], [], [], []
    for b in range(batch):
        img_boxes = clip_boxes(boxes[b], image_sizes[b, 0], image_sizes[b, 1]).reshape(num_pairs, 4)
        keep = ops.logical_and(probs[b] > score_thresh, proposal_valid[b].expand_dims(1) > 0)
        scores = ops.where(keep, probs[b], ops.full_like(probs[b], -1.0)).reshape(num_pairs)
        top_scores, top_idx = ops.topk(scores, k)
        cand_boxes = ops.gather(img_boxes, top_idx, 0)
        cand_classes = (top_idx - (top_idx // num_classes) * num_classes).astype(ms.int32)  # not `%` (FloorMod)
        idx, valid = batched_nms(cand_boxes, top_scores, cand_classes, nms_thresh, detections_per_image,
                                 block_size=nms_block)
        det_scores = ops.gather(top_scores, idx, 0)
        valid = ops.logical_and(valid > 0, det_scores > score_thresh).astype(ms.float32)
        out_boxes.append(ops.gather(cand_boxes, idx, 0) * valid.expand_dims(1))
        out_scores.append(det_scores * valid)
        out_classes.append(ops.gather(cand_classes, idx, 0))
        out_valid.append(valid)
    return ops.stack(out_boxes), ops.stack(out_scores), ops.stack(out_classes), ops.stack(out_valid)


def to_original_size(boxes, scales):
    """Map boxes (B, D, 4) from canvas pixels back to original image pixels (numpy)."""
    return boxes / scales.reshape(-1, 1, 1)
