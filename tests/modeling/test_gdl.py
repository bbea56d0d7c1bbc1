"""Gradient Decoupled Layer: identity forward, gradient x lambda backward, in both modes."""

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
import numpy as np
import pytest

from defrcn.modeling.gdl import ChannelAffine, DecoupledBranch, GradientDecoupledLayer


class _Loss(nn.Cell):
    """sum(exp(gdl(x * 3))): a non-linear loss so the gradient differs per element."""

    def __init__(self, gdl):
        super().__init__()
        self.gdl = gdl

    def construct(self, x):
        y = x * 3.0
        if self.gdl is not None:
            y = self.gdl(y)
        return ops.exp(y).sum()


@pytest.mark.parametrize("scale", [0.0, 0.01, 0.75, 1.0])
def test_gradient_is_scaled_and_forward_unchanged(each_mode, scale):
    x = ms.Tensor(np.array([[0.5, -1.0, 2.0], [0.0, 1.5, -0.25]], np.float32))
    plain, decoupled = _Loss(None), _Loss(GradientDecoupledLayer(scale))
    assert decoupled(x).asnumpy() == plain(x).asnumpy()
    grad_plain = ms.grad(plain)(x).asnumpy()
    grad_decoupled = ms.grad(decoupled)(x).asnumpy()
    assert np.abs(grad_plain).min() > 0
    np.testing.assert_allclose(grad_decoupled, scale * grad_plain, rtol=1e-6)


def test_zero_scale_gives_exact_zeros_even_for_an_infinite_gradient(each_mode):
    x = ms.Tensor(np.array([40.0, 1.0], np.float32))  # exp(120) overflows float32: gradient inf
    assert np.isinf(ms.grad(_Loss(None))(x).asnumpy()).any()
    grad = ms.grad(_Loss(GradientDecoupledLayer(0.0)))(x).asnumpy()
    assert (grad == 0).all() and not np.signbit(grad).any()


def test_decoupled_branch_scales_only_the_input_gradient(each_mode):
    branch = DecoupledBranch(3, scale=0.25)
    x = ms.Tensor(np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 10)
    assert (branch(x).asnumpy() == x.asnumpy()).all()  # weight 1, bias 0 at init

    def loss(features):
        return (branch(features) * 2.0).sum()

    grad_x, (grad_weight, grad_bias) = ms.grad(loss, grad_position=0, weights=branch.trainable_params())(x)
    np.testing.assert_allclose(grad_x.asnumpy(), np.full((2, 3, 2, 2), 0.5), rtol=1e-6)
    np.testing.assert_allclose(grad_weight.asnumpy(), 2.0 * x.asnumpy().sum(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(grad_bias.asnumpy(), np.full(3, 2.0 * 8), rtol=1e-6)


def test_channel_affine_applies_per_channel_weight_and_bias():
    affine = ChannelAffine(2)
    assert sorted(p.name for p in affine.trainable_params()) == ["bias", "weight"]
    affine.weight.set_data(ms.Tensor(np.array([2.0, -1.0], np.float32)))
    affine.bias.set_data(ms.Tensor(np.array([0.5, 3.0], np.float32)))
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    expected = x * np.array([2.0, -1.0]).reshape(1, 2, 1, 1) + np.array([0.5, 3.0]).reshape(1, 2, 1, 1)
    np.testing.assert_allclose(affine(ms.Tensor(x)).asnumpy(), expected, rtol=1e-6)


def test_channel_affine_gradients_equal_the_elementwise_formula(each_mode):
    rng = np.random.default_rng(1)
    affine = ChannelAffine(4)
    weight, bias = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    affine.weight.set_data(ms.Tensor(weight))
    affine.bias.set_data(ms.Tensor(bias))
    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    upstream = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)

    def loss(features):
        return (affine(features) * ms.Tensor(upstream)).sum()

    grad_x, (grad_weight, grad_bias) = ms.grad(loss, grad_position=0, weights=affine.trainable_params())(ms.Tensor(x))
    np.testing.assert_allclose(grad_x.asnumpy(), upstream * weight.reshape(1, 4, 1, 1), rtol=1e-6)
    np.testing.assert_allclose(grad_weight.asnumpy(), (upstream * x).sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad_bias.asnumpy(), upstream.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
