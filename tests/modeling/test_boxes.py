import numpy as np
import pytest
import mindspore as ms

from defrcn.modeling.boxes import box_areas, clip_boxes, nonempty_mask, pairwise_iou


pytestmark = pytest.mark.usefixtures("pynative_mode")


def tensor(values):
    return ms.Tensor(np.asarray(values, dtype=np.float32))


def test_pairwise_iou_hand_cases():
    first = tensor([[0, 0, 10, 10], [0, 0, 2, 2]])
    second = tensor([
        [0, 0, 10, 10],      # identical to first[0]
        [20, 20, 30, 30],    # disjoint
        [2, 2, 6, 6],        # contained in first[0]
        [1, 1, 3, 3],        # partial overlap with first[1]
        [10, 0, 20, 10],     # touches first[0] along an edge
        [5, 5, 5, 8],        # empty (zero width)
    ])
    iou = pairwise_iou(first, second).asnumpy()
    assert iou.shape == (2, 6)
    expected = np.array([
        [1.0, 0.0, 16 / 100, 4 / (100 + 4 - 4), 0.0, 0.0],
        [4 / 100, 0.0, 0.0, 1 / 7, 0.0, 0.0],
    ])
    np.testing.assert_allclose(iou, expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(iou).all()


def test_pairwise_iou_is_symmetric_and_bounded():
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 50, size=(7, 2))
    boxes = tensor(np.concatenate([corners, corners + rng.uniform(1, 30, size=(7, 2))], axis=1))
    iou = pairwise_iou(boxes, boxes).asnumpy()
    np.testing.assert_allclose(iou, iou.T, rtol=1e-6)
    np.testing.assert_allclose(np.diag(iou), 1.0, rtol=1e-6)
    assert (iou >= 0).all() and (iou <= 1 + 1e-6).all()


def test_box_areas_and_nonempty():
    boxes = tensor([[0, 0, 4, 5], [3, 3, 3, 9], [0, 0, 2, 1], [5, 5, 4, 9]])
    np.testing.assert_allclose(box_areas(boxes).asnumpy(), [20, 0, 2, -4])
    assert nonempty_mask(boxes).asnumpy().tolist() == [True, False, True, False]
    assert nonempty_mask(boxes, threshold=1.0).asnumpy().tolist() == [True, False, False, False]


def test_clip_boxes_with_scalars_and_per_image_sizes():
    boxes = tensor([[-5, -3, 50, 70], [10, 20, 30, 40]])
    clipped = clip_boxes(boxes, 60, 40).asnumpy()
    np.testing.assert_allclose(clipped, [[0, 0, 40, 60], [10, 20, 30, 40]])

    batched = tensor([[[-5, -3, 50, 70]], [[-5, -3, 50, 70]]])  # (B=2, K=1, 4)
    heights = tensor([[60], [30]])
    widths = tensor([[40], [100]])
    clipped = clip_boxes(batched, heights, widths).asnumpy()
    np.testing.assert_allclose(clipped[:, 0], [[0, 0, 40, 60], [0, 0, 50, 30]])
