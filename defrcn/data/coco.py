"""Read a COCO-format detection json into records (see `defrcn/data/records.py`).

Rules for bad input (`InputError`, one line naming the file; the tools exit 2):
- always fatal: a missing file; a file that is not valid JSON or lacks the `images`,
  `annotations` or `categories` lists; an image without `id`/`file_name`; duplicate
  image ids; two categories with the same name; an annotation without `image_id`,
  `category_id` or a 4-number `bbox`; an annotation whose image id or category id is not
  in the file; a requested class name the file's categories do not have; an image file
  not found under any of the image folders.
- fatal only with `strict=True` (user data: the custom layout): a box with non-positive
  width or height, and a box reaching outside the image by more than 1 pixel.
- otherwise (published COCO, `strict=False`): such boxes are clipped to the image and
  dropped if they become empty, with a count in the log, as detectron2 does.
Crowd annotations (`iscrowd=1`) are always dropped. Annotations of categories not in
`class_names` are skipped (e.g. novel boxes when reading a base-class set).
"""
import json
import logging
import os

from PIL import Image

from defrcn.errors import InputError

__all__ = ["read_json", "category_names", "resolve_image", "records_from_coco", "load_coco_json"]

logger = logging.getLogger(__name__)

BOX_TOLERANCE = 1.0  # pixels a strict box may reach outside the image (rounding in annotation tools)


def read_json(path):
    """Load a json object from `path`; InputError for a missing, unreadable or corrupt file."""
    path = str(path)
    if not os.path.isfile(path):
        raise InputError("file not found", path=path)
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON (line {e.lineno}: {e.msg})", path=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read ({e.__class__.__name__}: {e})", path=path) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object with images, annotations, categories", path=path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f"missing list '{key}'", path=path)
    return data


def category_names(data, source):
    """Map category id -> name of a COCO dict; InputError on a malformed or repeated entry."""
    id_to_name, seen = {}, set()
    for cat in data["categories"]:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise InputError(f"category entry without 'id' and 'name': {cat!r}"[:200], path=source)
        if cat["id"] in id_to_name:
            raise InputError(f"duplicate category id {cat['id']}", path=source)
        if cat["name"] in seen:
            raise InputError(f"duplicate category name '{cat['name']}'", path=source)
        id_to_name[cat["id"]] = cat["name"]
        seen.add(cat["name"])
    return id_to_name


def resolve_image(file_name, image_dirs, *, check=True, source=None):
    """Absolute path of `file_name` in the first of `image_dirs` that has it.

    With `check`, a file found in none of them is an InputError naming the first candidate.
    """
    candidates = [os.path.abspath(os.path.join(d, file_name)) for d in image_dirs]
    if not check:
        return candidates[0]
    for path in candidates:
        if os.path.exists(path):
            return path
    where = f" (read from {source})" if source else ""
    also = f"; also looked in {', '.join(map(str, image_dirs[1:]))}" if len(image_dirs) > 1 else ""
    raise InputError(f"image not found{where}{also}", path=candidates[0])


def _image_size(image, path, source):
    if "width" in image and "height" in image:
        return int(image["height"]), int(image["width"])
    try:
        with Image.open(path) as im:
            width, height = im.size
    except OSError as e:
        raise InputError(f"cannot read image size ({e})", path=path) from None
    return height, width


def _check_annotation(ann, source):
    for key in ("image_id", "category_id", "bbox"):
        if key not in ann:
            raise InputError(f"annotation {ann.get('id', '?')} has no '{key}'", path=source)
    box = ann["bbox"]
    if not (isinstance(box, (list, tuple)) and len(box) == 4
            and all(isinstance(v, (int, float)) for v in box)):
        raise InputError(f"annotation {ann.get('id', '?')}: bbox must be 4 numbers [x, y, w, h]", path=source)


def records_from_coco(data, *, source, class_names, image_dirs, strict=False, keep_empty=False,
                      check_images=True):
    """Turn a parsed COCO dict into records.

    Args:
        data: dict with `images`, `annotations`, `categories` (as `read_json` returns).
        source: the json path, for messages.
        class_names: contiguous class order; categories are matched by name.
        image_dirs: folders searched in order for each image's `file_name`.
        strict: make bad boxes fatal (see the module docstring).
        keep_empty: keep images without a box of `class_names` (test sets).
        check_images: require each image file to exist.
    Returns:
        list of record dicts, in the json's image order; boxes are XYXY float.
    """
    id_to_name = category_names(data, source)
    name_to_cat = {name: cid for cid, name in id_to_name.items()}
    for name in class_names:
        if name not in name_to_cat:
            raise InputError(f"class '{name}' is not among the categories", path=source)
    cat_to_contiguous = {name_to_cat[name]: i for i, name in enumerate(class_names)}

    images = {}
    for image in data["images"]:
        if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
            raise InputError("image entry without 'id' and 'file_name'", path=source)
        if image["id"] in images:
            raise InputError(f"duplicate image id {image['id']}", path=source)
        images[image["id"]] = image

    located = {}  # image id -> (path, height, width), found when first needed

    def locate(img_id):
        if img_id not in located:
            path = resolve_image(images[img_id]["file_name"], image_dirs, check=check_images, source=source)
            located[img_id] = (path, *_image_size(images[img_id], path, source))
        return located[img_id]

    boxes = {img_id: [] for img_id in images}
    dropped = {"crowd": 0, "degenerate": 0}
    for ann in data["annotations"]:
        _check_annotation(ann, source)
        img_id, cat_id = ann["image_id"], ann["category_id"]
        if img_id not in images:
            raise InputError(f"annotation {ann.get('id', '?')}: unknown image id {img_id}", path=source)
        if cat_id not in id_to_name:
            raise InputError(f"annotation {ann.get('id', '?')}: unknown category id {cat_id}", path=source)
        if cat_id not in cat_to_contiguous:
            continue
        if ann.get("iscrowd", 0):
            dropped["crowd"] += 1
            continue
        image = images[img_id]
        size = (image["height"], image["width"]) if "width" in image and "height" in image else locate(img_id)[1:]
        box = _xyxy_in_image(ann, img_id, size, strict, source, dropped)
        if box is not None:
            boxes[img_id].append({"bbox": box, "category_id": cat_to_contiguous[cat_id], "difficult": False})
    if dropped["crowd"] or dropped["degenerate"]:
        logger.info("%s: dropped %d crowd and %d degenerate boxes", source, dropped["crowd"], dropped["degenerate"])

    records = []
    for img_id in images:
        if not boxes[img_id] and not keep_empty:
            continue
        path, height, width = locate(img_id)
        records.append({"file_name": path, "image_id": img_id, "height": height, "width": width,
                        "annotations": boxes[img_id]})
    return records


def _xyxy_in_image(ann, img_id, size, strict, source, dropped):
    """XYWH -> XYXY clipped to the image of `size` (h, w); None if dropped (strict: InputError instead)."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    height, width = size
    if strict and (w <= 0 or h <= 0):
        raise InputError(f"annotation {ann.get('id', '?')}: non-positive box size {w}x{h}", path=source)
    x0, y0, x1, y1 = x, y, x + w, y + h
    if strict and (x0 < -BOX_TOLERANCE or y0 < -BOX_TOLERANCE
                   or x1 > width + BOX_TOLERANCE or y1 > height + BOX_TOLERANCE):
        raise InputError(
            f"annotation {ann.get('id', '?')}: box {[x0, y0, x1, y1]} outside image "
            f"{img_id} of size {width}x{height}", path=source)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 <= x0 or y1 <= y0:
        dropped["degenerate"] += 1
        return None
    return [x0, y0, x1, y1]


def load_coco_json(json_file, class_names, image_dirs, *, strict=False, keep_empty=False, check_images=True):
    """Read `json_file` into records for `class_names` (contiguous order); see `records_from_coco`."""
    data = read_json(json_file)
    return records_from_coco(data, source=str(json_file), class_names=class_names, image_dirs=list(image_dirs),
                             strict=strict, keep_empty=keep_empty, check_images=check_images)
