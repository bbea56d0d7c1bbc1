import math

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from defrcn.modeling.box_coding import (DEFAULT_SCALE_CLAMP, ROI_BOX_WEIGHTS, RPN_BOX_WEIGHTS,
                                        BoxCoder)


pytestmark = pytest.mark.usefixtures("pynative_mode")


def random_boxes(rng, count):
    corners = rng.uniform(-20, 300, size=(count, 2))
    sizes = rng.uniform(2, 200, size=(count, 2))
    return np.concatenate([corners, corners + sizes], axis=1).astype(np.float32)


@pytest.mark.parametrize("weights", [RPN_BOX_WEIGHTS, ROI_BOX_WEIGHTS])
def test_round_trip(weights):
    rng = np.random.default_rng(1)
    reference = random_boxes(rng, 20)
    target = random_boxes(rng, 20)
    coder = BoxCoder(weights)
    deltas = coder.encode(ms.Tensor(reference), ms.Tensor(target))
    decoded = coder.decode(deltas, ms.Tensor(reference)).asnumpy()
    np.testing.assert_allclose(decoded, target, rtol=1e-4, atol=1e-3)


def test_encode_known_values():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    reference = ms.Tensor(np.array([[0, 0, 10, 20]], np.float32))
    target = ms.Tensor(np.array([[5, 0, 15, 40]], np.float32))  # centre +5 in x, +10 in y; h x2
    deltas = coder.encode(reference, target).asnumpy()
    np.testing.assert_allclose(deltas, [[10 * 0.5, 10 * 0.5, 0.0, 5 * math.log(2)]], rtol=1e-6)


def test_class_specific_decode():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    reference = ms.Tensor(np.array([[0, 0, 10, 10], [10, 10, 30, 20]], np.float32))
    deltas = np.zeros((2, 12), np.float32)
    deltas[:, 4] = 1.0                   # class 1: shift by one width in x
    deltas[:, 8 + 3] = math.log(2)       # class 2: double the height
    boxes = coder.decode(ms.Tensor(deltas), reference).asnumpy()
    assert boxes.shape == (2, 12)
    np.testing.assert_allclose(boxes[:, 0:4], [[0, 0, 10, 10], [10, 10, 30, 20]], atol=1e-5)
    np.testing.assert_allclose(boxes[:, 4:8], [[10, 0, 20, 10], [30, 10, 50, 20]], atol=1e-5)
    np.testing.assert_allclose(boxes[:, 8:12], [[0, -5, 10, 15], [10, 5, 30, 25]], atol=1e-5)


def test_decode_clamps_scale():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    reference = ms.Tensor(np.array([[0, 0, 16, 16]], np.float32))
    deltas = ms.Tensor(np.array([[0, 0, 50.0, -3.0]], np.float32))
    box = coder.decode(deltas, reference).asnumpy()[0]
    assert np.isfinite(box).all()
    assert math.isclose(DEFAULT_SCALE_CLAMP, math.log(1000 / 16))
    np.testing.assert_allclose(box[2] - box[0], 1000.0, rtol=1e-5)   # 16 * exp(log(1000/16))
    np.testing.assert_allclose(box[3] - box[1], 16 * math.exp(-3.0), rtol=1e-5)  # not clamped


class _DecodeCell(nn.Cell):
    def __init__(self):
        super().__init__()
        self.coder = BoxCoder(ROI_BOX_WEIGHTS)

    def construct(self, deltas, reference):
        return self.coder.decode(deltas, reference), self.coder.encode(reference, reference)


def test_usable_in_graph_mode(in_mode):
    rng = np.random.default_rng(2)
    reference = ms.Tensor(random_boxes(rng, 5))
    deltas = ms.Tensor(rng.normal(size=(5, 8)).astype(np.float32))
    cell = _DecodeCell()
    eager_boxes, eager_zero = cell(deltas, reference)
    with in_mode("graph"):
        graph_boxes, graph_zero = cell(deltas, reference)
    np.testing.assert_allclose(graph_boxes.asnumpy(), eager_boxes.asnumpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(graph_zero.asnumpy(), 0.0, atol=1e-6)
