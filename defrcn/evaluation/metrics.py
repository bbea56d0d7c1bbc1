"""Evaluate detections with the data set's protocol, show the result as a table, write it.

`metrics` is a flat dict on a 0-100 scale (the README's "Output folder"): `AP AP50 AP75 APs APm APl`,
the same with `b` (base) and `n` (novel) prefixes, and `per_class` {name: AP}. NaN (a
group without ground truth) is written to json as null (`defrcn.utils.atomic.write_json_atomic`).
"""
import math


__all__ = ["evaluate_detections", "format_table", "HEADLINE_KEYS"]

HEADLINE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
GROUPS = (("all", ""), ("base", "b"), ("novel", "n"))


def evaluate_detections(detections, records, meta):
    """metrics of COCO-format `detections` on the test `records`, by `meta.evaluator`
    ("coco": pycocotools COCOeval; "voc": VOC07 11-point AP)."""
    if meta.evaluator == "voc":
        from defrcn.evaluation.voc_evaluator import evaluate_voc

        return evaluate_voc(detections, records, meta)
    from defrcn.evaluation.coco_evaluator import evaluate_coco

    return evaluate_coco(detections, meta, records=records)


def _cell(value):
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"


def format_table(metrics, *, base_classes=(), novel_classes=()):
    """A plain-text table: the headline metrics (rows) for all / base / novel (columns),
    then per-class AP, tagged base or novel when the names are given."""
    rows = [k for k in HEADLINE_KEYS if k in metrics]
    columns = [(title, prefix) for title, prefix in GROUPS
               if any(prefix + k in metrics for k in rows)]
    lines = ["metric " + "".join(f"{title:>9}" for title, _ in columns)]
    for key in rows:
        lines.append(f"{key:<7}" + "".join(f"{_cell(metrics.get(prefix + key)):>9}"
                                             for _, prefix in columns))
    per_class = metrics.get("per_class") or {}
    if per_class:
        width = max(len("class"), *(len(n) for n in per_class))
        lines += ["", f"{'class':<{width}}  {'AP':>7}"]
        for name, value in per_class.items():
            tag = " (novel)" if name in novel_classes else " (base)" if name in base_classes else ""
            lines.append(f"{name:<{width}}  {_cell(value):>7}{tag}")
    return "\n".join(lines)
