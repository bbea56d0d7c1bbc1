import numpy as np
import pytest
import mindspore as ms

from defrcn.modeling.matching import match

RPN = dict(thresholds=(0.3, 0.7), labels=(0, -1, 1), allow_low_quality_matches=True)
ROI = dict(thresholds=(0.5,), labels=(0, 1), allow_low_quality_matches=False)


pytestmark = pytest.mark.usefixtures("pynative_mode")


def run(iou, valid, **kw):
    idx, labels = match(ms.Tensor(np.asarray(iou, np.float32)),
                        ms.Tensor(np.asarray(valid, np.float32)), **kw)
    assert idx.dtype == ms.int32 and labels.dtype == ms.int32
    return idx.asnumpy().tolist(), labels.asnumpy().tolist()


def test_thresholds_without_low_quality():
    iou = [[0.1, 0.3, 0.69, 0.7, 0.0],
           [0.2, 0.1, 0.05, 0.9, 0.29]]
    idx, labels = run(iou, [1, 1], thresholds=(0.3, 0.7), labels=(0, -1, 1))
    assert labels == [0, -1, -1, 1, 0]
    assert idx[:4] == [1, 0, 0, 1]


def test_low_quality_matches_promote_best_prediction_per_gt():
    # gt 0 has max IoU 0.4 (ignore band) at predictions 1 and 3 (tie); gt 1 max 0.8 at pred 2.
    iou = [[0.1, 0.4, 0.2, 0.4, 0.0],
           [0.0, 0.1, 0.8, 0.0, 0.25]]
    idx, labels = run(iou, [1, 1], **RPN)
    assert labels == [0, 1, 1, 1, 0]
    assert idx[1] == 0 and idx[3] == 0 and idx[2] == 1


def test_padded_gts_are_never_matched():
    iou = [[0.1, 0.5, 0.0],
           [0.95, 0.95, 0.95]]   # row 1 is padding: its IoUs must be ignored
    idx, labels = run(iou, [1, 0], **RPN)
    assert labels == [0, 1, 0]   # prediction 1 is gt 0's best (low quality); others background
    assert idx == [0, 0, 0]
    idx, labels = run(iou, [1, 0], **ROI)
    assert labels == [0, 1, 0]


def test_no_valid_gt_gives_all_background():
    iou = [[0.9, 0.8, 0.1], [0.5, 0.7, 1.0]]
    for kw in (RPN, ROI):
        _, labels = run(iou, [0, 0], **kw)
        assert labels == [0, 0, 0]


def test_gt_without_overlap_does_not_turn_everything_positive():
    iou = [[0.0, 0.0, 0.0], [0.0, 0.8, 0.1]]
    _, labels = run(iou, [1, 1], **RPN)
    assert labels == [0, 1, 0]


def test_roi_threshold_is_inclusive():
    iou = [[0.5, 0.49, 0.0, 0.7]]
    _, labels = run(iou, [1], **ROI)
    assert labels == [1, 0, 0, 1]


def test_labels_length_is_checked():
    with pytest.raises(ValueError):
        match(ms.Tensor(np.zeros((1, 2), np.float32)), ms.Tensor(np.ones(1, np.float32)),
              (0.5,), (0, 1, 1))
