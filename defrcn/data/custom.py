"""The custom data-set layout (the README's "Data"); the synthetic data set uses it too.

    ROOT/annotations/{train,test}.json      COCO format; any category and image ids
    ROOT/images/{train,test}/<file_name>    or, failing that, ROOT/images/<file_name>
    ROOT/fewshot/                           K-shot files written by tools/split.py

Classes come from the json `categories`, sorted by id (contiguous id = position). The
K-shot files use TFA's COCO layout and names (`full_box_{K}shot_{class}_trainval.json`,
seed 0 at the top of the folder or in `seed0/`, `seed{S}/` otherwise), so one reader
serves COCO and custom data. Everything is read in strict mode (see
`defrcn/data/coco.py`): bad boxes, unknown ids and missing images are InputErrors.
"""
import os

from defrcn.data.coco import category_names, read_json, records_from_coco
from defrcn.data.fewshot_coco import load_fewshot_coco
from defrcn.errors import InputError

__all__ = ["annotation_file", "image_dirs", "default_split_root", "read_classes", "check_class_names",
           "load_custom", "load_fewshot_custom"]


def annotation_file(root, part):
    """ROOT/annotations/{part}.json (part: "train" or "test")."""
    return os.path.join(str(root), "annotations", f"{part}.json")


def image_dirs(root, part):
    """Folders searched in order for the images of `part`."""
    return [os.path.join(str(root), "images", part), os.path.join(str(root), "images")]


def default_split_root(root):
    return os.path.join(str(root), "fewshot")


def read_classes(json_file):
    """(names, category ids) of a COCO json, sorted by category id."""
    json_file = str(json_file)
    id_to_name = category_names(read_json(json_file), json_file)
    if not id_to_name:
        raise InputError("no categories", path=json_file)
    ids = sorted(id_to_name)
    return [id_to_name[i] for i in ids], ids


def check_class_names(names, available, source, what="class"):
    """InputError naming `source` and the first of `names` not in `available`."""
    for name in names:
        if name not in available:
            raise InputError(f"{what} '{name}' is not a category of this data set "
                             f"(categories: {', '.join(available)})"[:300], path=source)


def load_custom(root, part, class_names, *, keep_empty=False):
    """Records of ROOT/annotations/{part}.json with boxes of `class_names` (contiguous order)."""
    json_file = annotation_file(root, part)
    data = read_json(json_file)
    check_class_names(class_names, list(category_names(data, json_file).values()), json_file)
    return records_from_coco(data, source=json_file, class_names=list(class_names),
                             image_dirs=image_dirs(root, part), strict=True, keep_empty=keep_empty)


def load_fewshot_custom(root, class_names, shots, seed, *, split_root=None):
    """Records of the K-shot set of `class_names`, merged by image (see fewshot_coco)."""
    split_root = split_root or default_split_root(root)
    return load_fewshot_coco(split_root, list(class_names), shots, seed, image_dirs(root, "train"), strict=True)
