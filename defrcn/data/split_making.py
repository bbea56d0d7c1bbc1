"""Make K-shot split files with TFA's protocol (`datasets/prepare_coco_few_shot.py`,
`prepare_voc_few_shot.py` in ucbdrive/few-shot-object-detection), and write them.

COCO / custom, per seed: one `random.Random(seed)`; for each class in ascending category
id, group the class's non-crowd boxes by image and keep one selection across K (ascending):
repeatedly draw K candidate images without replacement, walk through them skipping images
already selected and images whose boxes would push the total above K, stop at exactly K.
Each K-shot set therefore holds exactly K boxes, every box of the class in each chosen
image, and all smaller-K sets. Two guards TFA lacks, which change nothing whenever TFA's
loop ends: a draw never asks for more images than exist, and an image is skipped if
taking it would leave some exact K of the run unreachable (TFA would loop forever after
taking it). A class whose box counts allow no nested exact-K sets is an InputError.

VOC, per seed: one `random.Random(seed)`; for each class (VOC alphabetical order) list the
files with an object of the class (difficult included); for each K draw n = K - previous K
new files and add them until their objects of the class number n. The lists are nested
and hold at least K objects. Unlike TFA, a file already listed is not drawn again.

Output: seed 0 at the top of OUT, seed S >= 1 in OUT/seed{S}; COCO / custom one json per
(K, class) `full_box_{K}shot_{class}_trainval.json` (keys info, licenses, images,
annotations, categories), VOC one txt per (K, class) `box_{K}shot_{class}_train.txt`.
"""
import json
import logging
import os
import random

from defrcn.data.classes import VOC_CLASSES
from defrcn.data.coco import category_names, read_json, records_from_coco
from defrcn.data.fewshot_coco import fewshot_file_name
from defrcn.data.voc import read_image_set, read_voc_xml, voc_fewshot_file_name
from defrcn.errors import InputError

__all__ = ["parse_int_list", "boxes_by_image", "sample_coco_class", "sample_coco_splits",
           "sample_voc_class", "sample_voc_splits", "seed_folder", "write_coco_splits", "write_voc_splits"]

logger = logging.getLogger(__name__)


def parse_int_list(text, option):
    """'0-9' -> [0..9]; '0,3,5' -> [0, 3, 5]; mixes allowed; sorted, unique, >= 0."""
    values = set()
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                values.update(range(lo, hi + 1))
            else:
                values.add(int(part))
        except ValueError:
            raise InputError(f"{option}: cannot read '{part}' (use e.g. 0-9 or 0,3,5)") from None
    if not values or min(values) < 0:
        raise InputError(f"{option}: need non-negative integers, got '{text}'")
    return sorted(values)


def boxes_by_image(annotations):
    """{category_id: {image_id: [annotation, ...]}} of the non-crowd, non-empty boxes, in file order."""
    groups = {}
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        w, h = ann["bbox"][2], ann["bbox"][3]
        if w > 0 and h > 0:
            groups.setdefault(ann["category_id"], {}).setdefault(ann["image_id"], []).append(ann)
    return groups


def _fits(counts, sizes):
    """Can disjoint groups of `counts` (a {box count: number of images} dict) sum to each of `sizes`?"""
    sizes = sorted((d for d in sizes if d > 0), reverse=True)
    if not sizes:
        return True
    if counts.get(1, 0) >= sum(sizes):  # enough one-box images (always so on COCO-sized classes)
        return True
    start = tuple(sorted((c, m) for c, m in counts.items() if c <= sizes[0] and m > 0))
    memo = {}

    def fill(items, index, left):
        # fill sizes[index] (still `left` to go) from items, then the following sizes
        if left == 0:
            return index + 1 == len(sizes) or fill(items, index + 1, sizes[index + 1])
        key = (items, index, left)
        if key not in memo:
            memo[key] = any(
                fill(tuple((c2, m2 - (c2 == c)) for c2, m2 in items if (c2, m2) != (c, 1)), index, left - c)
                for c, m in items if c <= left)
        return memo[key]

    return fill(start, 0, sizes[0])


def sample_coco_class(groups, shots, rng, name="?"):
    """Nested K-shot image selections of one class.

    Args:
        groups: {image_id: [annotations]} of the class (as `boxes_by_image` gives per class).
        shots: ascending K values.
        rng: `random.Random`, shared across classes of one seed as in TFA.
    Returns:
        {K: [image_id, ...]} with exactly K boxes in each selection.
    """
    image_ids = list(groups)
    total = sum(len(v) for v in groups.values())
    if shots[-1] > total:
        raise InputError(f"class '{name}': {shots[-1]} shots requested but it has only {total} boxes "
                         f"in {len(image_ids)} images")
    steps = [k - prev for prev, k in zip([0] + list(shots[:-1]), shots)]
    unchosen = {}  # box count -> number of images not chosen yet
    for boxes in groups.values():
        unchosen[len(boxes)] = unchosen.get(len(boxes), 0) + 1
    if not _fits(unchosen, steps):
        raise InputError(f"class '{name}': cannot pick nested sets of exactly {', '.join(map(str, shots))} "
                         f"boxes (boxes per image -> number of images: {dict(sorted(unchosen.items()))})")
    selected, chosen, count, result = [], set(), 0, {}
    for step, k in enumerate(shots):
        while count < k:
            for image_id in rng.sample(image_ids, min(k, len(image_ids))):
                n = len(groups[image_id])
                if image_id in chosen or count + n > k:
                    continue
                unchosen[n] -= 1
                if not _fits(unchosen, [k - count - n] + steps[step + 1:]):
                    unchosen[n] += 1  # a dead end: TFA would loop forever after taking it
                    continue
                selected.append(image_id)
                chosen.add(image_id)
                count += n
                if count == k:
                    break
        result[k] = list(selected)
    return result


def sample_coco_splits(data, shots, seed, class_ids=None, groups=None):
    """{(K, category_id): [image_id, ...]} for one seed; classes in ascending id.

    `groups` (from `boxes_by_image(data["annotations"])`) may be passed to save a pass.
    """
    rng = random.Random(seed)
    id_to_name = {c["id"]: c["name"] for c in data["categories"]}
    groups = boxes_by_image(data["annotations"]) if groups is None else groups
    out = {}
    for cat_id in sorted(class_ids if class_ids is not None else id_to_name):
        for k, image_ids in sample_coco_class(groups.get(cat_id, {}), shots, rng, id_to_name[cat_id]).items():
            out[(k, cat_id)] = image_ids
    return out


def sample_voc_class(files, shots, rng, name="?"):
    """Nested VOC K-shot file lists of one class.

    Args:
        files: [(line, number of objects of the class)] in listing order.
    Returns:
        {K: [line, ...]} whose objects of the class number at least K.
    """
    counts = dict(files)
    total = sum(counts.values())
    chosen, previous, result = [], 0, {}
    for k in shots:
        if k > total:
            raise InputError(f"class '{name}': {k} shots requested but it has only {total} objects "
                             f"in {len(counts)} images")
        need = k - previous
        pool = [line for line, _ in files if line not in chosen]
        added = 0
        for line in rng.sample(pool, min(need, len(pool))):
            chosen.append(line)
            added += counts[line]
            if added >= need:
                break
        result[k] = list(chosen)
        previous = k
    return result


def sample_voc_splits(files_by_class, shots, seed):
    """{(K, class): [line, ...]} for one seed; classes in VOC alphabetical order."""
    rng = random.Random(seed)
    out = {}
    order = [c for c in VOC_CLASSES if c in files_by_class] + sorted(set(files_by_class) - set(VOC_CLASSES))
    for name in order:
        for k, lines in sample_voc_class(files_by_class[name], shots, rng, name).items():
            out[(k, name)] = lines
    return out


def seed_folder(out, seed):
    """Seed 0 at the top of `out`, seed S >= 1 in `out/seed{S}`."""
    return str(out) if seed == 0 else os.path.join(str(out), f"seed{seed}")


def _check_file_name(name, source):
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise InputError(f"class name '{name}' cannot be part of a file name", path=source)


def write_coco_splits(annotations, shots, seeds, out, *, strict=False, image_dirs=None, classes=None):
    """Write TFA-style COCO K-shot files for every class (or `classes`) and seed.

    `strict` (custom data) validates every box and, given `image_dirs` (folders searched in
    order), that every image file exists, as the custom reader does. Returns the number of files written.
    """
    source = str(annotations)
    data = read_json(source)
    id_to_name = category_names(data, source)
    name_to_id = {v: k for k, v in id_to_name.items()}
    names = list(classes) if classes else [id_to_name[i] for i in sorted(id_to_name)]
    for name in names:
        if name not in name_to_id:
            raise InputError(f"class '{name}' is not among the categories", path=source)
        _check_file_name(name, source)
    records_from_coco(data, source=source, class_names=list(id_to_name.values()),
                      image_dirs=list(image_dirs or ["."]), strict=strict, keep_empty=True,
                      check_images=bool(image_dirs))
    images = {img["id"]: img for img in data["images"]}
    class_ids = [name_to_id[n] for n in names]
    groups = boxes_by_image(data["annotations"])
    plans = {}
    for seed in seeds:
        try:
            plans[seed] = sample_coco_splits(data, shots, seed, class_ids, groups)
        except InputError as e:
            raise InputError(str(e), path=source) from None
    written = 0
    for seed, plan in plans.items():
        folder = seed_folder(out, seed)
        os.makedirs(folder, exist_ok=True)
        for (k, cat_id), image_ids in plan.items():
            payload = {"info": data.get("info", {}), "licenses": data.get("licenses", []),
                       "images": [images[i] for i in image_ids],
                       "annotations": [a for i in image_ids for a in groups[cat_id][i]],
                       "categories": data["categories"]}
            with open(os.path.join(folder, fewshot_file_name(k, id_to_name[cat_id])), "w") as f:
                json.dump(payload, f)
            written += 1
    logger.debug("wrote %d split files for seeds %s to %s", written, seeds, out)
    return written


def write_voc_splits(root, shots, seeds, out, *, classes=None):
    """Write TFA-style VOC K-shot lists from ROOT/VOC{2007,2012} trainval; returns the file count."""
    root = str(root)
    years = [y for y in ("2007", "2012") if os.path.isdir(os.path.join(root, f"VOC{y}"))]
    if not years:
        raise InputError("no VOC2007/ or VOC2012/ folder", path=root)
    files_by_class = {}
    for year in years:
        voc_dir = os.path.join(root, f"VOC{year}")
        for file_id in read_image_set(voc_dir, "trainval"):
            objects = read_voc_xml(os.path.join(voc_dir, "Annotations", f"{file_id}.xml"))["objects"]
            line = f"datasets/VOC{year}/JPEGImages/{file_id}.jpg"
            for name in dict.fromkeys(o[0] for o in objects):
                files_by_class.setdefault(name, []).append((line, sum(o[0] == name for o in objects)))
    if classes:
        for name in classes:
            if name not in files_by_class:
                raise InputError(f"class '{name}' has no object in the trainval images", path=root)
        files_by_class = {c: files_by_class[c] for c in classes}
    for name in files_by_class:
        _check_file_name(name, root)
    plans = {}
    for seed in seeds:
        try:
            plans[seed] = sample_voc_splits(files_by_class, shots, seed)
        except InputError as e:
            raise InputError(str(e), path=root) from None
    written = 0
    for seed, plan in plans.items():
        folder = seed_folder(out, seed)
        os.makedirs(folder, exist_ok=True)
        for (k, name), lines in plan.items():
            with open(os.path.join(folder, voc_fewshot_file_name(k, name)), "w") as f:
                f.write("".join(line + "\n" for line in lines))
            written += 1
    logger.debug("wrote %d split files for seeds %s to %s", written, seeds, out)
    return written
