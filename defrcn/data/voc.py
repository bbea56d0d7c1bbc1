"""Read PASCAL VOC (xml + ImageSets) and TFA's VOC few-shot split files into records.

Layout: `ROOT/VOC{2007,2012}/{Annotations,JPEGImages,ImageSets/Main}`; split files
`box_{K}shot_{class}_train.txt` in the split folder (seed 0 at its top or in `seed0/`,
seed S >= 1 in `seed{S}/`), one image path per line of which only the base name is used;
an id containing `_` is a VOC2012 image, otherwise VOC2007.

Boxes follow TFA / DeFRCN (`defrcn/data/meta_voc.py`): XYXY from the xml with 1 subtracted from
xmin and ymin only. Difficult objects are kept and flagged (`difficult=True`); the
evaluator ignores them, training uses them as TFA / DeFRCN do.

Few-shot sets follow TFA / DeFRCN: one record per object of the class (an image with two
such objects gives two records, each with one box), then K kept per class if there are
more. Unlike DeFRCN, the K are drawn once per (split, seed, K, class) with a fixed
`np.random.RandomState`, so training and PCB see the same instances; and an image
listed twice in a file is read once.
"""
import os
import xml.etree.ElementTree as ET
import zlib

import numpy as np

from defrcn.data.fewshot_coco import seed_dir
from defrcn.errors import InputError

__all__ = ["voc_year", "voc_fewshot_file_name", "read_voc_xml", "read_image_set", "load_voc",
           "load_fewshot_voc", "instance_rng"]


def voc_year(file_id):
    """'2012' for VOC2012 ids (they contain '_', e.g. 2008_000123), else '2007'."""
    return "2012" if "_" in file_id else "2007"


def voc_fewshot_file_name(shots, class_name):
    """TFA's file name for the K-shot list of one VOC class."""
    return f"box_{shots}shot_{class_name}_train.txt"


def read_voc_xml(path):
    """Parse a VOC annotation file.

    Returns dict(height=int, width=int, objects=[(name, [x0, y0, x1, y1] float, difficult bool)]).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise InputError("annotation file not found", path=path)
    try:
        root = ET.parse(path).getroot()
        size = root.find("size")
        height, width = int(float(size.find("height").text)), int(float(size.find("width").text))
        objects = []
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            difficult = obj.find("difficult")
            is_difficult = difficult is not None and int(float(difficult.text)) == 1
            objects.append((obj.find("name").text.strip(), [x0 - 1.0, y0 - 1.0, x1, y1], is_difficult))
    except ET.ParseError as e:
        raise InputError(f"not valid XML ({e})", path=path) from None
    except (AttributeError, TypeError, ValueError):
        raise InputError("malformed VOC annotation (size or object bndbox missing or not a number)",
                         path=path) from None
    return {"height": height, "width": width, "objects": objects}


def read_image_set(voc_dir, image_set):
    """File ids listed in `voc_dir/ImageSets/Main/{image_set}.txt`."""
    path = os.path.join(str(voc_dir), "ImageSets", "Main", f"{image_set}.txt")
    if not os.path.isfile(path):
        raise InputError("image set file not found", path=path)
    with open(path, "r", encoding="utf-8") as f:
        return [line.strip().split()[0] for line in f if line.strip()]


def _image_path(voc_dir, file_id):
    path = os.path.abspath(os.path.join(voc_dir, "JPEGImages", f"{file_id}.jpg"))
    if not os.path.exists(path):
        raise InputError("image not found", path=path)
    return path


def load_voc(voc_dirs, image_set, class_names, *, keep_empty=False):
    """Records of the images in `image_set` of each VOC folder, with objects of `class_names`.

    Args:
        voc_dirs: e.g. [ROOT/VOC2007, ROOT/VOC2012].
        image_set: "trainval", "test", ...
        class_names: contiguous class order; objects of other classes are skipped.
        keep_empty: keep images with no object of `class_names` (test sets).
    """
    index = {name: i for i, name in enumerate(class_names)}
    records = []
    for voc_dir in voc_dirs:
        voc_dir = str(voc_dir)
        for file_id in read_image_set(voc_dir, image_set):
            ann = read_voc_xml(os.path.join(voc_dir, "Annotations", f"{file_id}.xml"))
            boxes = [{"bbox": box, "category_id": index[name], "difficult": difficult}
                     for name, box, difficult in ann["objects"] if name in index]
            if not boxes and not keep_empty:
                continue
            records.append({"file_name": _image_path(voc_dir, file_id), "image_id": file_id,
                            "height": ann["height"], "width": ann["width"], "annotations": boxes})
    return records


def instance_rng(seed, split, shots, class_name):
    """The fixed generator that picks the K instances of one class (same on every load)."""
    key = f"voc-instances/{seed}/{split}/{shots}/{class_name}".encode()
    return np.random.RandomState(zlib.crc32(key))


def _read_split_list(path):
    if not os.path.isfile(path):
        raise InputError("split file not found", path=path)
    ids = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                file_id = os.path.splitext(os.path.basename(line.strip()))[0]
                if file_id not in ids:
                    ids.append(file_id)
    return ids


def load_fewshot_voc(root, split_root, class_names, shots, seed, split):
    """Records of the K-shot VOC set of `class_names` (contiguous order).

    Args:
        root: folder holding VOC2007/ and VOC2012/.
        split_root: folder with the split files (e.g. ROOT/vocsplit).
        split: the VOC split number (1-3), part of the instance draw's seed.
    Returns:
        one record per kept object (one box each); at most `shots` per class.
    """
    folder = seed_dir(split_root, seed)
    records = []
    for index, name in enumerate(class_names):
        instances = []
        for file_id in _read_split_list(os.path.join(folder, voc_fewshot_file_name(shots, name))):
            voc_dir = os.path.join(str(root), f"VOC{voc_year(file_id)}")
            ann = read_voc_xml(os.path.join(voc_dir, "Annotations", f"{file_id}.xml"))
            image_path = _image_path(voc_dir, file_id)
            for obj_name, box, difficult in ann["objects"]:
                if obj_name == name:
                    instances.append({"file_name": image_path, "image_id": file_id,
                                      "height": ann["height"], "width": ann["width"],
                                      "annotations": [{"bbox": box, "category_id": index,
                                                       "difficult": difficult}]})
        if len(instances) > shots:
            keep = instance_rng(seed, split, shots, name).choice(len(instances), shots, replace=False)
            instances = [instances[i] for i in sorted(keep)]
        records.extend(instances)
    return records
