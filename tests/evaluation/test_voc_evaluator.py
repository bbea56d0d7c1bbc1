"""VOC07 11-point AP on hand cases with values worked out by hand."""
import math

import numpy as np
import pytest

from defrcn.data.records import DatasetMeta
from defrcn.evaluation.metrics import evaluate_detections
from defrcn.evaluation.voc_evaluator import _inclusive_iou, evaluate_voc, voc07_ap

META = DatasetMeta("voc_hand", ["boat", "cow"], [1, 2], base_classes=["boat"],
                   novel_classes=["cow"], evaluator="voc")


def _record(image_id, *objects):
    """objects: (contiguous class, [x0, y0, x1, y1], difficult)."""
    return {"file_name": f"{image_id}.jpg", "image_id": image_id, "height": 100, "width": 100,
            "annotations": [{"bbox": list(box), "category_id": c, "difficult": d}
                            for c, box, d in objects]}


def _det(image_id, category_id, xyxy, score):
    x0, y0, x1, y1 = xyxy
    return {"image_id": image_id, "category_id": category_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": score}


BOAT_A, BOAT_B = [10, 10, 40, 40], [50, 50, 90, 80]
RECORDS = [_record("a", (0, BOAT_A, False)), _record("b", (0, BOAT_B, False))]
# Ranked: TP, FP (nothing there), TP -> recall .5 .5 1, precision 1 .5 2/3.
# 11-point: levels 0-0.5 reach precision 1 (6 levels), 0.6-1.0 reach 2/3 (5 levels).
TP_FP_TP = [_det("a", 1, BOAT_A, 0.9), _det("a", 1, [60, 0, 90, 20], 0.8),
            _det("b", 1, BOAT_B, 0.7)]
TP_FP_TP_AP50 = 100 * (6 * 1.0 + 5 * (2 / 3)) / 11


def test_voc07_ap_by_hand():
    assert voc07_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3]) == pytest.approx(TP_FP_TP_AP50 / 100)
    assert voc07_ap([0.25], [1.0]) == pytest.approx(3 / 11)  # levels 0, .1, .2
    assert voc07_ap([], []) == 0.0


def test_iou_counts_inclusive_pixels():
    # 4x4 inclusive pixels vs 3x4: 12 / 16 (exclusive widths would give 6 / 9)
    assert _inclusive_iou(np.array([1.0, 0, 3, 3]), np.array([[0.0, 0, 3, 3]]))[0] == pytest.approx(0.75)


def test_known_ranking_gives_hand_value():
    metrics = evaluate_voc(TP_FP_TP, RECORDS, META)
    assert metrics["per_class"]["boat"] == pytest.approx(TP_FP_TP_AP50)
    assert metrics["AP50"] == metrics["bAP50"] == pytest.approx(TP_FP_TP_AP50)
    assert math.isnan(metrics["per_class"]["cow"])  # no cow in the set: NaN, left out of means
    assert math.isnan(metrics["nAP50"])


def test_difficult_objects_are_ignored():
    records = [_record("a", (0, BOAT_A, False), (0, [60, 60, 95, 95], True)),
               _record("b", (0, BOAT_B, False))]
    # a top-scored hit on the difficult boat is neither TP nor FP; recall still counts 2 boxes
    dets = [_det("a", 1, [60, 60, 95, 95], 0.95)] + TP_FP_TP
    assert evaluate_voc(dets, records, META)["AP50"] == pytest.approx(TP_FP_TP_AP50)


def test_duplicate_and_iou_exactly_half_are_false_positives():
    # Boxes of 10x10 inclusive pixels; [50,50,59,54] covers 10x5 = 50 of a union of 100:
    # IoU 0.5 exactly, which is not > 0.5.
    records = [_record("a", (0, [0, 0, 9, 9], False), (0, [50, 50, 59, 59], False))]
    dets = [_det("a", 1, [0, 0, 9, 9], 0.9), _det("a", 1, [0, 0, 9, 9], 0.8),
            _det("a", 1, [50, 50, 59, 54], 0.7), _det("a", 1, [50, 50, 59, 59], 0.6)]
    # TP FP FP TP: recall .5 .5 .5 1, precision 1 .5 1/3 .5 -> (6 * 1 + 5 * .5) / 11
    assert evaluate_voc(dets, records, META)["AP50"] == pytest.approx(100 * 8.5 / 11)


def test_base_novel_split_and_dispatch():
    records = RECORDS + [_record("c", (1, [0, 0, 50, 50], False))]
    dets = TP_FP_TP + [_det("c", 2, [0, 0, 50, 50], 0.98), _det("a", 2, BOAT_A, 0.99)]
    metrics = evaluate_detections(dets, records, META)  # meta.evaluator == "voc"
    # cow: FP (image a) before TP -> recall 0 1, precision 0 .5 -> 0.5 at every level
    assert metrics["nAP50"] == pytest.approx(100 * 0.5)
    assert metrics["bAP50"] == pytest.approx(TP_FP_TP_AP50)
    assert metrics["AP50"] == pytest.approx((TP_FP_TP_AP50 + 50) / 2)
    assert set(metrics) >= {"AP", "AP50", "AP75", "bAP", "bAP50", "nAP", "nAP50", "per_class"}


def test_no_detections_give_zero():
    metrics = evaluate_voc([], RECORDS, META)
    assert metrics["AP50"] == 0.0 and metrics["per_class"]["boat"] == 0.0
