"""Prototypical Calibration Block (DeFRCN, Qiao et al. 2021, section 3.3;
the original's `defrcn/evaluation/calibration_layer.py`).

    pcb = build_pcb(spec, cfg.test.pcb, build_feature_model(cfg.test.pcb, model, input=cfg.input),
                    test_meta=test_data.meta)                 # once per evaluation
    new_scores = pcb.rescore(record, boxes, scores, classes)   # per test image
    new_scores = pcb.rescore_many([(record, boxes, scores, classes), ...])  # many, one pass

`feature_model.py` embeds boxes, `prototypes.py` builds the per-class prototypes from the
fine-tuning split, `calibration.py` rescores (numpy).
"""
import os

import numpy as np

from defrcn.pcb.calibration import calibrate_scores, prototype_rows, select_for_calibration

__all__ = ["PCB", "build_pcb", "default_cache_dir"]

PROTOTYPE_CACHE_FOLDER = "pcb"  # under the run's output_dir


class PCB:
    """Rescores one image's detections against the class prototypes.

    Args:
        feature_model: has `embed(image uint8 (H, W, 3) RGB, boxes (N, 4)) -> (N, E)` (and may
            have `embed_many(iterable of (image, boxes)) -> list`, used by `rescore_many`).
        prototypes: `prototypes.Prototypes`.
        test_class_names: the test set's class names in contiguous-id order.
        untouched_classes: names never rescored (gFSOD base classes).
        alpha, lower, upper: cfg.test.pcb (0.5, 0.05, 1.0).
        load_image: record -> uint8 (H, W, 3) RGB original image (default: the data layer's).
    """

    def __init__(self, feature_model, prototypes, test_class_names, *, untouched_classes=(), alpha=0.5,
                 lower=0.05, upper=1.0, load_image=None):
        if load_image is None:
            from defrcn.data.pipeline import load_image
        self.feature_model = feature_model
        self.prototypes = prototypes
        self.test_class_names = list(test_class_names)
        self.rows = prototype_rows(self.test_class_names, prototypes.class_names, untouched_classes)
        self.alpha, self.lower, self.upper = float(alpha), float(lower), float(upper)
        self.load_image = load_image

    def rescore(self, record, boxes, scores, classes):
        """New scores float32 (D,) in the input order (nothing re-sorted).

        record: the test record (file_name, height, width); boxes (D, 4) XYXY original pixels;
        scores (D,); classes (D,) contiguous ids of the test set's meta.
        """
        return self.rescore_many([(record, boxes, scores, classes)])[0]

    def rescore_many(self, images):
        """`rescore` of many images in one pass of the feature model (`embed_many`): images is
        a list of (record, boxes, scores, classes); returns their new scores, in order."""
        from defrcn.pcb.prototypes import embed_all

        prepared, todo = [], []
        for record, boxes, scores, classes in images:
            scores = np.asarray(scores, np.float32).reshape(-1)
            classes = np.asarray(classes).reshape(-1).astype(np.int64)
            selected = select_for_calibration(scores, classes, self.rows, self.lower, self.upper)
            prepared.append((scores, classes, selected))
            if selected.any():
                todo.append((record, np.asarray(boxes, np.float32).reshape(-1, 4)[selected]))
        pairs = ((self.load_image(record), boxes) for record, boxes in todo)
        embedded = iter(embed_all(self.feature_model, pairs))
        out = []
        for scores, classes, selected in prepared:
            if not selected.any():
                out.append(scores.copy())
                continue
            out.append(calibrate_scores(scores, classes, selected, next(embedded), self.prototypes.vectors,
                                        self.rows, self.alpha))
        return out


def default_cache_dir(pcb, output_dir):
    """The prototype cache folder: `pcb.cache_dir` if set, else OUTPUT/pcb, else None (no cache)."""
    explicit = pcb.get("cache_dir", "")
    if explicit:
        return explicit
    return os.path.join(output_dir, PROTOTYPE_CACHE_FOLDER) if output_dir else None


def build_pcb(spec, pcb, feature_model, *, test_meta=None, cache_dir=None, load_image=None):
    """PCB for the evaluation of a fine-tuning run.

    spec: the run's `DataSpec` (its K-shot set is the support set); pcb: the `test.pcb`
    settings (alpha, lower, upper); feature_model: from `build_feature_model`; test_meta: the
    test set's meta (the class-id space of `rescore`; None = the support set's classes);
    cache_dir: where prototypes are cached (None = not cached); load_image: for tests, tools.
    """
    from defrcn.pcb.prototypes import load_or_compute_prototypes, load_support_set

    records, meta = load_support_set(spec)
    protos = load_or_compute_prototypes(feature_model, records, meta, cache_dir, load_image)
    test_meta = test_meta if test_meta is not None else meta
    untouched = spec.base_classes if spec.setting == "tfa" else ()
    return PCB(feature_model, protos, test_meta.class_names, untouched_classes=untouched, alpha=pcb["alpha"],
               lower=pcb["lower"], upper=pcb["upper"], load_image=load_image)
