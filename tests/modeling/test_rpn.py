import numpy as np
import pytest
import mindspore as ms
from mindspore import ops

from defrcn.modeling.anchors import make_cell_anchors
from defrcn.modeling.rpn import RPN, RPNHead

IN_CHANNELS = 8
FEATURE = 8            # 8x8 map at stride 16: a 128x128 canvas
SAMPLES = 64           # batch_size_per_image for the tests (256 in DeFRCN)
IMAGE_SIZES = np.array([[128, 128], [100, 120]], np.float32)
GT_BOXES = np.array([[[10, 10, 60, 50], [70, 70, 120, 110], [0, 0, 0, 0]],
                     [[20, 30, 90, 80], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
GT_VALID = np.array([[1, 1, 0], [1, 0, 0]], np.float32)


pytestmark = pytest.mark.usefixtures("pynative_mode")


def make_rpn(**overrides):
    ms.set_seed(0)
    settings = dict(in_channels=IN_CHANNELS, pre_nms_topk_train=300, post_nms_topk_train=50,
                    pre_nms_topk_test=200, post_nms_topk_test=40, batch_size_per_image=SAMPLES)
    settings.update(overrides)
    return RPN(**settings)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, IN_CHANNELS, FEATURE, FEATURE)).astype(np.float32)
    return (ms.Tensor(features), ms.Tensor(IMAGE_SIZES), ms.Tensor(GT_BOXES), ms.Tensor(GT_VALID))


def np_pairwise_iou(a, b):
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def check_proposals(proposals, valid, count):
    assert proposals.shape == (2, count, 4) and valid.shape == (2, count)
    assert set(np.unique(valid).tolist()) <= {0.0, 1.0}
    for image in range(2):
        height, width = IMAGE_SIZES[image]
        kept = proposals[image][valid[image] > 0]
        n_kept = len(kept)
        assert (valid[image][:n_kept] == 1).all(), "valid proposals must come first"
        assert (proposals[image][n_kept:] == 0).all()
        assert (kept[:, 0] >= 0).all() and (kept[:, 2] <= width).all()
        assert (kept[:, 1] >= 0).all() and (kept[:, 3] <= height).all()
        assert ((kept[:, 2] > kept[:, 0]) & (kept[:, 3] > kept[:, 1])).all()
        iou = np_pairwise_iou(kept, kept) - np.eye(n_kept)
        assert iou.max() <= 0.7 + 1e-5, "NMS left overlapping proposals"


def test_head_shapes_and_init():
    head = RPNHead(IN_CHANNELS, 15)
    objectness, deltas = head(ms.Tensor(np.ones((1, IN_CHANNELS, 5, 6), np.float32)))
    assert objectness.shape == (1, 15, 5, 6) and deltas.shape == (1, 60, 5, 6)
    for name, param in head.parameters_and_names():
        values = param.asnumpy()
        if name.endswith("bias"):
            assert (values == 0).all()
        else:
            assert 0.005 < values.std() < 0.015 and abs(values.mean()) < 0.003


def test_training_outputs_and_losses():
    rpn = make_rpn()
    rpn.set_train(True)
    proposals, valid, loss_objectness, loss_box = rpn(*inputs())
    check_proposals(proposals.asnumpy(), valid.asnumpy(), 50)
    assert valid.asnumpy().sum() == 100   # 300 candidates on a random map leave > 50 each
    for loss in (loss_objectness, loss_box):
        value = float(loss.asnumpy())
        assert np.isfinite(value) and value > 0


def test_eval_outputs_and_padding_when_few_survive():
    rpn = make_rpn(pre_nms_topk_test=20, post_nms_topk_test=40)
    rpn.set_train(False)
    outputs = rpn(*inputs()[:2])
    assert len(outputs) == 2
    proposals, valid = (t.asnumpy() for t in outputs)
    check_proposals(proposals, valid, 40)
    assert 0 < valid.sum(axis=1).max() <= 20


def test_losses_match_a_numpy_reference():
    rpn = make_rpn()
    bias = 0.3
    for name, param in rpn.head.parameters_and_names():
        values = np.zeros(param.shape, np.float32)
        if name == "objectness_logits.bias":
            values[:] = bias
        param.set_data(ms.Tensor(values))
    rpn.set_train(True)
    _, _, loss_objectness, loss_box = rpn(*inputs())

    cell = make_cell_anchors((32, 64, 128, 256, 512), (0.5, 1.0, 2.0))
    ys, xs = np.meshgrid(np.arange(FEATURE) * 16.0, np.arange(FEATURE) * 16.0, indexing="ij")
    shifts = np.stack([xs, ys, xs, ys], axis=-1).reshape(-1, 1, 4)
    anchors = (shifts + cell[None]).reshape(-1, 4)
    softplus = lambda x: np.log1p(np.exp(x))
    expected_objectness = expected_box = 0.0
    for image in range(2):
        gts = GT_BOXES[image][GT_VALID[image] > 0]
        iou = np_pairwise_iou(gts, anchors)                       # (G, N)
        best = iou.max(axis=0)
        positive = (best >= 0.7) | (iou == iou.max(axis=1, keepdims=True)).any(axis=0)
        negative = (best < 0.3) & ~positive
        n_pos = int(positive.sum())
        assert 0 < n_pos <= SAMPLES // 2 and negative.sum() >= SAMPLES
        expected_objectness += n_pos * softplus(-bias) + (SAMPLES - n_pos) * softplus(bias)
        matched = gts[iou.argmax(axis=0)][positive]
        ref = anchors[positive]
        ref_w, ref_h = ref[:, 2] - ref[:, 0], ref[:, 3] - ref[:, 1]
        gt_w, gt_h = matched[:, 2] - matched[:, 0], matched[:, 3] - matched[:, 1]
        dx = (matched[:, 0] + gt_w / 2 - ref[:, 0] - ref_w / 2) / ref_w
        dy = (matched[:, 1] + gt_h / 2 - ref[:, 1] - ref_h / 2) / ref_h
        targets = np.stack([dx, dy, np.log(gt_w / ref_w), np.log(gt_h / ref_h)], axis=1)
        expected_box += np.abs(targets).sum()
    normaliser = SAMPLES * 2
    np.testing.assert_allclose(float(loss_objectness.asnumpy()), expected_objectness / normaliser,
                               rtol=1e-5)
    np.testing.assert_allclose(float(loss_box.asnumpy()), expected_box / normaliser, rtol=1e-4)


def test_no_valid_gt_gives_background_only_losses():
    rpn = make_rpn()
    rpn.set_train(True)
    features, sizes, boxes, _ = inputs()
    _, _, loss_objectness, loss_box = rpn(features, sizes, boxes,
                                          ms.Tensor(np.zeros_like(GT_VALID)))
    assert float(loss_box.asnumpy()) == 0.0
    assert 0.6 < float(loss_objectness.asnumpy()) < 0.8   # ~log 2 with near-zero logits


def test_gradient_reaches_head_but_not_through_proposals():
    rpn = make_rpn()
    rpn.set_train(True)
    features, sizes, boxes, valid = inputs()
    params = rpn.head.trainable_params()

    def total_loss(x):
        _, _, loss_objectness, loss_box = rpn(x, sizes, boxes, valid)
        return loss_objectness + loss_box

    feature_grad, param_grads = ms.value_and_grad(total_loss, grad_position=0,
                                                  weights=params)(features)[1]
    assert np.abs(feature_grad.asnumpy()).sum() > 0
    for param, grad in zip(params, param_grads):
        assert np.abs(grad.asnumpy()).sum() > 0, param.name

    def proposal_sum(x):
        return rpn(x, sizes, boxes, valid)[0].sum()

    grad = ms.grad(proposal_sum, grad_position=0)(features)
    assert np.abs(grad.asnumpy()).sum() == 0


def test_step_keys_make_sampling_reproducible():
    rpn = make_rpn()
    rpn.set_train(True)
    args = inputs()
    first = rpn(*args, ms.Tensor(5, ms.int32))[2:]
    again = rpn(*args, ms.Tensor(5, ms.int32))[2:]
    other = rpn(*args, ms.Tensor(6, ms.int32))[2:]
    for a, b in zip(first, again):
        assert float(a.asnumpy()) == float(b.asnumpy())
    assert float(first[0].asnumpy()) != float(other[0].asnumpy())


def test_graph_mode_gives_the_same_outputs_as_pynative(in_mode):
    rpn = make_rpn()
    args = inputs(seed=1)
    step = ms.Tensor(3, ms.int32)
    rpn.set_train(False)
    eager_eval = [t.asnumpy() for t in rpn(*args[:2])]
    rpn.set_train(True)
    eager_train = [t.asnumpy() for t in rpn(*args, step)]
    with in_mode("graph"):
        rpn.set_train(False)
        graph_eval = [t.asnumpy() for t in rpn(*args[:2])]
        rpn.set_train(True)
        graph_train = [t.asnumpy() for t in rpn(*args, step)]
    for eager, graph in zip(eager_eval + eager_train, graph_eval + graph_train):
        np.testing.assert_allclose(graph, eager, rtol=1e-5, atol=1e-4)
    assert np.isfinite(graph_train[2]) and graph_train[2] > 0
    assert np.isfinite(graph_train[3]) and graph_train[3] > 0


def test_rejects_unknown_box_loss():
    with pytest.raises(ValueError):
        make_rpn(box_reg_loss="giou")
