"""The box predictor's classifier dropout: the DeFRCN fine-tune's CLS_DROPOUT (p = 0.8), drawn
from counter-based keys so that a resumed fine-tune sees the same masks."""
import mindspore as ms
import numpy as np
import pytest

from defrcn.modeling.detector import build_detector
from defrcn.modeling.predictor import BoxPredictor

ROWS, CHANNELS = 64, 256


def _mask(step, salt=0, p=0.8):
    predictor = BoxPredictor(CHANNELS, 3, cls_dropout=p, sample_salt=salt)
    return predictor.dropout_mask((ROWS, CHANNELS), ms.Tensor(step, ms.int32)).asnumpy()


def test_mask_keeps_one_minus_p_scaled_as_torch_dropout():
    mask = _mask(3)
    kept = mask > 0
    assert set(np.unique(mask)) <= {0.0, np.float32(5.0)}
    assert abs(kept.mean() - 0.2) < 0.01, kept.mean()  # 16384 draws: 3 sigma is 0.009
    # no structure across rows or channels: every row and column keeps about 20%
    assert abs(kept.mean(axis=1) - 0.2).max() < 0.2 and abs(kept.mean(axis=0) - 0.2).max() < 0.25
    assert abs(np.corrcoef(kept[:, :-1].ravel(), kept[:, 1:].ravel())[0, 1]) < 0.03


def test_mask_is_a_function_of_step_and_rank_only():
    ms.set_seed(1)
    first = _mask(5)
    ms.set_seed(2)  # MindSpore's own RNG plays no part
    assert np.array_equal(first, _mask(5))
    others = [_mask(6), _mask(5, salt=1)]
    for other in others:
        agreement = ((first > 0) == (other > 0)).mean()
        assert agreement < 0.75, agreement  # independent masks agree on 0.8^2 + 0.2^2 = 68%


def test_dropout_is_off_in_inference():
    predictor = BoxPredictor(CHANNELS, 3, cls_dropout=0.8)
    features = ms.Tensor(np.random.RandomState(0).randn(ROWS, CHANNELS).astype(np.float32))
    predictor.set_train(False)
    scores, _ = predictor(features)
    expected = features.asnumpy() @ predictor.cls_score.weight.asnumpy().T + predictor.cls_score.bias.asnumpy()
    np.testing.assert_allclose(scores.asnumpy(), expected, rtol=1e-5, atol=1e-6)


def test_bad_probability_is_refused():
    with pytest.raises(ValueError, match="cls_dropout"):
        BoxPredictor(CHANNELS, 3, cls_dropout=1.0)


def _losses(model, batch):
    model.set_train(True)
    return np.array([float(loss.asnumpy()) for loss in model(*batch)])


def test_detector_losses_with_dropout_depend_on_the_step_counter_not_on_the_global_seed():
    rng = np.random.RandomState(0)
    images = ms.Tensor(rng.randn(1, 3, 96, 96).astype(np.float32))
    sizes = ms.Tensor(np.array([[96, 96]], np.float32))
    boxes = ms.Tensor(np.array([[[10, 12, 60, 70], [40, 30, 90, 88]]], np.float32))
    classes = ms.Tensor(np.array([[0, 2]], np.int32))
    valid = ms.Tensor(np.ones((1, 2), np.float32))
    batch = (images, sizes, boxes, classes, valid)
    ms.set_seed(0)
    model = build_detector(num_classes=3, depth=18, cls_dropout=0.8, verbose=False,
                           rpn=dict(pre_nms_topk_train=100, post_nms_topk_train=32),
                           roi=dict(batch_size_per_image=16))
    first = _losses(model, batch)  # step 0 -> 1
    second = _losses(model, batch)  # step 1 -> 2
    assert first[3] != second[3]  # another mask (and another RoI sample) at another step
    model.sample_step.set_data(ms.Tensor(0, ms.int32))
    ms.set_seed(123)
    assert np.array_equal(_losses(model, batch), first)
