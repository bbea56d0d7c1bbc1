"""PCB rescoring in numpy (the paper, section 3.3; DeFRCN `defrcn/evaluation/calibration_layer.py`).

A detection of class c with lower < score <= upper becomes
    alpha * score + (1 - alpha) * cos(embedding, prototype[c]);
every other detection keeps its score. Nothing is re-sorted or re-thresholded, so a new
score may fall below `lower` or go negative (a cosine of logit vectors). Classes without
a prototype, and the base classes of a gFSOD ("tfa") evaluation, are left alone.

Class ids: `prototype_rows` maps the test set's contiguous ids to rows of the prototype
matrix by class NAME (the two id spaces need not agree); -1 = leave the class alone.
"""
import numpy as np

__all__ = ["PCB_ALPHA", "PCB_LOWER", "PCB_UPPER", "prototype_rows", "select_for_calibration",
           "cosine_similarity", "calibrate_scores"]

PCB_ALPHA = 0.5  # DeFRCN defaults.py TEST.PCB_ALPHA
PCB_UPPER = 1.0  # TEST.PCB_UPPER
PCB_LOWER = 0.05  # TEST.PCB_LOWER


def prototype_rows(test_class_names, prototype_class_names, untouched_names=()):
    """int64 (C_test,): row of each test class in the prototype matrix, -1 when the class
    has no prototype or is in `untouched_names` (the base classes of a gFSOD evaluation)."""
    row_of = {name: i for i, name in enumerate(prototype_class_names)}
    untouched = set(untouched_names)
    return np.array([-1 if name in untouched else row_of.get(name, -1) for name in test_class_names],
                    np.int64)


def select_for_calibration(scores, classes, rows, lower=PCB_LOWER, upper=PCB_UPPER):
    """bool (D,): detections to rescore: lower < score <= upper and a prototype row >= 0.

    scores (D,) float, classes (D,) contiguous test ids, rows from `prototype_rows`.
    """
    scores = np.asarray(scores)
    classes = np.asarray(classes, np.int64)
    if classes.size and (classes.min() < 0 or classes.max() >= len(rows)):
        raise ValueError(f"class ids must be in [0, {len(rows)}), got {classes.min()}..{classes.max()}")
    has_row = rows[classes] >= 0 if classes.size else np.zeros(0, bool)
    return (scores > lower) & (scores <= upper) & has_row


def cosine_similarity(a, b):
    """Row-wise cosine of (N, E) and (N, E) -> float32 (N,); 0 where a vector is all zeros
    (as sklearn's cosine_similarity, which the original calls)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    out = np.zeros(len(a), np.float64)
    np.divide(dots, norms, out=out, where=norms > 0)
    return out.astype(np.float32)


def calibrate_scores(scores, classes, selected, embeddings, prototypes, rows, alpha=PCB_ALPHA):
    """New scores float32 (D,), same order as `scores`.

    Args:
        scores (D,), classes (D,) contiguous test ids.
        selected: bool (D,) from `select_for_calibration`.
        embeddings: (M, E) embeddings of the selected detections, in order (M = selected.sum()).
        prototypes: (P, E) one row per prototype class; rows: `prototype_rows` of the test classes.
        alpha: weight of the detector's score.
    """
    out = np.array(scores, np.float32, copy=True)
    selected = np.asarray(selected, bool)
    if not selected.any():
        return out
    embeddings = np.asarray(embeddings, np.float32).reshape(int(selected.sum()), -1)
    proto = np.asarray(prototypes, np.float32)[rows[np.asarray(classes, np.int64)[selected]]]
    cos = cosine_similarity(embeddings, proto)
    out[selected] = np.float32(alpha) * out[selected] + np.float32(1.0 - alpha) * cos
    return out
