import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from defrcn.modeling.boxes import pairwise_iou
from defrcn.modeling.broadcast import broadcast_shape, expand_all


@pytest.mark.parametrize("shapes, expected", [
    (((3, 1), (1, 5)), (3, 5)),
    (((2, 1, 4, 1), (7,)), (2, 1, 4, 7)),
    (((1, 1), (1, 1)), (1, 1)),
    (((6,), (2, 1, 6), (1, 3, 1)), (2, 3, 6)),
])
def test_broadcast_shape_matches_numpy(shapes, expected):
    assert broadcast_shape(*shapes) == expected == np.broadcast_shapes(*shapes)


def test_broadcast_shape_refuses_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="do not broadcast"):
        broadcast_shape((3, 2), (1, 4))


class _ExpandedOps(nn.Cell):
    def construct(self, column, row, cube):
        a, b = expand_all(column, row)
        c, d = expand_all(cube, column)
        return a - b, c * d, a.shape == b.shape


def test_expand_all_gives_equal_shapes_and_the_broadcast_values(each_mode):
    rng = np.random.default_rng(0)
    column = rng.normal(size=(4, 1)).astype(np.float32)
    row = rng.normal(size=(1, 6)).astype(np.float32)
    cube = rng.normal(size=(3, 4, 6)).astype(np.float32)
    diff, prod, same = _ExpandedOps()(ms.Tensor(column), ms.Tensor(row), ms.Tensor(cube))
    assert same
    np.testing.assert_array_equal(diff.asnumpy(), column - row)
    np.testing.assert_array_equal(prod.asnumpy(), cube * column)


def test_expand_all_leaves_a_tensor_of_the_full_shape_as_it_is():
    full = ms.Tensor(np.ones((2, 3), np.float32))
    small = ms.Tensor(np.ones((1, 3), np.float32))
    expanded_full, expanded_small = expand_all(full, small)
    assert expanded_full is full
    assert expanded_small.shape == (2, 3)


class _Iou(nn.Cell):
    def construct(self, first, second):
        return pairwise_iou(first, second)


def _random_boxes(rng, count, extent):
    corner = rng.uniform(0, extent, size=(count, 2))
    size = rng.uniform(0, extent / 4, size=(count, 2))
    size[::7] = 0.0  # some empty boxes
    return np.concatenate([corner, corner + size], axis=1).astype(np.float32)


def _numpy_iou(first, second):
    """detectron2's pairwise_iou in NumPy float64."""
    width = np.minimum(first[:, None, 2], second[None, :, 2]) - np.maximum(first[:, None, 0], second[None, :, 0])
    height = np.minimum(first[:, None, 3], second[None, :, 3]) - np.maximum(first[:, None, 1], second[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area1 = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area2 = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)


def test_pairwise_iou_on_a_large_grid_equals_the_reference(each_mode):
    """The shape of the RPN's matching (ground truth x anchors), through a compiled graph."""
    rng = np.random.default_rng(1)
    first, second = _random_boxes(rng, 20, 800.0), _random_boxes(rng, 3000, 800.0)
    iou = _Iou()(ms.Tensor(first), ms.Tensor(second)).asnumpy()
    assert iou.shape == (20, 3000)
    np.testing.assert_allclose(iou, _numpy_iou(first.astype(np.float64), second.astype(np.float64)),
                               rtol=1e-5, atol=1e-6)
    assert (iou > 0).sum() > 100  # the boxes do overlap
