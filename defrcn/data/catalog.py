"""One entry point to every data set: `load_dataset(benchmark, split, ...) -> (records, meta)`.

Roots (the README's "Data"):
- coco:   ROOT = the `datasets` folder: ROOT/cocosplit/datasplit/{trainvalno5k,5k}.json,
          ROOT/cocosplit/[seed{S}/]full_box_*.json, images in ROOT/coco/{trainval2014,val2014,train2014}.
- voc:    ROOT = the `datasets` folder: ROOT/VOC{2007,2012}, ROOT/vocsplit/[seed{S}/]box_*.txt.
- custom: ROOT of the custom layout (see `defrcn/data/custom.py`); "toy" is the same reader.

Which classes a set holds (contiguous order in brackets):
- "train_base": base classes [base list]; images without base boxes dropped.
- "train_fewshot": setting "fsod": novel classes [novel list]; "tfa": all classes [all order].
- "test": setting "base": base; "fsod": novel; "tfa": all. Images without boxes are kept.
All orders: COCO and custom = ascending category id; VOC = the split's ALL_CLASSES order.
"""
import os

from defrcn.data import classes as class_splits
from defrcn.data import custom
from defrcn.data.coco import load_coco_json
from defrcn.data.fewshot_coco import load_fewshot_coco
from defrcn.data.records import DatasetMeta
from defrcn.data.voc import load_fewshot_voc, load_voc
from defrcn.errors import InputError

__all__ = ["BENCHMARKS", "SPLITS", "SETTINGS", "class_lists", "coco_image_dirs", "load_dataset"]

BENCHMARKS = ("coco", "voc", "custom", "toy")
SPLITS = ("train_base", "train_fewshot", "test")
SETTINGS = ("base", "fsod", "tfa")


def class_lists(benchmark, *, root=None, base_classes=None, novel_classes=None, voc_split=None):
    """(base, novel, all) class-name lists of a benchmark, each in contiguous-id order."""
    if benchmark == "coco":
        base = list(base_classes or class_splits.COCO_BASE_CLASSES)
        novel = list(novel_classes or class_splits.COCO_NOVEL_CLASSES)
        for name in base + novel:
            if name not in class_splits.COCO_CLASSES:
                raise InputError(f"data.base_classes/novel_classes: '{name}' is not a COCO class")
        return base, novel, [c for c in class_splits.COCO_CLASSES if c in base or c in novel]
    if benchmark == "voc":
        if voc_split not in (1, 2, 3):
            raise InputError(f"data.voc_split: must be 1, 2 or 3, got {voc_split!r}")
        return class_splits.voc_split_classes(voc_split)
    json_file = custom.annotation_file(root, "train")
    names, _ = custom.read_classes(json_file)
    novel = list(novel_classes or [])
    custom.check_class_names(novel, names, json_file, what="novel class")
    base = list(base_classes) if base_classes else [n for n in names if n not in novel]
    custom.check_class_names(base, names, json_file, what="base class")
    both = [n for n in base if n in novel]
    if both:
        raise InputError(f"data.base_classes and data.novel_classes share '{both[0]}'")
    return base, novel, [n for n in names if n in base or n in novel]


def _classes_of(split, setting, base, novel, all_order):
    if split == "train_base" or (split == "test" and setting == "base"):
        return base, "base"
    if split == "train_fewshot" and setting == "base":
        raise InputError("data.setting: a few-shot training set needs setting 'fsod' or 'tfa', not 'base'")
    return (novel, "novel") if setting == "fsod" else (all_order, "all")


def load_dataset(benchmark, split, *, root, base_classes=None, novel_classes=None, setting="base",
                 shots=None, split_seed=0, voc_split=None, strict=None, split_root=None):
    """Load one data set.

    Args:
        benchmark: "coco", "voc", "custom" (or "toy", the same reader).
        split: "train_base", "train_fewshot" or "test".
        root: data root (see the module docstring).
        base_classes, novel_classes: class names; COCO / VOC default to the benchmark's
            split, custom takes the novel names from the caller and the rest as base.
        setting: "base", "fsod" (novel classes only) or "tfa" (all classes).
        shots, split_seed: K and the split seed of a few-shot training set.
        voc_split: 1, 2 or 3 for VOC.
        strict: COCO only: treat bad boxes as errors (custom is always strict).
        split_root: folder of the K-shot files (default ROOT/cocosplit, ROOT/vocsplit, ROOT/fewshot).
    Returns:
        (records, DatasetMeta); InputError for bad input or a set without any box.
    """
    if benchmark not in BENCHMARKS:
        raise InputError(f"data.benchmark: unknown '{benchmark}' (one of {', '.join(BENCHMARKS)})")
    if split not in SPLITS:
        raise InputError(f"data split: unknown '{split}' (one of {', '.join(SPLITS)})")
    if setting not in SETTINGS:
        raise InputError(f"data.setting: unknown '{setting}' (one of {', '.join(SETTINGS)})")
    if split == "train_fewshot" and (not isinstance(shots, int) or shots < 1):
        raise InputError(f"data.shots: a few-shot training set needs shots >= 1, got {shots!r}")
    benchmark = "custom" if benchmark == "toy" else benchmark
    root = str(root)
    base, novel, all_order = class_lists(benchmark, root=root, base_classes=base_classes,
                                         novel_classes=novel_classes, voc_split=voc_split)
    names, kind = _classes_of(split, setting, base, novel, all_order)
    loader = {"coco": _load_coco, "voc": _load_voc, "custom": _load_custom}[benchmark]
    records, source, category_ids, json_file = loader(split, root, names, shots, split_seed, voc_split,
                                                      strict, split_root)
    if not any(r["annotations"] for r in records):
        raise InputError(f"no images with boxes of the classes {', '.join(names)}"[:200], path=source)
    tag = f"_{shots}shot_seed{split_seed}" if split == "train_fewshot" else ""
    meta = DatasetMeta(
        name=f"{benchmark}{voc_split or ''}_{split}_{kind}{tag}",
        class_names=list(names), category_ids=category_ids,
        base_classes=[n for n in names if n in base], novel_classes=[n for n in names if n in novel],
        evaluator="voc" if benchmark == "voc" else "coco", json_file=json_file)
    return records, meta


def coco_image_dirs(root):
    """The folders COCO images are looked up in, in order (TFA's trainval2014 first)."""
    return [os.path.join(root, "coco", part) for part in ("trainval2014", "val2014", "train2014")]


def _load_coco(split, root, names, shots, seed, _voc_split, strict, split_root):
    split_root = split_root or os.path.join(root, "cocosplit")
    image_dirs = coco_image_dirs(root)
    ids = [class_splits.coco_category_id(n) for n in names]
    strict = bool(strict)
    if split == "train_fewshot":
        records = load_fewshot_coco(split_root, names, shots, seed, image_dirs, strict=strict)
        return records, split_root, ids, None
    part = "5k" if split == "test" else "trainvalno5k"
    json_file = os.path.join(split_root, "datasplit", f"{part}.json")
    records = load_coco_json(json_file, names, image_dirs, strict=strict, keep_empty=split == "test")
    return records, json_file, ids, json_file if split == "test" else None


def _load_voc(split, root, names, shots, seed, voc_split, _strict, split_root):
    ids = list(range(1, len(names) + 1))
    if split == "train_fewshot":
        split_root = split_root or os.path.join(root, "vocsplit")
        return load_fewshot_voc(root, split_root, names, shots, seed, voc_split), split_root, ids, None
    if split == "test":
        voc2007 = os.path.join(root, "VOC2007")
        return load_voc([voc2007], "test", names, keep_empty=True), voc2007, ids, None
    dirs = [os.path.join(root, f"VOC{year}") for year in ("2007", "2012")]
    return load_voc(dirs, "trainval", names), root, ids, None


def _load_custom(split, root, names, shots, seed, _voc_split, _strict, split_root):
    part = "test" if split == "test" else "train"
    json_file = custom.annotation_file(root, part)
    all_names, all_ids = custom.read_classes(json_file)
    custom.check_class_names(names, all_names, json_file)
    ids = [all_ids[all_names.index(n)] for n in names]
    if split == "train_fewshot":
        records = custom.load_fewshot_custom(root, names, shots, seed, split_root=split_root)
        return records, split_root or custom.default_split_root(root), ids, None
    records = custom.load_custom(root, part, names, keep_empty=split == "test")
    return records, json_file, ids, json_file if split == "test" else None
