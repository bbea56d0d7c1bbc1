"""PCB prototypes: the mean embedding of each class's support boxes, cached on disk.

The support set is exactly the fine-tuning training set of the run, as in the original's
`calibration_layer.py`: `load_split(spec, "train")` of the run's `DataSpec`, the call the
recipe's `dataset(cfg, "train")` makes, so K, the split seed and the split files are the
training run's. Every ground-truth box counts once per record
(a VOC image listed for two classes is seen twice, as in the original's loader), in
original-image pixels.

Cache: `<cache_dir>/<support set name>_<feature model>_<digest>.npz`, where the digest
hashes the support set's content (files, sizes, boxes, class names) and the feature
model's fingerprint (weights file, or the detector's parameters for "self"); a changed
split or model gives a new file, a repeated evaluation reuses the old one.
"""
import hashlib
import json
import logging
import os
from typing import List, NamedTuple

import numpy as np

__all__ = ["Prototypes", "load_support_set", "support_digest", "embed_all", "compute_prototypes", "cache_path",
           "load_or_compute_prototypes"]

logger = logging.getLogger(__name__)


class Prototypes(NamedTuple):
    """class_names (P,) with a prototype; vectors float32 (P, E); counts int64 (P,) support boxes."""

    class_names: List[str]
    vectors: np.ndarray
    counts: np.ndarray


def load_support_set(spec):
    """(records, meta) of a fine-tuning `DataSpec`'s K-shot training set: the support set."""
    from defrcn.data.spec import load_split
    from defrcn.errors import InputError

    if spec.setting not in ("fsod", "tfa"):
        raise InputError(f"test.pcb.enable: PCB needs a fine-tuning recipe (data.setting fsod or tfa), "
                         f"got '{spec.setting}'")
    return load_split(spec, "train")


def _support_boxes(record):
    anns = record.get("annotations", [])
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    classes = np.array([a["category_id"] for a in anns], np.int64)
    return boxes, classes


def support_digest(records, meta, fingerprint=""):
    """Hex sha256 of the support set's content and a feature-model fingerprint."""
    content = [[r["file_name"], r["height"], r["width"],
                [[[round(float(v), 4) for v in a["bbox"]], meta.class_names[a["category_id"]]]
                 for a in r.get("annotations", [])]] for r in records]
    digest = hashlib.sha256(json.dumps(content).encode())
    digest.update(str(fingerprint).encode())
    return digest.hexdigest()


def embed_all(feature_model, pairs):
    """`feature_model.embed_many(pairs)` when it has it (one pass over many images), else
    `embed` per (image, boxes) pair; a list of (N_i, E) arrays, in order."""
    if hasattr(feature_model, "embed_many"):
        return feature_model.embed_many(pairs)
    return [feature_model.embed(image, boxes) for image, boxes in pairs]


def compute_prototypes(feature_model, records, meta, load_image=None):
    """Mean `feature_model.embed` of every support box per class (classes without boxes left out).

    load_image(record) -> uint8 (H, W, 3) RGB original image (default: the data layer's reader).
    The records of one image file (a VOC image listed for two classes) are embedded in one pass.
    """
    if load_image is None:
        from defrcn.data.pipeline import load_image
    with_boxes = [r for r in records if r.get("annotations")]
    by_file = {}
    for record in with_boxes:
        by_file.setdefault(record["file_name"], []).append(record)
    groups = list(by_file.values())

    def pairs():
        for index, group in enumerate(groups):
            boxes = np.concatenate([_support_boxes(r)[0] for r in group])
            yield load_image(group[0]), boxes
            if (index + 1) % 100 == 0:
                logger.info("PCB support: %d / %d images", index + 1, len(groups))

    per_file = embed_all(feature_model, pairs())
    embeddings = {}  # id(record) -> its rows
    for group, rows in zip(groups, per_file):
        start = 0
        for record in group:
            count = len(record["annotations"])
            embeddings[id(record)] = np.asarray(rows[start:start + count], np.float64)
            start += count
    sums, counts = {}, {}
    for record in with_boxes:  # summed in record order, as one record at a time would
        for cls, vector in zip(_support_boxes(record)[1].tolist(), embeddings[id(record)]):
            sums[cls] = sums.get(cls, 0.0) + vector
            counts[cls] = counts.get(cls, 0) + 1
    ids = sorted(sums)
    vectors = np.stack([sums[i] / counts[i] for i in ids]).astype(np.float32) if ids else \
        np.zeros((0, feature_model.dim), np.float32)
    return Prototypes([meta.class_names[i] for i in ids], vectors, np.array([counts[i] for i in ids], np.int64))


def cache_path(cache_dir, meta, feature_model, digest):
    """`<cache_dir>/<support set name>_<feature model tag>_<digest[:16]>.npz`."""
    return os.path.join(str(cache_dir), f"{meta.name}_{feature_model.tag}_{digest[:16]}.npz")


def _read_cache(path, digest):
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["digest"]) != digest:
                return None
            return Prototypes([str(n) for n in f["class_names"]], f["vectors"].astype(np.float32),
                              f["counts"].astype(np.int64))
    except (OSError, KeyError, ValueError) as e:
        logger.warning("PCB: ignoring unreadable prototype cache %s (%s)", path, e)
        return None


def _write_cache(path, digest, protos):
    from defrcn.utils.atomic import atomic_output

    with atomic_output(path, ".npz") as tmp:  # np.savez appends .npz to other names
        np.savez(tmp, digest=np.array(digest), class_names=np.array(protos.class_names, dtype=str),
                 vectors=protos.vectors, counts=protos.counts)


def load_or_compute_prototypes(feature_model, records, meta, cache_dir=None, load_image=None):
    """Prototypes of the support set, read from / written to `cache_dir` (None: no cache)."""
    if cache_dir is None:
        return compute_prototypes(feature_model, records, meta, load_image)
    digest = support_digest(records, meta, feature_model.fingerprint)
    path = cache_path(cache_dir, meta, feature_model, digest)
    if os.path.isfile(path):
        cached = _read_cache(path, digest)
        if cached is not None:
            logger.info("PCB: prototypes from %s", path)
            return cached
    protos = compute_prototypes(feature_model, records, meta, load_image)
    _write_cache(path, digest, protos)
    logger.info("PCB: %d prototypes from %d support boxes written to %s", len(protos.class_names),
                int(protos.counts.sum()), path)
    return protos
