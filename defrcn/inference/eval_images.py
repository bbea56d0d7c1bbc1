"""Pictures for TensorBoard at evaluation time: ground truth and predicted boxes on a few
test images, written by the periodic evaluation.

`make_eval_fn` (defrcn/engine/evaluate.py) returns `MetricsWithImages`: the metrics dict
with the drawn images attached as `.images`; `PeriodicEval` writes them with
`TensorBoardWriter.add_images` under `eval/boxes/<index>` at the evaluated iteration.
Plain dicts (no images) keep working everywhere a metrics dict is expected.
"""
import logging

import numpy as np
from PIL import Image

from defrcn.utils.draw import draw_boxes

__all__ = ["MetricsWithImages", "draw_eval_images", "EVAL_IMAGE_COUNT", "EVAL_IMAGE_SCORE"]

logger = logging.getLogger(__name__)
EVAL_IMAGE_COUNT = 4  # test images drawn per evaluation (first ones, in record order)
EVAL_IMAGE_SCORE = 0.5  # detections shown from this score (tools/infer.py's default threshold)
GT_COLOUR, PRED_COLOUR = (40, 220, 40), (230, 30, 30)  # ground truth green, predictions red


class MetricsWithImages(dict):
    """A metrics dict carrying `images`: a list of (H, W, 3) uint8 RGB pictures."""

    def __init__(self, metrics, images=()):
        super().__init__(metrics)
        self.images = list(images)


def _read_rgb(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def draw_eval_images(detections, records, meta, *, count=EVAL_IMAGE_COUNT,
                     score_thresh=EVAL_IMAGE_SCORE):
    """Ground truth (green, class name) and detections (red, `name score`) on the first
    `count` records whose image file can be read.

    Args:
        detections: COCO-format dicts (image_id, category_id = the data set's id,
            bbox XYWH original pixels, score), as `run_inference` returns them.
        records: test records (file_name, image_id, annotations with XYXY `bbox` and
            contiguous `category_id`).
        meta: their DatasetMeta (class_names, category_ids).
    Returns:
        list of (H, W, 3) uint8 RGB arrays (fewer than `count` when files are missing).
    """
    names_by_id = dict(zip(meta.category_ids, meta.class_names))
    by_image = {}
    for det in detections:
        if det["score"] >= score_thresh:
            by_image.setdefault(det["image_id"], []).append(det)
    images = []
    for record in records:
        if len(images) >= count:
            break
        try:
            image = _read_rgb(record["file_name"])
        except OSError as error:  # a stub record or a moved file: no picture, no failure
            logger.debug("no eval image for %s: %s", record.get("file_name"), error)
            continue
        gts = record.get("annotations", [])
        image = draw_boxes(image, [a["bbox"] for a in gts],
                           [meta.class_names[int(a["category_id"])] for a in gts], color=GT_COLOUR)
        dets = by_image.get(record["image_id"], [])
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]
        image = draw_boxes(image, boxes, [names_by_id.get(d["category_id"], "?") for d in dets],
                           [d["score"] for d in dets], color=PRED_COLOUR)
        images.append(image)
    return images
