"""Res5ROIHeads (defrcn.modeling.roi_heads) on hand-made cases: proposal labelling (IoU >= 0.5
against the valid gts, background = num_classes, gts appended as proposals), the balanced
sample of `batch_size_per_image` RoIs (detectron2's subsample_labels counts) and the two losses
against numpy (detectron2's FastRCNNOutputLayers.losses: softmax cross-entropy and the L1 box
loss on foreground RoIs with class-specific deltas, both divided by the number of sampled RoIs).
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from defrcn.modeling.box_coding import BoxCoder, ROI_BOX_WEIGHTS
from defrcn.modeling.pooler import ROIPooler
from defrcn.modeling.postprocess import detect
from defrcn.modeling.predictor import BoxPredictor
from defrcn.modeling.roi_heads import Res5ROIHeads

C = 3             # foreground classes; background is class 3
CHANNELS = 4      # res4 channels of the toy feature map
RES5_CHANNELS = 6


pytestmark = pytest.mark.usefixtures("pynative_mode")  # tests/conftest.py


def make_heads(**overrides):
    ms.set_seed(0)
    settings = dict(pooler=ROIPooler(7, 1.0 / 16), num_classes=C,
                    res5=nn.Conv2d(CHANNELS, RES5_CHANNELS, 3, stride=2, pad_mode="same", has_bias=True),
                    predictor=BoxPredictor(RES5_CHANNELS, C))
    settings.update(overrides)
    return Res5ROIHeads(**settings)


def tensors(*arrays):
    return [ms.Tensor(a) for a in arrays]


def label_and_sample(heads, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, step=0):
    arrays = [np.asarray(proposals, np.float32), np.asarray(proposal_valid, np.float32),
              np.asarray(gt_boxes, np.float32), np.asarray(gt_classes, np.int32), np.asarray(gt_valid, np.float32)]
    out = heads.label_and_sample(*tensors(*arrays), ms.Tensor(step, ms.int32))
    return [o.asnumpy() for o in out]


def rows(boxes, classes, targets, weights, image):
    """The filled slots of one image as (box, class, target) tuples, foreground and background."""
    fg, bg = [], []
    for box, cls, target, weight in zip(boxes[image], classes[image], targets[image], weights[image]):
        if weight > 0:
            (fg if cls < C else bg).append((tuple(box.tolist()), int(cls), tuple(target.tolist())))
    return fg, bg


def check_layout(classes, weights, num_fg, num_bg):
    """Foreground slots first, then background, then unfilled slots (weight 0, background)."""
    total = classes.shape[-1]
    assert weights.dtype == np.float32 and set(np.unique(weights).tolist()) <= {0.0, 1.0}
    np.testing.assert_array_equal(weights, [1.0] * (num_fg + num_bg) + [0.0] * (total - num_fg - num_bg))
    assert (classes[:num_fg] < C).all() and (classes[:num_fg] >= 0).all()
    assert (classes[num_fg:] == C).all()


# --- labelling ------------------------------------------------------------------------------

A, B = [0, 0, 100, 100], [50, 0, 150, 100]
PADDED_GT = [300, 300, 400, 400]   # a padded row that a proposal matches exactly: must be ignored
G = [20, 20, 60, 60]
ZERO = [0, 0, 0, 0]
GT_BOXES = [[A, B, PADDED_GT], [G, ZERO, ZERO]]
GT_CLASSES = [[2, 0, 1], [1, 0, 0]]
GT_VALID = [[1, 1, 0], [1, 0, 0]]
PROPOSALS = [
    [A,                   # IoU 1 with A
     [0, 0, 100, 50],     # IoU 0.5 with A exactly: foreground (the threshold is inclusive)
     [0, 0, 100, 49],     # IoU 0.49 with A: background
     [40, 0, 140, 100],   # IoU 0.43 with A, 0.82 with B: matched to B
     [400, 400, 450, 450],  # overlaps nothing: background
     A,                   # an invalid proposal: never sampled though it matches A
     PADDED_GT],          # IoU 1 only with the padded gt row: background
    [G, [20, 20, 60, 40], [100, 100, 150, 150], ZERO, ZERO, ZERO, ZERO],
]
PROPOSAL_VALID = [[1, 1, 1, 1, 1, 0, 1], [1, 1, 1, 0, 0, 0, 0]]


def test_labels_follow_iou_threshold_and_append_the_valid_gts():
    heads = make_heads(batch_size_per_image=16, positive_fraction=0.5)  # room for every candidate
    boxes, classes, targets, weights = label_and_sample(
        heads, PROPOSALS, PROPOSAL_VALID, GT_BOXES, GT_CLASSES, GT_VALID)
    assert boxes.shape == targets.shape == (2, 16, 4)
    assert classes.shape == weights.shape == (2, 16) and classes.dtype == np.int32

    def row(box, cls, target=None):
        return tuple(map(float, box)), cls, None if target is None else tuple(map(float, target))

    expected_fg = [
        [row(A, 2, A), row([0, 0, 100, 50], 2, A), row([40, 0, 140, 100], 0, B), row(A, 2, A), row(B, 0, B)],
        [row(G, 1, G), row([20, 20, 60, 40], 1, G), row(G, 1, G)],
    ]
    expected_bg = [
        [row([0, 0, 100, 49], C), row([400, 400, 450, 450], C), row(PADDED_GT, C)],
        [row([100, 100, 150, 150], C)],
    ]
    for image in range(2):
        fg, bg = rows(boxes, classes, targets, weights, image)
        assert sorted(fg) == sorted(expected_fg[image])
        # a background RoI's target box is never used: compare boxes and classes only
        assert sorted(r[:2] for r in bg) == sorted(r[:2] for r in expected_bg[image])
        check_layout(classes[image], weights[image], len(expected_fg[image]), len(expected_bg[image]))
    # the padded gt's class (1) never reaches image 0
    assert 1 not in classes[0].tolist()


def test_no_valid_gt_makes_every_candidate_background():
    heads = make_heads(batch_size_per_image=16)
    boxes, classes, _, weights = label_and_sample(
        heads, PROPOSALS[:1], PROPOSAL_VALID[:1], GT_BOXES[:1], GT_CLASSES[:1], [[0, 0, 0]])
    # the 6 valid proposals; no gt is appended since none is valid
    check_layout(classes[0], weights[0], 0, 6)
    sampled = sorted(tuple(b) for b in boxes[0][weights[0] > 0].tolist())
    valid = [tuple(map(float, p)) for p, v in zip(PROPOSALS[0], PROPOSAL_VALID[0]) if v]
    assert sampled == sorted(valid)


# --- balanced sampling ----------------------------------------------------------------------

def sampling_case(num_fg, num_bg):
    """One image, gt A (and a padded row): `num_fg` distinct proposals with IoU >= 0.55 with A,
    `num_bg` distinct ones that do not overlap it. Returns the label_and_sample arguments."""
    fg = [[dx, dy, 100 + dx, 100 + dy] for dx in range(1, 21) for dy in range(10)][:num_fg]
    bg = [[200 + 5 * (k % 40), 200 + 5 * (k // 40), 250 + 5 * (k % 40), 250 + 5 * (k // 40)]
          for k in range(num_bg)]
    proposals = np.array([fg + bg], np.float32).reshape(1, -1, 4)
    return (proposals, np.ones(proposals.shape[:2], np.float32), [[A, ZERO]], [[2, 0]], [[1, 0]])


@pytest.mark.parametrize("num_fg, num_bg, size, fraction, want_fg, want_bg", [
    (36, 60, 16, 0.25, 4, 12),     # plenty of both: int(16 * 0.25) foreground
    (36, 60, 16, 0.5, 8, 8),
    (2, 60, 16, 0.25, 3, 13),      # few foreground (2 + the gt): background fills the rest
    (36, 5, 16, 0.25, 4, 5),       # few background: slots stay empty, no extra foreground
    (0, 3, 16, 0.25, 1, 3),        # only the appended gt is foreground
    (200, 1000, 512, 0.25, 128, 384),  # DeFRCN's 512 RoIs per image, 25% foreground
])
def test_sample_counts(num_fg, num_bg, size, fraction, want_fg, want_bg):
    heads = make_heads(batch_size_per_image=size, positive_fraction=fraction)
    proposals, valid, gt_boxes, gt_classes, gt_valid = sampling_case(num_fg, num_bg)
    boxes, classes, targets, weights = label_and_sample(heads, proposals, valid, gt_boxes, gt_classes,
                                                        gt_valid)
    assert boxes.shape == (1, size, 4) and weights.shape == (1, size)
    check_layout(classes[0], weights[0], want_fg, want_bg)
    fg, bg = rows(boxes, classes, targets, weights, 0)
    fg_candidates = {tuple(b) for b in proposals[0][:num_fg].tolist()} | {tuple(map(float, A))}
    bg_candidates = {tuple(b) for b in proposals[0][num_fg:].tolist()}
    assert len({r[0] for r in fg}) == want_fg and {r[0] for r in fg} <= fg_candidates
    assert len({r[0] for r in bg}) == want_bg and {r[0] for r in bg} <= bg_candidates
    assert all(r[1] == 2 and r[2] == tuple(map(float, A)) for r in fg)


def test_sample_is_a_function_of_step_image_and_salt():
    proposals, valid, gt_boxes, gt_classes, gt_valid = sampling_case(36, 60)
    # the same image twice in one batch
    batch = [np.concatenate([a, a])
             for a in map(np.asarray, (proposals, valid, gt_boxes, gt_classes, gt_valid))]
    heads = make_heads(batch_size_per_image=16)

    def sample(step, net=heads):
        return label_and_sample(net, *batch, step=step)[0]

    first = sample(5)
    np.testing.assert_array_equal(first, sample(5))
    assert not np.array_equal(first[0], first[1]), "both images of a batch drew the same RoIs"
    assert not np.array_equal(first, sample(6))
    other_rank = sample(5, make_heads(batch_size_per_image=16, sample_salt=1))
    assert not np.array_equal(first, other_rank)
    # the foreground picks vary over steps: 15 steps draw most of the 37 candidates (a uniform
    # draw of 4 per step leaves about 30 distinct)
    seen = set()
    for step in range(15):
        boxes = label_and_sample(heads, *[a[:1] for a in batch], step=step)[0][0][:4]
        seen |= {tuple(b) for b in boxes.tolist()}
    assert len(seen) >= 25, len(seen)


# --- losses ---------------------------------------------------------------------------------

def np_encode(reference, target, weights=ROI_BOX_WEIGHTS):
    """detectron2 Box2BoxTransform.get_deltas in numpy (float64)."""
    reference, target = np.asarray(reference, np.float64), np.asarray(target, np.float64)
    ref_w, ref_h = reference[:, 2] - reference[:, 0], reference[:, 3] - reference[:, 1]
    tgt_w, tgt_h = target[:, 2] - target[:, 0], target[:, 3] - target[:, 1]
    wx, wy, ww, wh = weights
    return np.stack([
        wx * ((target[:, 0] + 0.5 * tgt_w) - (reference[:, 0] + 0.5 * ref_w)) / ref_w,
        wy * ((target[:, 1] + 0.5 * tgt_h) - (reference[:, 1] + 0.5 * ref_h)) / ref_h,
        ww * np.log(tgt_w / ref_w),
        wh * np.log(tgt_h / ref_h)], axis=1)


def np_losses(logits, deltas, boxes, classes, targets, weights, num_classes=C):
    logits = np.asarray(logits, np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    cross_entropy = log_z - logits[np.arange(len(classes)), classes]
    count = max(weights.sum(), 1.0)
    foreground = (classes < num_classes) & (weights > 0)
    per_class = np.asarray(deltas, np.float64).reshape(len(classes), num_classes, 4)
    predicted = per_class[foreground, classes[foreground]]
    l1 = np.abs(predicted - np_encode(boxes[foreground], targets[foreground])).sum()
    return (cross_entropy * weights).sum() / count, l1 / count


def run_losses(heads, *arrays):
    loss_cls, loss_box = heads.losses(*tensors(*arrays))
    return float(loss_cls.asnumpy()), float(loss_box.asnumpy())


def random_loss_inputs(seed=0):
    rng = np.random.default_rng(seed)
    n = 12
    corners = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(20, 80, (n, 2))], axis=1).astype(np.float32)
    targets = (boxes + rng.uniform(-10, 10, (n, 4))).astype(np.float32)
    classes = np.array([0, 2, 1, 3, 3, 0, 3, 2, 3, 1, 3, 3], np.int32)
    # the last three slots are unfilled; slot 9 has a foreground class yet weight 0
    weights = np.array([1] * 9 + [0] * 3, np.float32)
    logits = rng.normal(0, 2, (n, C + 1)).astype(np.float32)
    deltas = rng.normal(0, 1, (n, 4 * C)).astype(np.float32)
    return logits, deltas, boxes, classes, targets, weights


def test_losses_on_a_hand_computed_case():
    heads = make_heads()
    logits = np.zeros((2, C + 1), np.float32)       # uniform softmax: CE = log(C + 1) per RoI
    deltas = np.zeros((2, 4 * C), np.float32)
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    targets = np.array([[1, 0, 11, 10], [5, 5, 20, 20]], np.float32)
    classes = np.array([1, C], np.int32)
    weights = np.ones(2, np.float32)
    loss_cls, loss_box = run_losses(heads, logits, deltas, boxes, classes, targets, weights)
    assert loss_cls == pytest.approx(np.log(C + 1), rel=1e-6)
    # foreground RoI: dx = 10 * 1 / 10 = 1, other deltas 0; the background RoI adds nothing;
    # divided by the 2 sampled RoIs
    assert loss_box == pytest.approx(0.5, rel=1e-6)


def test_losses_match_numpy():
    heads = make_heads()
    inputs = random_loss_inputs()
    loss_cls, loss_box = run_losses(heads, *inputs)
    expected_cls, expected_box = np_losses(*inputs)
    assert loss_cls == pytest.approx(expected_cls, rel=1e-5)
    assert loss_box == pytest.approx(expected_box, rel=1e-5)
    assert loss_box > 0


def test_box_loss_reads_only_the_gt_class_deltas_of_foreground_rois():
    heads = make_heads()
    logits, deltas, boxes, classes, targets, weights = random_loss_inputs(1)
    base = run_losses(heads, logits, deltas, boxes, classes, targets, weights)
    used = np.zeros((len(classes), C, 4), bool)
    for i, cls in enumerate(classes):
        if cls < C and weights[i] > 0:
            used[i, cls] = True
    used = used.reshape(len(classes), 4 * C)
    unused_changed = np.where(used, deltas, deltas + 100.0)
    assert run_losses(heads, logits, unused_changed, boxes, classes, targets, weights) == base
    used_changed = np.where(used, deltas + 1.0, deltas)
    assert run_losses(heads, logits, used_changed, boxes, classes, targets, weights)[1] != base[1]


def test_losses_are_divided_by_the_sampled_count_not_the_slot_count():
    heads = make_heads()
    logits, deltas, boxes, classes, targets, weights = random_loss_inputs(2)
    loss_cls, loss_box = run_losses(heads, logits, deltas, boxes, classes, targets, weights)
    filled = weights > 0
    # detectron2 on the 9 sampled RoIs alone (no unfilled slots) gives the same numbers
    alone = np_losses(logits[filled], deltas[filled], boxes[filled], classes[filled], targets[filled],
                      weights[filled])
    assert (loss_cls, loss_box) == pytest.approx(alone, rel=1e-5)
    zero = run_losses(heads, logits, deltas, boxes, classes, targets, np.zeros_like(weights))
    assert zero == (0.0, 0.0)


def test_image_without_valid_gt_gives_finite_losses():
    heads = make_heads(batch_size_per_image=16)
    zero_gts = [[ZERO, ZERO, ZERO]]
    sampled = label_and_sample(heads, PROPOSALS[:1], PROPOSAL_VALID[:1], zero_gts, [[0, 0, 0]], [[0, 0, 0]])
    boxes, classes, targets, weights = (a[0] for a in sampled)
    logits, deltas = np.zeros((16, C + 1), np.float32), np.zeros((16, 4 * C), np.float32)
    loss_cls, loss_box = run_losses(heads, logits, deltas, boxes, classes, targets, weights)
    assert loss_cls == pytest.approx(np.log(C + 1), rel=1e-6)
    assert loss_box == 0.0


# --- the Cell -------------------------------------------------------------------------------

def cell_inputs(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(2, CHANNELS, 16, 16)).astype(np.float32)   # a 256 x 256 canvas
    sizes = np.array([[256, 256], [200, 240]], np.float32)
    proposals = np.array(PROPOSALS, np.float32) * 1.5
    return tensors(features, proposals, np.array(PROPOSAL_VALID, np.float32), sizes,
                   np.array(GT_BOXES, np.float32) * 1.5, np.array(GT_CLASSES, np.int32),
                   np.array(GT_VALID, np.float32))


def test_training_forward_is_label_sample_pool_predict_and_losses():
    heads = make_heads(batch_size_per_image=16, positive_fraction=0.5)
    features, proposals, valid, sizes, gt_boxes, gt_classes, gt_valid = cell_inputs()
    step = ms.Tensor(3, ms.int32)
    heads.set_train(True)
    loss_cls, loss_box = (float(x.asnumpy()) for x in heads(features, proposals, valid, sizes, gt_boxes,
                                                                  gt_classes, gt_valid, step))
    boxes, classes, targets, weights = heads.label_and_sample(proposals, valid, gt_boxes, gt_classes,
                                                              gt_valid, step)
    pooled = heads.res5(heads.pooler(features, boxes)).mean(axis=(2, 3))
    logits, deltas = heads.box_predictor(pooled)
    expected = np_losses(logits.asnumpy(), deltas.asnumpy(), boxes.asnumpy().reshape(-1, 4),
                         classes.asnumpy().reshape(-1), targets.asnumpy().reshape(-1, 4),
                         weights.asnumpy().reshape(-1))
    assert (loss_cls, loss_box) == pytest.approx(expected, rel=1e-5)
    assert loss_box > 0


def test_inference_detects_on_every_proposal_in_any_chunk_size():
    features, proposals, valid, sizes = cell_inputs()[:4]
    heads = make_heads(detections_per_image=5)
    heads.set_train(False)
    whole = [o.asnumpy() for o in heads(features, proposals, valid, sizes)]
    assert whole[0].shape == (2, 5, 4) and whole[1].shape == whole[2].shape == whole[3].shape == (2, 5)
    assert whole[3].sum() > 0
    pooled = heads.res5(heads.pooler(features, proposals)).mean(axis=(2, 3))
    logits, deltas = heads.box_predictor(pooled)
    expected = detect(logits, deltas, proposals, valid, sizes, BoxCoder(ROI_BOX_WEIGHTS), num_classes=C,
                      detections_per_image=5)
    for got, want in zip(whole, expected):
        np.testing.assert_allclose(got, want.asnumpy(), rtol=1e-5, atol=1e-5)
    heads.inference_chunk = 3   # 7 proposals per image: chunks of 3, 3 and 1
    chunked = [o.asnumpy() for o in heads(features, proposals, valid, sizes)]
    for got, want in zip(chunked, whole):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_spatial_mean_is_the_mean_over_each_map(in_mode):
    from defrcn.modeling.roi_heads import spatial_mean

    maps = np.random.default_rng(5).normal(2.0, 3.0, (6, 9, 4, 4)).astype(np.float32)
    want = maps.astype(np.float64).mean(axis=(2, 3))
    got = spatial_mean(ms.Tensor(maps)).asnumpy()
    assert got.shape == (6, 9)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with in_mode("graph"):
        graph = ms.jit(spatial_mean)(ms.Tensor(maps)).asnumpy()
    np.testing.assert_allclose(graph, want, rtol=1e-6, atol=1e-6)


def test_graph_mode_training_losses_equal_pynative():
    heads = make_heads(batch_size_per_image=16, positive_fraction=0.5)
    args = cell_inputs(seed=1) + [ms.Tensor(4, ms.int32)]
    heads.set_train(True)
    eager = [float(x.asnumpy()) for x in heads(*args)]
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        graph = [float(x.asnumpy()) for x in heads(*args)]
    finally:
        ms.set_context(mode=ms.PYNATIVE_MODE)
    assert graph == pytest.approx(eager, rel=1e-5)
