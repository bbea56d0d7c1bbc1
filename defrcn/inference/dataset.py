"""Run a detector over a test loader and collect COCO-format detections.

A detection is {"image_id": the record's image_id, "category_id": the data set's own id
(`meta.category_ids[contiguous]`), "bbox": [x, y, w, h] in original-image pixels,
"score": float}. Boxes leave the model in canvas pixels and are divided by the loader's
`scales` (resized / original), then clipped to the original image.
"""
import sys

import numpy as np
from tqdm import tqdm

from defrcn.data.pipeline import input_errors_as_one_line
from defrcn.data.transforms import boxes_to_original

__all__ = ["run_inference", "predict_dataset", "detections_of_predictions", "detections_of_image"]

BOX_DECIMALS = 3  # 1/1000 pixel: keeps detections.json small, changes no AP


def detections_of_image(record, boxes, scores, classes, meta):
    """COCO-format dicts of one image. boxes (D, 4) XYXY original pixels, scores (D,),
    classes (D,) contiguous ids."""
    out = []
    for box, score, cls in zip(boxes, scores, classes):
        x0, y0, x1, y1 = (float(v) for v in box)
        out.append({
            "image_id": record["image_id"],
            "category_id": int(meta.category_ids[int(cls)]),
            "bbox": [round(x0, BOX_DECIMALS), round(y0, BOX_DECIMALS),
                     round(x1 - x0, BOX_DECIMALS), round(y1 - y0, BOX_DECIMALS)],
            "score": float(score),
        })
    return out


def _to_numpy(value):
    return value.asnumpy() if hasattr(value, "asnumpy") else np.asarray(value)


def _show_progress(progress):
    return bool(progress) and sys.stderr.isatty()


def predict_dataset(model, loader, records, *, progress=True):
    """Per-image predictions of `model` on every image of `loader` (padding rows skipped).

    Args:
        model: callable `(images, image_sizes) -> (boxes (B, D, 4) canvas XYXY, scores (B, D),
            classes (B, D) contiguous int, valid (B, D))` (the DeFRCN Cell); put in eval
            mode here when it is a Cell.
        loader: test pipeline with columns images, image_sizes, ..., image_ids, scales.
        records: the test records (indexed by image_ids).
        progress: show a tqdm bar (only when stderr is a terminal).
    Returns:
        list of (record, boxes (D, 4) XYXY original np.float32, scores (D,) float32, classes (D,)
        int64 contiguous), in the loader's order.
    """
    import mindspore as ms

    if hasattr(model, "set_train"):
        model.set_train(False)
    total = loader.get_dataset_size() if hasattr(loader, "get_dataset_size") else None
    predictions = []
    bar = tqdm(total=total, desc="inference", unit="batch", disable=not _show_progress(progress))
    try:
        with input_errors_as_one_line():
            for batch in loader.create_dict_iterator(num_epochs=1, output_numpy=True):
                outputs = model(ms.Tensor(batch["images"]), ms.Tensor(batch["image_sizes"]))
                boxes, scores, classes, valid = (_to_numpy(o) for o in outputs[:4])
                for row, index in enumerate(batch["image_ids"]):
                    if int(index) < 0:
                        continue
                    record = records[int(index)]
                    keep = valid[row] > 0
                    image_boxes = boxes_to_original(boxes[row][keep], batch["scales"][row],
                                                    record["height"], record["width"])
                    predictions.append((record, image_boxes, scores[row][keep].astype(np.float32),
                                        classes[row][keep].astype(np.int64)))
                bar.update(1)
    finally:
        bar.close()
    return predictions


def detections_of_predictions(predictions, meta, *, rescore=None, rescore_many=None):
    """COCO-format detection dicts of `predict_dataset`'s predictions, in their order.

    rescore: optional `(record, boxes (D, 4) XYXY original np.float32, scores (D,),
    classes (D,) contiguous) -> new scores (D,)` per image with detections; rescore_many:
    optional `[(record, boxes, scores, classes), ...] -> [new scores, ...]`, all images at
    once (`PCB.rescore_many`). Neither changes `predictions`.
    """
    with_detections = [i for i, prediction in enumerate(predictions) if len(prediction[2])]
    new_scores = {}
    if rescore_many is not None:
        new_scores = dict(zip(with_detections, rescore_many([predictions[i] for i in with_detections])))
    elif rescore is not None:
        new_scores = {i: rescore(*predictions[i]) for i in with_detections}
    detections = []
    for index, (record, boxes, scores, classes) in enumerate(predictions):
        if index in new_scores:
            scores = np.asarray(new_scores[index], np.float32)
        detections += detections_of_image(record, boxes, scores, classes, meta)
    return detections


def run_inference(model, loader, records, meta, *, progress=True, rescore=None, rescore_many=None):
    """Detections of `model` on every image of `loader` (padding rows skipped): COCO-format
    dicts in the loader's order. `predict_dataset` and `detections_of_predictions` say what
    the arguments are."""
    predictions = predict_dataset(model, loader, records, progress=progress)
    return detections_of_predictions(predictions, meta, rescore=rescore, rescore_many=rescore_many)
