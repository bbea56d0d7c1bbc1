"""Names of the detector's parameters that checkpoint tools address directly (no MindSpore import).

The box predictor (`roi_heads.box_predictor`, `predictor.py`) follows detectron2's
`FastRCNNOutputLayers`: cls_score (C + 1 rows, background last) and class-specific
bbox_pred (4 rows per class).
"""
__all__ = ["CLS_WEIGHT", "CLS_BIAS", "BOX_WEIGHT", "BOX_BIAS", "PREDICTOR_KEYS", "SAMPLE_STEP"]

CLS_WEIGHT = "roi_heads.box_predictor.cls_score.weight"  # (C + 1, D)
CLS_BIAS = "roi_heads.box_predictor.cls_score.bias"  # (C + 1,)
BOX_WEIGHT = "roi_heads.box_predictor.bbox_pred.weight"  # (4C, D)
BOX_BIAS = "roi_heads.box_predictor.bbox_pred.bias"  # (4C,)
PREDICTOR_KEYS = (CLS_WEIGHT, CLS_BIAS, BOX_WEIGHT, BOX_BIAS)
SAMPLE_STEP = "sample_step"  # the RoI/anchor samplers' step counter (detector.py)
