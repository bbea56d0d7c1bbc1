"""COCO-style box AP with pycocotools' COCOeval (bbox, maxDets 100), split into all / base /
novel classes and per class, on a 0-100 scale.

Keys: `AP AP50 AP75 APs APm APl` over the evaluated classes (the meta's
`class_names`), the same with a `b` prefix over its base classes and an `n` prefix over its
novel classes (absent when it has none), and `per_class` {name: AP}. A value is NaN when
no class of the group has a ground-truth box of that kind (pycocotools reports -1).

COCOeval runs once over all evaluated classes; every group's numbers are means over that
group's slice of `eval["precision"]`, which is exactly what COCOeval with `catIds`
restricted to the group gives (categories are matched independently).
"""
import contextlib
import io
import json
import math

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from defrcn.errors import InputError

__all__ = ["SUMMARY_KEYS", "evaluate_coco", "coco_gt_from_json", "coco_gt_from_records"]

# Summary rows of COCOeval.summarize for maxDets 100: (key, IoU threshold or None for
# 0.50:0.95, area range name).
SUMMARY_KEYS = (
    ("AP", None, "all"),
    ("AP50", 0.5, "all"),
    ("AP75", 0.75, "all"),
    ("APs", None, "small"),
    ("APm", None, "medium"),
    ("APl", None, "large"),
)
MAX_DETS = 100  # COCO protocol: at most 100 detections per image count


@contextlib.contextmanager
def _quiet():
    """pycocotools prints progress to stdout; keep it out of our output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _coco_from_dict(dataset):
    with _quiet():
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
    return coco


def coco_gt_from_json(json_file):
    """A COCO ground-truth object from an annotation json; annotations lacking `area` get
    w * h and those lacking `iscrowd` get 0 (custom jsons need not carry them)."""
    try:
        with open(json_file, encoding="utf-8") as handle:
            dataset = json.load(handle)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON (line {e.lineno})", path=json_file) from None
    except OSError as e:
        raise InputError(f"cannot read ({e.strerror})", path=json_file) from None
    for ann in dataset.get("annotations", []):
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        ann.setdefault("iscrowd", 0)
    dataset.setdefault("info", {})
    dataset.setdefault("licenses", [])
    return _coco_from_dict(dataset)


def coco_gt_from_records(records, meta):
    """An in-memory COCO ground truth from records (XYXY original pixels, contiguous ids)."""
    images, annotations = [], []
    for record in records:
        images.append({"id": record["image_id"], "height": record["height"],
                       "width": record["width"], "file_name": record.get("file_name", "")})
        for ann in record.get("annotations", []):
            x0, y0, x1, y1 = (float(v) for v in ann["bbox"])
            annotations.append({
                "id": len(annotations) + 1, "image_id": record["image_id"],
                "category_id": int(meta.category_ids[ann["category_id"]]),
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0, "ignore": 0,
            })
    categories = [{"id": int(cid), "name": name}
                  for cid, name in zip(meta.category_ids, meta.class_names)]
    return _coco_from_dict({"images": images, "annotations": annotations,
                            "categories": categories, "info": {}, "licenses": []})


def _mean_valid(values):
    valid = values[values > -1]
    return float(valid.mean()) * 100.0 if valid.size else math.nan


def _summaries(precision, params, class_slots, prefix):
    """{prefix + key: value} over the categories at `class_slots` of the precision array
    (T, R, K, A, M) of COCOeval.accumulate."""
    out = {}
    area = {name: i for i, name in enumerate(params.areaRngLbl)}
    max_det = params.maxDets.index(MAX_DETS)
    for key, iou, area_name in SUMMARY_KEYS:
        block = precision[:, :, class_slots, area[area_name], max_det]
        if iou is not None:
            block = block[np.where(np.isclose(params.iouThrs, iou))[0]]
        out[prefix + key] = _mean_valid(block)
    return out


def _zeros(meta, groups):
    out = {}
    for prefix, _names in groups:
        out.update({prefix + key: 0.0 for key, _, _ in SUMMARY_KEYS})
    out["per_class"] = {name: 0.0 for name in meta.class_names}
    return out


def _groups(meta):
    groups = [("", list(meta.class_names))]
    base = [n for n in meta.class_names if n in meta.base_classes]
    novel = [n for n in meta.class_names if n in meta.novel_classes]
    if base:
        groups.append(("b", base))
    if novel:
        groups.append(("n", novel))
    return groups


def evaluate_coco(detections, meta, *, records=None, coco_gt=None):
    """Run COCOeval on `detections` and summarise it for all / base / novel classes.

    Args:
        detections: list of {"image_id", "category_id" (the data set's own id),
            "bbox" [x, y, w, h] original pixels, "score"} (COCO results format).
        meta: DatasetMeta; its class_names (with category_ids) are the evaluated classes.
        records: the test records; their image ids are the evaluated images. When
            `coco_gt` is None, the ground truth is `meta.json_file` if set, else built from
            the records.
        coco_gt: a ready pycocotools COCO ground truth (optional).
    Returns:
        {"AP", "AP50", "AP75", "APs", "APm", "APl", "b..." and "n..." when the meta has base
        or novel classes, "per_class": {name: AP}}, all on a 0-100 scale.
    """
    groups = _groups(meta)
    if coco_gt is None:
        if meta.json_file:
            coco_gt = coco_gt_from_json(meta.json_file)
        elif records is not None:
            coco_gt = coco_gt_from_records(records, meta)
        else:
            raise ValueError("evaluate_coco needs records, coco_gt or meta.json_file")
    cat_ids = [int(c) for c in meta.category_ids]
    wanted = set(cat_ids)
    detections = [d for d in detections if int(d["category_id"]) in wanted]
    if not detections:
        return _zeros(meta, groups)
    with _quiet():
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.catIds = cat_ids
        if records is not None:
            evaluator.params.imgIds = sorted({r["image_id"] for r in records})
        evaluator.evaluate()
        evaluator.accumulate()
    params = evaluator.params
    precision = evaluator.eval["precision"]
    slot_of = {cid: k for k, cid in enumerate(params.catIds)}  # COCOeval keeps catIds order
    name_to_cat = dict(zip(meta.class_names, cat_ids))
    metrics = {}
    for prefix, names in groups:
        slots = [slot_of[name_to_cat[n]] for n in names]
        metrics.update(_summaries(precision, params, slots, prefix))
    area_all = params.areaRngLbl.index("all")
    max_det = params.maxDets.index(MAX_DETS)
    metrics["per_class"] = {
        name: _mean_valid(precision[:, :, slot_of[name_to_cat[name]], area_all, max_det])
        for name in meta.class_names
    }
    return metrics
