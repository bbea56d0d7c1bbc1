import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from defrcn.modeling.nms import batched_nms, nms, nms_keep_mask_sorted, nms_sorted


pytestmark = pytest.mark.usefixtures("pynative_mode")


def np_iou(box, boxes):
    top_left = np.maximum(box[:2], boxes[:, :2])
    bottom_right = np.minimum(box[2:], boxes[:, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    areas = (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)
    area = (box[2:] - box[:2]).prod()
    return inter / (area + areas - inter)


def np_nms(boxes, scores, threshold):
    """Greedy reference: indices kept, by decreasing score (stable for ties)."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    for i in order:
        if all(np_iou(boxes[j], boxes[i:i + 1])[0] <= threshold for j in kept):
            kept.append(i)
    return kept


def run_nms(boxes, scores, threshold, max_out, valid=None):
    out_idx, out_valid = nms(ms.Tensor(np.asarray(boxes, np.float32)),
                             ms.Tensor(np.asarray(scores, np.float32)), threshold, max_out,
                             None if valid is None else ms.Tensor(np.asarray(valid, bool)))
    assert out_idx.shape == (max_out,) and out_valid.shape == (max_out,)
    out_idx, out_valid = out_idx.asnumpy(), out_valid.asnumpy()
    return out_idx[out_valid].tolist(), out_idx, out_valid


def test_nms_with_mask_sorts_its_input_internally():
    # The fact the helpers rely on: the mask is in score order, not input order.
    boxes = np.array([[0, 0, 10, 10, 0.5], [0, 0, 10, 10, 0.9], [50, 50, 60, 60, 0.7]], np.float32)
    sorted_boxes, _, mask = ops.NMSWithMask(0.5)(ms.Tensor(boxes))
    np.testing.assert_allclose(sorted_boxes.asnumpy()[:, 4], [0.9, 0.7, 0.5])
    assert mask.asnumpy().tolist() == [True, True, False]


def test_overlapping_suppressed_disjoint_kept_in_score_order():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 10.5], [100, 0, 110, 9]]
    scores = [0.5, 0.9, 0.7, 0.95, 0.1]
    kept, out_idx, out_valid = run_nms(boxes, scores, 0.5, 6)
    assert kept == [3, 2, 4]
    assert out_valid.tolist() == [True, True, True, False, False, False]
    assert (out_idx[3:] == 0).all()


def test_threshold_is_strict_and_has_no_plus_one():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 5]]   # IoU exactly 0.5 without +1 (0.545 with it)
    assert run_nms(boxes, [0.9, 0.8], 0.5, 2)[0] == [0, 1]
    assert run_nms(boxes, [0.9, 0.8], 0.52, 2)[0] == [0, 1]
    assert run_nms(boxes, [0.9, 0.8], 0.49, 2)[0] == [0]


def test_fixed_output_count_truncates():
    boxes = [[i * 20, 0, i * 20 + 10, 10] for i in range(6)]
    scores = [0.1, 0.6, 0.3, 0.9, 0.2, 0.5]
    kept, _, out_valid = run_nms(boxes, scores, 0.7, 3)
    assert kept == [3, 1, 5] and out_valid.all()


def test_invalid_boxes_neither_kept_nor_suppress():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]]
    kept, _, _ = run_nms(boxes, [0.9, 0.8, 0.7], 0.5, 3, valid=[False, True, True])
    assert kept == [1, 2]


def test_matches_greedy_reference_on_random_boxes_with_ties():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 100, size=(150, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 40, size=(150, 2))], 1)
    boxes = boxes.astype(np.float32)
    scores = rng.integers(0, 30, size=150).astype(np.float32) / 30   # many ties
    kept, _, _ = run_nms(boxes, scores, 0.5, 150)
    reference = np_nms(boxes, scores, 0.5)
    # Ties may be broken differently: compare sets of kept boxes per score level via count,
    # and exactly when scores are made distinct.
    assert abs(len(kept) - len(reference)) <= 3
    distinct = scores + np.arange(150, dtype=np.float32) * 1e-5
    kept, _, _ = run_nms(boxes, distinct, 0.5, 150)
    assert kept == np_nms(boxes, distinct, 0.5)


def test_keep_mask_sorted_follows_input_order():
    boxes = ms.Tensor(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]], np.float32))
    assert nms_keep_mask_sorted(boxes, 0.7).asnumpy().tolist() == [True, True, False]


def test_batched_nms_separates_classes():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10], [40, 40, 50, 50]]
    scores = [0.9, 0.8, 0.7, 0.6]
    classes = [0, 1, 0, 1]
    idx, valid = batched_nms(ms.Tensor(np.array(boxes, np.float32)),
                             ms.Tensor(np.array(scores, np.float32)),
                             ms.Tensor(np.array(classes, np.int32)), 0.5, 5)
    assert idx.shape == (5,) and valid.shape == (5,)
    assert idx.asnumpy()[valid.asnumpy()].tolist() == [0, 1, 3]


class _NmsCell(nn.Cell):
    def construct(self, boxes, scores, classes):
        return batched_nms(boxes, scores, classes, 0.5, 8)


def test_graph_mode_matches_pynative(in_mode):
    rng = np.random.default_rng(5)
    corners = rng.uniform(0, 60, size=(40, 2))
    boxes = ms.Tensor(np.concatenate([corners, corners + rng.uniform(5, 30, (40, 2))], 1)
                      .astype(np.float32))
    scores = ms.Tensor(rng.random(40).astype(np.float32))
    classes = ms.Tensor(rng.integers(0, 3, 40).astype(np.int32))
    cell = _NmsCell()
    eager = [t.asnumpy() for t in cell(boxes, scores, classes)]
    with in_mode("graph"):
        graph = [t.asnumpy() for t in cell(boxes, scores, classes)]
    np.testing.assert_array_equal(eager[0], graph[0])
    np.testing.assert_array_equal(eager[1], graph[1])
    assert eager[1].sum() == 8


# --------------------------------------------------------------------------------------------
# blocks: exactly one greedy NMS at any box count (Ascend's NMSWithMask takes <= 2864 boxes)


def np_greedy_sorted(boxes, usable, threshold):
    """Greedy NMS over boxes already in score order: positions kept, in order."""
    kept = []
    for i in range(len(boxes)):
        if usable[i] and all(np_iou(boxes[j], boxes[i:i + 1])[0] <= threshold for j in kept):
            kept.append(i)
    return kept


def run_sorted(boxes, usable, threshold, max_out, block_size):
    positions, valid = nms_sorted(ms.Tensor(np.asarray(boxes, np.float32)), ms.Tensor(np.asarray(usable, bool)),
                                  threshold, max_out, block_size)
    positions, valid = positions.asnumpy(), valid.asnumpy()
    assert positions.shape == (max_out,) and not positions[~valid].any()
    return positions[valid].tolist()


def random_boxes(rng, count, spread=100, size=(5, 40)):
    corners = rng.uniform(0, spread, size=(count, 2))
    return np.concatenate([corners, corners + rng.uniform(*size, size=(count, 2))], 1).astype(np.float32)


# 18 blocks of 7 (a block size that divides nothing), 2 of 64, or one block.
N_BOXES = 120
BOX_SETS = {
    "random": lambda rng: random_boxes(rng, N_BOXES),
    "crowded": lambda rng: random_boxes(rng, N_BOXES, spread=30, size=(20, 40)),  # most suppressed
    "identical": lambda rng: np.tile(np.array([[10, 10, 50, 60]], np.float32), (N_BOXES, 1)),
    "disjoint": lambda rng: np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(N_BOXES)], np.float32),
    "near_threshold": lambda rng: np.array([[i, 0, i + 20, 20] for i in range(N_BOXES)], np.float32),  # chains
}


@pytest.mark.parametrize("name", sorted(BOX_SETS))
@pytest.mark.parametrize("block_size", [7, 64, N_BOXES])
def test_blocked_nms_equals_greedy(name, block_size):
    rng = np.random.default_rng(3)
    boxes = BOX_SETS[name](rng)
    usable = rng.random(len(boxes)) > 0.1
    for threshold in (0.3, 0.7):
        reference = np_greedy_sorted(boxes, usable, threshold)
        for max_out in (5, len(reference), 300):  # below, at and above the kept count
            kept = run_sorted(boxes, usable, threshold, max_out, block_size)
            assert kept == reference[:max_out], (name, block_size, threshold, max_out)


def test_blocked_nms_with_nothing_usable_keeps_nothing():
    boxes = random_boxes(np.random.default_rng(1), 50)
    assert run_sorted(boxes, np.zeros(50, bool), 0.5, 10, 8) == []


def test_blocked_nms_through_nms_and_batched_nms_with_ties():
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng, 150)
    scores = (rng.integers(0, 30, size=150) / 30).astype(np.float32)  # many ties
    classes = rng.integers(0, 3, size=150).astype(np.int32)
    args = [ms.Tensor(a) for a in (boxes, scores, classes)]
    whole = [t.asnumpy() for t in batched_nms(*args, 0.5, 40, block_size=1000)]
    blocked = [t.asnumpy() for t in batched_nms(*args, 0.5, 40, block_size=16)]
    assert np.array_equal(whole[0], blocked[0]) and np.array_equal(whole[1], blocked[1])
    whole = [t.asnumpy() for t in nms(args[0], args[1], 0.6, 60, block_size=1000)]
    blocked = [t.asnumpy() for t in nms(args[0], args[1], 0.6, 60, block_size=9)]
    assert np.array_equal(whole[0], blocked[0]) and np.array_equal(whole[1], blocked[1])


class _BlockedCell(nn.Cell):
    def construct(self, boxes, usable):
        return nms_sorted(boxes, usable, 0.5, 30, 16)


def test_blocked_nms_in_graph_mode(in_mode):
    rng = np.random.default_rng(6)
    boxes = random_boxes(rng, 100)
    usable = rng.random(100) > 0.2
    with in_mode("graph"):
        positions, valid = _BlockedCell()(ms.Tensor(boxes), ms.Tensor(usable))
    assert positions.asnumpy()[valid.asnumpy()].tolist() == np_greedy_sorted(boxes, usable, 0.5)[:30]


def test_block_size_follows_the_device():
    from defrcn.modeling.nms import NMS_BLOCK, UNBLOCKED, nms_block_for_device

    assert nms_block_for_device("Ascend") == NMS_BLOCK == 2864  # NMSWithMask's limit there
    assert nms_block_for_device("CPU") == nms_block_for_device("GPU") == UNBLOCKED > 100_000
    assert nms_block_for_device() == UNBLOCKED  # these tests run on CPU
