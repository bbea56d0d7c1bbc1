"""ROI-head inference post-processing (defrcn.modeling.postprocess.detect, detectron2's
fast_rcnn_inference) on hand-made boxes: per-class NMS, the score threshold, the top-k
detections per image, clipping to the image, class-specific decoding, padded output slots;
and a seeded random case against a small numpy statement of fast_rcnn_inference.

Scores are set through the logits: log(p) for a row of probabilities p gives softmax p.
Zero deltas decode every class's box to its proposal.
"""
import numpy as np
import pytest
import mindspore as ms

from defrcn.modeling.box_coding import BoxCoder, DEFAULT_SCALE_CLAMP, ROI_BOX_WEIGHTS
from defrcn.modeling.postprocess import detect, to_original_size

C = 2   # foreground classes; probability rows are (class 0, class 1, background)
LOW = 0.01   # a class probability below the 0.05 threshold


pytestmark = pytest.mark.usefixtures("pynative_mode")  # tests/conftest.py


def probs(*foreground):
    """A probability row (class 0, ..., class C-1, background) from the foreground ones."""
    row = list(foreground) + [LOW] * (C - len(foreground))
    return row + [1.0 - sum(row)]


def run(prob_rows, proposals, *, valid=None, size=(200, 200), deltas=None, num_classes=C, **settings):
    """detect() on one image; returns numpy (boxes, scores, classes, valid) of that image."""
    return [o[0] for o in run_batch([prob_rows], [proposals], valid=None if valid is None else [valid],
                                    sizes=[size], deltas=deltas, num_classes=num_classes, **settings)]


def run_batch(prob_rows, proposals, *, valid=None, sizes, deltas=None, num_classes=C, **settings):
    prob_rows = np.asarray(prob_rows, np.float64)
    proposals = np.asarray(proposals, np.float32)
    batch, count = proposals.shape[:2]
    logits = np.log(prob_rows).reshape(batch * count, num_classes + 1).astype(np.float32)
    if deltas is None:
        deltas = np.zeros((batch * count, 4 * num_classes), np.float32)
    valid = np.ones((batch, count), np.float32) if valid is None else np.asarray(valid, np.float32)
    out = detect(ms.Tensor(logits), ms.Tensor(np.asarray(deltas, np.float32)), ms.Tensor(proposals),
                 ms.Tensor(valid), ms.Tensor(np.asarray(sizes, np.float32)), BoxCoder(ROI_BOX_WEIGHTS),
                 num_classes=num_classes, **settings)
    return [o.asnumpy() for o in out]


def kept(result):
    """The valid detections as (box, score, class) with the score rounded, in output order."""
    boxes, scores, classes, valid = result
    return [(tuple(b.tolist()), round(float(s), 4), int(c))
            for b, s, c, v in zip(boxes, scores, classes, valid) if v > 0]


def check_padding(result, count):
    """Exactly the first `count` slots are valid; the rest hold zero boxes and scores."""
    boxes, scores, _, valid = result
    np.testing.assert_array_equal(valid, [1.0] * count + [0.0] * (len(valid) - count))
    assert (boxes[count:] == 0).all() and (scores[count:] == 0).all()


SQUARE = [0.0, 0.0, 10.0, 10.0]
SHIFTED = [1.0, 1.0, 11.0, 11.0]     # IoU 81 / 119 = 0.68 with SQUARE
BESIDE = [5.0, 0.0, 15.0, 10.0]      # IoU 50 / 150 = 0.33 with SQUARE
FAR = [100.0, 100.0, 120.0, 130.0]


def test_overlapping_boxes_of_one_class_keep_the_best():
    result = run([probs(0.8), probs(0.9)], [SHIFTED, SQUARE], detections_per_image=4)
    assert kept(result) == [(tuple(SQUARE), 0.9, 0)]
    check_padding(result, 1)


def test_nms_threshold_decides_which_overlaps_are_suppressed():
    # IoU 0.33 survives the default 0.5 but not a 0.3 threshold
    assert kept(run([probs(0.9), probs(0.8)], [SQUARE, BESIDE], detections_per_image=4)) == [
        (tuple(SQUARE), 0.9, 0), (tuple(BESIDE), 0.8, 0)]
    assert kept(run([probs(0.9), probs(0.8)], [SQUARE, BESIDE], detections_per_image=4, nms_thresh=0.3)) == [
        (tuple(SQUARE), 0.9, 0)]


def test_the_same_boxes_in_different_classes_are_both_kept():
    result = run([probs(0.9, LOW), probs(LOW, 0.8)], [SQUARE, SHIFTED], detections_per_image=4)
    assert kept(result) == [(tuple(SQUARE), 0.9, 0), (tuple(SHIFTED), 0.8, 1)]
    # one proposal scoring for both classes gives a detection of each
    result = run([probs(0.5, 0.4)], [SQUARE], detections_per_image=4)
    assert kept(result) == [(tuple(SQUARE), 0.5, 0), (tuple(SQUARE), 0.4, 1)]


def test_scores_at_or_below_the_threshold_are_dropped():
    rows = [probs(0.06), probs(0.04), probs(LOW, 0.3)]
    boxes = [SQUARE, FAR, [50, 50, 60, 60]]
    assert kept(run(rows, boxes, detections_per_image=4)) == [
        (tuple(map(float, [50, 50, 60, 60])), 0.3, 1), (tuple(SQUARE), 0.06, 0)]
    result = run(rows, boxes, detections_per_image=4, score_thresh=0.3)   # strict: 0.3 goes too
    assert kept(result) == []
    check_padding(result, 0)


def test_top_k_keeps_the_highest_scores_in_order():
    scores = [0.3, 0.9, 0.5, 0.7, 0.2, 0.6]
    boxes = [[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(6)]   # disjoint
    result = run([probs(s) for s in scores], boxes, detections_per_image=3)
    assert kept(result) == [(tuple(boxes[1]), 0.9, 0), (tuple(boxes[3]), 0.7, 0), (tuple(boxes[5]), 0.6, 0)]
    check_padding(result, 3)


def test_pre_nms_topk_cuts_the_candidate_pairs():
    scores = [0.3, 0.9, 0.5]
    boxes = [[20.0 * i, 0.0, 20.0 * i + 10, 10.0] for i in range(3)]
    result = run([probs(s) for s in scores], boxes, detections_per_image=3, pre_nms_topk=2)
    assert [d[1] for d in kept(result)] == [0.9, 0.5]


def test_boxes_are_clipped_to_each_image():
    # image sizes are (height, width); the same proposal in two images of other sizes
    proposal = [-5.0, 10.0, 270.0, 60.0]
    result = run_batch([[probs(0.9)], [probs(0.9)]], [[proposal], [proposal]], sizes=[(50, 60), (200, 100)],
                       detections_per_image=2)
    np.testing.assert_array_equal(result[0][:, 0], [[0, 10, 60, 50], [0, 10, 100, 60]])
    np.testing.assert_array_equal(result[3], [[1, 0], [1, 0]])


def test_class_specific_deltas_decode_each_class_box():
    deltas = np.zeros((1, 4 * C), np.float32)
    deltas[0, 4:8] = [1.0, -2.0, 0.5, 0.0]   # class 1 only; scaled by the (10, 10, 5, 5) weights
    result = run([probs(0.3, 0.6)], [[20.0, 20.0, 60.0, 40.0]], deltas=deltas, detections_per_image=2)
    # class 1: centre (40, 30) moves by (0.1 * 40, -0.2 * 20), width 40 * exp(0.1), height 20
    half_w = 20.0 * np.exp(0.1)
    expected_class1 = (44.0 - half_w, 16.0, 44.0 + half_w, 36.0)
    (box1, score1, class1), (box0, score0, class0) = kept(result)
    assert (score1, class1, score0, class0) == (0.6, 1, 0.3, 0)
    np.testing.assert_allclose(box1, expected_class1, rtol=1e-5)
    assert box0 == (20.0, 20.0, 60.0, 40.0)


def test_invalid_proposals_give_no_detection():
    result = run([probs(0.95), probs(0.6)], [SQUARE, FAR], valid=[0, 1], detections_per_image=3)
    assert kept(result) == [(tuple(FAR), 0.6, 0)]
    check_padding(result, 1)


def test_to_original_size_divides_by_each_image_scale():
    boxes = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    scales = np.array([2.0, 0.5], np.float32)
    out = to_original_size(boxes, scales)
    np.testing.assert_array_equal(out[0], boxes[0] / 2.0)
    np.testing.assert_array_equal(out[1], boxes[1] * 2.0)


# --- against a numpy statement of detectron2's fast_rcnn_inference_single_image -------------

def np_iou(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area(box) + area(boxes) - inter)


def np_detect(logits, deltas, proposals, valid, size, num_classes, score_thresh, nms_thresh, top_k):
    """(boxes, scores, classes) of one image, best first."""
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    scores = (exp / exp.sum(axis=1, keepdims=True))[:, :num_classes]
    widths, heights = proposals[:, 2] - proposals[:, 0], proposals[:, 3] - proposals[:, 1]
    cx, cy = proposals[:, 0] + 0.5 * widths, proposals[:, 1] + 0.5 * heights
    d = deltas.reshape(len(proposals), num_classes, 4) / np.array(ROI_BOX_WEIGHTS)
    d[..., 2:] = np.minimum(d[..., 2:], DEFAULT_SCALE_CLAMP)
    centre_x, centre_y = d[..., 0] * widths[:, None] + cx[:, None], d[..., 1] * heights[:, None] + cy[:, None]
    half_w, half_h = 0.5 * np.exp(d[..., 2]) * widths[:, None], 0.5 * np.exp(d[..., 3]) * heights[:, None]
    boxes = np.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1)
    boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, size[1])
    boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, size[0])
    detections = []
    for cls in range(num_classes):
        take = np.flatnonzero((scores[:, cls] > score_thresh) & (valid > 0))
        order = take[np.argsort(-scores[take, cls], kind="stable")]
        survivors = []
        for i in order:
            if not survivors or np_iou(boxes[i, cls], boxes[survivors, cls]).max() <= nms_thresh:
                survivors.append(i)
        detections += [(scores[i, cls], boxes[i, cls], cls) for i in survivors]
    detections.sort(key=lambda d: -d[0])
    detections = detections[:top_k]
    return (np.array([d[1] for d in detections]), np.array([d[0] for d in detections]),
            np.array([d[2] for d in detections]))


@pytest.mark.parametrize("top_k", [12, 30])   # 27 detections survive: cut by top-k, or all padded
def test_random_case_matches_numpy_fast_rcnn_inference(top_k):
    rng = np.random.default_rng(0)
    num_classes, count = 3, 40
    # proposals clustered around 4 objects so that NMS has work to do
    centres = rng.uniform(20, 100, (4, 2))[rng.integers(0, 4, count)] + rng.normal(0, 4, (count, 2))
    half = rng.uniform(8, 25, (count, 2))
    proposals = np.concatenate([centres - half, centres + half], axis=1).astype(np.float32)
    logits = rng.normal(0, 1.5, (count, num_classes + 1)).astype(np.float32)
    deltas = rng.normal(0, 0.5, (count, 4 * num_classes)).astype(np.float32)
    valid = (rng.random(count) > 0.1).astype(np.float32)
    size = (100.0, 110.0)
    out = detect(ms.Tensor(logits), ms.Tensor(deltas), ms.Tensor(proposals[None]), ms.Tensor(valid[None]),
                 ms.Tensor(np.array([size], np.float32)), BoxCoder(ROI_BOX_WEIGHTS), num_classes=num_classes,
                 score_thresh=0.2, nms_thresh=0.5, detections_per_image=top_k)
    boxes, scores, classes, mask = (o.asnumpy()[0] for o in out)
    want_boxes, want_scores, want_classes = np_detect(
        logits.astype(np.float64), deltas.astype(np.float64), proposals.astype(np.float64), valid, size,
        num_classes, 0.2, 0.5, count * num_classes)
    above = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True))[:, :num_classes] > 0.2
    assert len(want_scores) == 27 and (above & (valid[:, None] > 0)).sum() == 49   # NMS removed 22
    n = min(top_k, len(want_scores))
    check_padding((boxes, scores, classes, mask), n)
    np.testing.assert_array_equal(classes[:n], want_classes[:n])
    np.testing.assert_allclose(scores[:n], want_scores[:n], rtol=1e-5)
    np.testing.assert_allclose(boxes[:n], want_boxes[:n], rtol=1e-4, atol=1e-3)
