"""evaluate_coco against pycocotools' own COCOeval numbers on a hand-made set."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from defrcn.data.records import DatasetMeta
from defrcn.evaluation.coco_evaluator import evaluate_coco
from defrcn.evaluation.metrics import evaluate_detections

# Category ids are not contiguous; "other" (id 20) is in the json but not evaluated.
CATEGORIES = [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 12, "name": "owl"},
              {"id": 20, "name": "other"}]
# (image id, category id, [x, y, w, h]): small (< 32^2), medium and large boxes.
GT_BOXES = [
    (1, 5, [10, 10, 20, 20]), (1, 5, [100, 100, 60, 60]), (1, 9, [200, 50, 150, 120]),
    (2, 9, [30, 40, 25, 25]), (2, 12, [60, 60, 80, 90]), (2, 20, [0, 0, 50, 50]),
    (3, 12, [5, 5, 15, 12]), (3, 5, [150, 150, 120, 200]), (3, 12, [300, 10, 40, 40]),
]
DETECTIONS = [  # hits, near misses, duplicates and false positives with mixed scores
    {"image_id": 1, "category_id": 5, "bbox": [11, 10, 20, 19], "score": 0.9},
    {"image_id": 1, "category_id": 5, "bbox": [100, 104, 60, 58], "score": 0.6},
    {"image_id": 1, "category_id": 5, "bbox": [100, 100, 61, 60], "score": 0.65},
    {"image_id": 1, "category_id": 9, "bbox": [210, 60, 150, 120], "score": 0.8},
    {"image_id": 1, "category_id": 12, "bbox": [0, 0, 30, 30], "score": 0.3},
    {"image_id": 2, "category_id": 9, "bbox": [30, 40, 20, 25], "score": 0.55},
    {"image_id": 2, "category_id": 12, "bbox": [62, 61, 80, 88], "score": 0.95},
    {"image_id": 2, "category_id": 5, "bbox": [60, 60, 80, 90], "score": 0.4},
    {"image_id": 2, "category_id": 20, "bbox": [0, 0, 50, 50], "score": 0.99},
    {"image_id": 3, "category_id": 12, "bbox": [6, 5, 15, 12], "score": 0.7},
    {"image_id": 3, "category_id": 12, "bbox": [290, 10, 40, 40], "score": 0.5},
    {"image_id": 3, "category_id": 5, "bbox": [150, 170, 120, 200], "score": 0.85},
    {"image_id": 3, "category_id": 9, "bbox": [150, 150, 120, 200], "score": 0.2},
]


def _dataset():
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 400, "width": 400} for i in (1, 2, 3)]
    anns = [{"id": n + 1, "image_id": img, "category_id": cat, "bbox": box,
             "area": box[2] * box[3], "iscrowd": 0} for n, (img, cat, box) in enumerate(GT_BOXES)]
    return {"images": images, "annotations": anns, "categories": CATEGORIES}


@pytest.fixture
def gt_json(tmp_path):
    path = tmp_path / "test.json"
    path.write_text(json.dumps(_dataset()))
    return str(path)


def _meta(json_file=None, novel=("owl",)):
    names = ["cat", "dog", "owl"]
    return DatasetMeta("hand", names, [5, 9, 12], base_classes=[n for n in names if n not in novel],
                       novel_classes=list(novel), evaluator="coco", json_file=json_file)


def _records():
    records = []
    for img in (1, 2, 3):
        anns = [{"bbox": [b[0], b[1], b[0] + b[2], b[1] + b[3]], "category_id": [5, 9, 12].index(c),
                 "difficult": False} for i, c, b in GT_BOXES if i == img and c != 20]
        records.append({"file_name": f"{img}.jpg", "image_id": img, "height": 400, "width": 400,
                        "annotations": anns})
    return records


def _pycocotools_stats(json_file, detections, cat_ids):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        evaluator = COCOeval(gt, gt.loadRes(detections), "bbox")
        evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [s * 100 if s >= 0 else math.nan for s in evaluator.stats[:6]]


KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _assert_close(ours, theirs):
    np.testing.assert_allclose(np.array(ours, float), np.array(theirs, float), atol=1e-9)


def test_all_base_novel_and_per_class_equal_pycocotools(gt_json, capsys):
    metrics = evaluate_coco(DETECTIONS, _meta(gt_json), records=_records())
    assert capsys.readouterr().out == ""  # pycocotools' prints are silenced
    for prefix, cats in (("", [5, 9, 12]), ("b", [5, 9]), ("n", [12])):
        _assert_close([metrics[prefix + k] for k in KEYS], _pycocotools_stats(gt_json, DETECTIONS, cats))
    for name, cat in (("cat", 5), ("dog", 9), ("owl", 12)):
        _assert_close(metrics["per_class"][name], _pycocotools_stats(gt_json, DETECTIONS, [cat])[0])
    assert 0 < metrics["AP"] < 100  # the case is not trivial
    assert metrics["bAP"] != metrics["nAP"]


def test_ground_truth_from_records_gives_the_json_numbers(gt_json):
    from_json = evaluate_coco(DETECTIONS, _meta(gt_json), records=_records())
    from_records = evaluate_coco(DETECTIONS, _meta(None), records=_records())
    assert from_records == from_json


def test_perfect_detections_score_100(gt_json):
    perfect = [{"image_id": i, "category_id": c, "bbox": b, "score": 1.0}
               for i, c, b in GT_BOXES if c != 20]
    metrics = evaluate_coco(perfect, _meta(gt_json), records=_records())
    for key in KEYS + tuple("b" + k for k in KEYS):
        if not math.isnan(metrics[key]):
            assert metrics[key] == pytest.approx(100.0), key
    assert metrics["AP"] == pytest.approx(100.0)
    assert metrics["per_class"] == pytest.approx({"cat": 100.0, "dog": 100.0, "owl": 100.0})


def test_empty_detections_give_zeros(gt_json):
    metrics = evaluate_coco([], _meta(gt_json), records=_records())
    assert metrics["AP"] == metrics["nAP"] == metrics["bAP50"] == 0.0
    assert metrics["per_class"] == {"cat": 0.0, "dog": 0.0, "owl": 0.0}


def test_no_novel_keys_without_novel_classes_and_dispatch(gt_json):
    metrics = evaluate_detections(DETECTIONS, _records(), _meta(gt_json, novel=()))
    assert "nAP" not in metrics and "nAP50" not in metrics
    assert metrics["bAP"] == metrics["AP"]


def test_json_without_area_or_iscrowd_is_accepted(tmp_path, gt_json):
    data = _dataset()
    for ann in data["annotations"]:
        del ann["area"], ann["iscrowd"]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    assert evaluate_coco(DETECTIONS, _meta(str(bare)), records=_records()) == \
        evaluate_coco(DETECTIONS, _meta(gt_json), records=_records())
