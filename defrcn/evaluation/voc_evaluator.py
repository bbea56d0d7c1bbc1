"""PASCAL VOC 2007 box AP: 11-point interpolated average precision per class.

The protocol of the py-faster-rcnn style evaluator DeFRCN uses (its `defrcn/evaluation/pascal_voc_evaluation.py`):
- per class, detections of all images are ranked by score (ties keep their input order);
- a detection is matched to the ground-truth box of its class in its image with the largest
  IoU; IoU counts inclusive pixels (width = x1 - x0 + 1); a match needs IoU > threshold;
- a match to a difficult box counts as neither true nor false positive; a match to a box
  already taken, or no match, is a false positive; difficult boxes are not counted in the
  recall denominator;
- AP = mean over recall levels t in {0, 0.1, ..., 1} of the best precision at recall >= t
  (0 when recall t is never reached).

Keys (0-100): `AP50` (the headline), `AP75` and `AP` (mean over IoU 0.50:0.05:0.95, as
detectron2's VOC evaluator reports), each also with `b` / `n` prefixes for base / novel
classes (absent when the meta has none), and `per_class` {name: AP50}. A class without any
non-difficult ground-truth box has AP NaN and is left out of the means.
"""
import math

import numpy as np

__all__ = ["voc07_ap", "match_detections", "evaluate_voc", "IOU_THRESHOLDS"]

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))  # detectron2 VOC "AP"
RECALL_LEVELS = np.linspace(0.0, 1.0, 11)  # VOC 2007 11-point metric


def voc07_ap(recall, precision):
    """11-point interpolated AP (0-1) from cumulative recall and precision arrays."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    total = 0.0
    for level in RECALL_LEVELS:
        reached = precision[recall >= level]
        total += reached.max() if reached.size else 0.0
    return total / len(RECALL_LEVELS)


def _inclusive_iou(box, gts):
    """IoU of one XYXY box against (G, 4) boxes with the +1 pixel convention."""
    ix0 = np.maximum(gts[:, 0], box[0])
    iy0 = np.maximum(gts[:, 1], box[1])
    ix1 = np.minimum(gts[:, 2], box[2])
    iy1 = np.minimum(gts[:, 3], box[3])
    inter = np.maximum(ix1 - ix0 + 1.0, 0.0) * np.maximum(iy1 - iy0 + 1.0, 0.0)
    area = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    gt_areas = (gts[:, 2] - gts[:, 0] + 1.0) * (gts[:, 3] - gts[:, 1] + 1.0)
    return inter / (area + gt_areas - inter)


def match_detections(dets, gts, thresholds):
    """Greedy VOC matching for one class.

    Args:
        dets: list of (image_key, score, xyxy) of that class.
        gts: {image_key: (boxes (G, 4) XYXY, difficult (G,) bool)} of that class.
        thresholds: IoU thresholds.
    Returns:
        (order, tp, fp): the score ranking (indices into dets) and float arrays
        (len(thresholds), D) of true / false positive flags in that order.
    """
    scores = np.array([d[1] for d in dets], float)
    order = np.argsort(-scores, kind="stable")
    tp = np.zeros((len(thresholds), len(dets)))
    fp = np.zeros((len(thresholds), len(dets)))
    taken = {key: np.zeros((len(thresholds), len(boxes)), bool) for key, (boxes, _) in gts.items()}
    for rank, index in enumerate(order):
        key, _, box = dets[index]
        boxes, difficult = gts.get(key, (np.zeros((0, 4)), np.zeros((0,), bool)))
        if len(boxes) == 0:
            fp[:, rank] = 1.0
            continue
        ious = _inclusive_iou(np.asarray(box, float), boxes)
        best = int(np.argmax(ious))
        for t, threshold in enumerate(thresholds):
            if ious[best] <= threshold:
                fp[t, rank] = 1.0
            elif difficult[best]:
                continue
            elif taken[key][t, best]:
                fp[t, rank] = 1.0
            else:
                tp[t, rank] = 1.0
                taken[key][t, best] = True
    return order, tp, fp


def _class_aps(dets, gts, thresholds):
    """AP (0-1) per threshold for one class; NaN when it has no non-difficult box."""
    positives = sum(int((~difficult).sum()) for _, difficult in gts.values())
    if positives == 0:
        return [math.nan] * len(thresholds)
    if not dets:
        return [0.0] * len(thresholds)
    _, tp, fp = match_detections(dets, gts, thresholds)
    aps = []
    for t in range(len(thresholds)):
        true_pos, false_pos = np.cumsum(tp[t]), np.cumsum(fp[t])
        recall = true_pos / positives
        precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(float).eps)
        aps.append(voc07_ap(recall, precision))
    return aps


def _ground_truth(records, num_classes):
    """Per contiguous class: {image_key: (boxes (G, 4), difficult (G,))}."""
    per_class = [{} for _ in range(num_classes)]
    for record in records:
        by_class = {}
        for ann in record.get("annotations", []):
            by_class.setdefault(ann["category_id"], []).append(ann)
        for c, anns in by_class.items():
            boxes = np.array([a["bbox"] for a in anns], float).reshape(-1, 4)
            difficult = np.array([bool(a.get("difficult", False)) for a in anns], bool)
            per_class[c][record["image_id"]] = (boxes, difficult)
    return per_class


def _nanmean(values):
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def evaluate_voc(detections, records, meta, *, thresholds=IOU_THRESHOLDS):
    """VOC07 11-point AP of COCO-format `detections` against the records' boxes.

    Args:
        detections: list of {"image_id" (the record's), "category_id" (the meta's own id),
            "bbox" [x, y, w, h] original pixels, "score"}.
        records: test records (XYXY original pixels, contiguous ids, `difficult` flags).
        meta: DatasetMeta (class names, own ids, base / novel names).
        thresholds: IoU thresholds; 0.5 must be among them (AP50 is the headline).
    Returns:
        the module docstring's keys, 0-100.
    """
    thresholds = tuple(float(t) for t in thresholds)
    contiguous = {int(cid): c for c, cid in enumerate(meta.category_ids)}
    gts = _ground_truth(records, meta.num_classes)
    dets = [[] for _ in range(meta.num_classes)]
    for det in detections:
        c = contiguous.get(int(det["category_id"]))
        if c is None:
            continue
        x, y, w, h = (float(v) for v in det["bbox"])
        dets[c].append((det["image_id"], float(det["score"]), (x, y, x + w, y + h)))
    aps = np.array([_class_aps(dets[c], gts[c], thresholds) for c in range(meta.num_classes)],
                   float).reshape(meta.num_classes, len(thresholds)) * 100.0
    at = {t: i for i, t in enumerate(thresholds)}
    groups = [("", list(range(meta.num_classes)))]
    base = [c for c, n in enumerate(meta.class_names) if n in meta.base_classes]
    novel = [c for c, n in enumerate(meta.class_names) if n in meta.novel_classes]
    groups += [(p, ids) for p, ids in (("b", base), ("n", novel)) if ids]
    with_ap = thresholds == tuple(float(t) for t in IOU_THRESHOLDS)
    class_ap = aps.mean(axis=1)  # NaN stays NaN for classes without boxes
    metrics = {}
    for prefix, ids in groups:
        if with_ap:
            metrics[prefix + "AP"] = _nanmean([class_ap[c] for c in ids])
        metrics[prefix + "AP50"] = _nanmean([aps[c, at[0.5]] for c in ids])
        if 0.75 in at:
            metrics[prefix + "AP75"] = _nanmean([aps[c, at[0.75]] for c in ids])
    metrics["per_class"] = {name: float(aps[c, at[0.5]]) for c, name in enumerate(meta.class_names)}
    return metrics
