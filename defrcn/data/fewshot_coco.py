"""K-shot training sets from TFA's COCO split files (also used for custom data sets).

Layout (TFA `datasets/cocosplit/`): one file per (seed, K, class),
`full_box_{K}shot_{class}_trainval.json` (class names may contain spaces), COCO format
holding the chosen images and that class's boxes in them. Seed 0 lives at the top of the
split folder (TFA) or in `seed0/` (DeFRCN): `seed0/` is used when it is a folder, the top
level otherwise. Seeds S >= 1 live in `seed{S}/`.

The training set for a class list merges the class files by image id, as DeFRCN does:
an image chosen for several classes becomes one record holding each file's boxes of its
class. Boxes are not cut to K (the published seed-0 files may hold more than K).
"""
import os

from defrcn.data.coco import read_json, records_from_coco
from defrcn.errors import InputError

__all__ = ["fewshot_file_name", "seed_dir", "fewshot_file", "load_fewshot_coco"]


def fewshot_file_name(shots, class_name):
    """TFA's file name for the K-shot file of one class."""
    return f"full_box_{shots}shot_{class_name}_trainval.json"


def seed_dir(split_root, seed):
    """Folder of the files of split seed `seed` (seed 0: `seed0/` if present, else the top)."""
    split_root = str(split_root)
    if seed < 0:
        raise InputError(f"split seed must be >= 0, got {seed}")
    if not os.path.isdir(split_root):
        raise InputError("split folder not found", path=split_root)
    if seed == 0:
        seed0 = os.path.join(split_root, "seed0")
        return seed0 if os.path.isdir(seed0) else split_root
    path = os.path.join(split_root, f"seed{seed}")
    if not os.path.isdir(path):
        raise InputError(f"split folder for seed {seed} not found", path=path)
    return path


def fewshot_file(split_root, seed, shots, class_name):
    """Path of one K-shot file; InputError naming it if it is missing."""
    path = os.path.join(seed_dir(split_root, seed), fewshot_file_name(shots, class_name))
    if not os.path.isfile(path):
        raise InputError(f"{shots}-shot split file of class '{class_name}' not found", path=path)
    return path


def load_fewshot_coco(split_root, class_names, shots, seed, image_dirs, *, strict=False, check_images=True):
    """Records of the K-shot set of `class_names` (contiguous order), merged by image id.

    Returns a list of record dicts (one per image, first-seen order over the class files).
    """
    merged = {}
    for name in class_names:
        path = fewshot_file(split_root, seed, shots, name)
        data = read_json(path)
        for record in records_from_coco(data, source=path, class_names=[name], image_dirs=image_dirs,
                                        strict=strict, check_images=check_images):
            contiguous = class_names.index(name)
            for ann in record["annotations"]:
                ann["category_id"] = contiguous
            if record["image_id"] in merged:
                merged[record["image_id"]]["annotations"].extend(record["annotations"])
            else:
                merged[record["image_id"]] = record
    return list(merged.values())
