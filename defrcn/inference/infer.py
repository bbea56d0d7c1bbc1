"""Detection on image files: a folder of labelled PNGs and JSON detections (tools/infer.py).

Per image: OUT/<stem>.png with one box and `name score` caption per detection (a colour per
class) and OUT/<stem>.json::

    {"image": path, "width": W, "height": H,
     "detections": [{"bbox": [x0, y0, x1, y1], "score": s, "category": name, "category_id": id}]}

Boxes are in the image's own pixels; `category_id` is the data set's own id (COCO ids, the
custom json's ids) or null when it has none (VOC).
"""
import json
import os

import numpy as np
from PIL import Image
from tqdm import tqdm

from defrcn.inference.predict import (category_ids_of, load_model_for_inference, predict_image,
                                   read_image_header, read_image_rgb)
from defrcn.config.recipe import load_recipe
from defrcn.data.spec import resolve_data_spec
from defrcn.errors import InputError

__all__ = ["IMAGE_SUFFIXES", "DEFAULT_SCORE_THRESH", "expand_image_paths", "output_stems",
           "detections_record", "draw_detections", "infer_to_folder"]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")  # what a folder argument expands to (case-insensitive)
DEFAULT_SCORE_THRESH = 0.5  # detectron2 demo's --confidence-threshold default
_PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40))


def expand_image_paths(inputs):
    """Files as given, folders expanded to their .jpg/.jpeg/.png files (sorted, not recursive).

    InputError for a path that does not exist, a folder without images, or no input at all.
    """
    paths = []
    for item in inputs:
        item = str(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, name) for name in os.listdir(item)
                           if name.lower().endswith(IMAGE_SUFFIXES)
                           and os.path.isfile(os.path.join(item, name)))
            if not found:
                raise InputError(f"no {'/'.join(s[1:] for s in IMAGE_SUFFIXES)} files in this folder",
                                 path=item)
            paths.extend(found)
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise InputError("no such image file or folder", path=item)
    if not paths:
        raise InputError("no images given")
    return paths


def output_stems(paths):
    """A distinct output stem per input path: the file's stem, `-2`, `-3`... on repeats."""
    stems, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        stems.append(stem if count == 1 else f"{stem}-{count}")
    return stems


def detections_record(path, height, width, boxes, scores, classes, class_names, category_ids):
    """The JSON written per image: {"image", "width", "height", "detections": [{"bbox":
    [x0, y0, x1, y1] original pixels, "score", "category", "category_id"}]}."""
    return {
        "image": str(path), "width": int(width), "height": int(height),
        "detections": [
            {"bbox": [round(float(v), 3) for v in box], "score": round(float(score), 5),
             "category": class_names[int(cls)], "category_id": category_ids[int(cls)]}
            for box, score, cls in zip(boxes, scores, classes)
        ],
    }


def _format_record(record):
    """JSON text with one line per detection (readable and diff-friendly)."""
    head = {key: value for key, value in record.items() if key != "detections"}
    lines = [json.dumps(d) for d in record["detections"]]
    body = ",\n  ".join(lines)
    return (json.dumps(head)[:-1] + ', "detections": ['
            + (f"\n  {body}\n" if lines else "") + "]}\n")


def draw_detections(image, boxes, scores, classes, class_names):
    """The image with one labelled box per detection (`name score`), a colour per class."""
    from defrcn.utils.draw import draw_boxes

    out = np.asarray(image)
    for cls in sorted(set(int(c) for c in classes)):
        pick = np.asarray(classes) == cls
        out = draw_boxes(out, boxes[pick], [class_names[cls]] * int(pick.sum()), scores[pick],
                         color=_PALETTE[cls % len(_PALETTE)])
    return out


def _build_rescorer(cfg, model):
    from defrcn.inference.predict import build_recipe_pcb

    return build_recipe_pcb(cfg, model)


def _check_not_overwriting(paths, out_dir, stems):
    inputs = {os.path.realpath(p) for p in paths}
    for stem in stems:
        for suffix in (".png", ".json"):
            target = os.path.join(out_dir, stem + suffix)
            if os.path.realpath(target) in inputs:
                raise InputError(f"would overwrite the input image {target}; pick another --output-dir",
                                 path=out_dir)


def infer_to_folder(recipe_path, checkpoint, inputs, out_dir, *, score_thresh=DEFAULT_SCORE_THRESH,
                    pcb=False, overrides=(), device="CPU", progress=True):
    """Detect objects in every image of `inputs` (files or folders) and write, per image,
    `out_dir/<stem>.png` (labelled boxes) and `out_dir/<stem>.json` (`detections_record`).

    Detections scoring below `score_thresh` are dropped (the model's own
    `model.roi.score_thresh_test` is lowered to it when higher). `pcb`: rescore with
    the recipe's PCB (`build_recipe_pcb`) before thresholding. Returns the JSON paths.
    """
    if not 0.0 <= float(score_thresh) <= 1.0:
        raise InputError(f"--score-thresh: must be in [0, 1], got {score_thresh}")
    paths = expand_image_paths(inputs)
    stems = output_stems(paths)
    _check_not_overwriting(paths, out_dir, stems)
    for path in paths:  # header check: fail before the model is built
        read_image_header(path)
    overrides = list(overrides or ())
    if score_thresh < load_recipe(recipe_path, overrides).cfg.model.roi.score_thresh_test:
        overrides.append(f"model.roi.score_thresh_test={float(score_thresh)!r}")
    cfg, model, class_names = load_model_for_inference(recipe_path, checkpoint, overrides, device)
    category_ids = category_ids_of(resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes), class_names)
    rescorer = _build_rescorer(cfg, model) if pcb else None
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder ({error.strerror})", path=out_dir) from None
    written = []
    for path, stem in tqdm(list(zip(paths, stems)), desc="infer", unit="image", disable=not progress):
        image = read_image_rgb(path)
        height, width = image.shape[:2]
        boxes, scores, classes = predict_image(model, cfg.input, image)
        if rescorer is not None and len(scores):
            record = {"file_name": os.path.abspath(path), "height": height, "width": width}
            scores = np.asarray(rescorer.rescore(record, boxes, scores, classes), np.float32)
            order = np.argsort(-scores, kind="stable")
            boxes, scores, classes = boxes[order], scores[order], classes[order]
        keep = scores >= score_thresh
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        Image.fromarray(draw_detections(image, boxes, scores, classes, class_names)).save(
            os.path.join(out_dir, stem + ".png"))
        json_path = os.path.join(out_dir, stem + ".json")
        with open(json_path, "w", encoding="utf-8") as handle:
            handle.write(_format_record(detections_record(path, height, width, boxes, scores, classes,
                                                          class_names, category_ids)))
        written.append(json_path)
    return written

