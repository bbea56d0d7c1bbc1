"""3x3 convolutions whose backward keeps only the input: same values and gradients as nn.Conv2d."""
import mindspore as ms
import mindspore.nn as nn
import numpy as np
import pytest

from defrcn.modeling.backbone import build_resnet_c4
from defrcn.modeling.lean_backward import LeanBackwardConv2d, lean_backward_for_device, use_lean_backward


def _random(shape, seed):
    return ms.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


class _Loss(nn.Cell):
    """sum(conv(x) * weights): its gradients are the backward's for a random incoming gradient."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def construct(self, x, weights):
        return (self.conv(x) * weights).sum()


def _gradients(conv, x, weights):
    params = conv.trainable_params()
    grad_fn = ms.value_and_grad(_Loss(conv), grad_position=0, weights=params)
    value, (dx, dparams) = grad_fn(x, weights)
    return [value.asnumpy(), dx.asnumpy()] + [g.asnumpy() for g in dparams]


@pytest.mark.parametrize("has_bias", [False, True])
def test_values_and_gradients_equal_the_stock_convolution(each_mode, has_bias):
    stock = nn.Conv2d(6, 5, 3, pad_mode="pad", padding=1, has_bias=has_bias, weight_init="normal",
                      bias_init="normal")
    lean = LeanBackwardConv2d(6, 5, has_bias=has_bias)
    lean.weight.set_data(stock.weight.data.copy())
    if has_bias:
        lean.bias.set_data(stock.bias.data.copy())
    x, weights = _random((3, 6, 7, 9), 0), _random((3, 5, 7, 9), 1)
    np.testing.assert_allclose(lean(x).asnumpy(), stock(x).asnumpy(), rtol=1e-6, atol=1e-6)
    for got, expected in zip(_gradients(lean, x, weights), _gradients(stock, x, weights)):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


def test_a_whole_trunk_keeps_its_parameters_and_gradients(graph_mode):
    """R-18 trunk, freeze_at 2: the trainable 3x3s of res3/res4 are replaced (not res2's frozen
    ones, not the strided ones); names are kept and every gradient matches the stock trunk's."""
    stock, _ = build_resnet_c4(18, norm="frozen_bn", freeze_at=2)
    lean, _ = build_resnet_c4(18, norm="frozen_bn", freeze_at=2)
    for a, b in zip(lean.get_parameters(), stock.get_parameters()):
        a.set_data(b.data.copy())
    names = [p.name for p in lean.get_parameters()]
    # res3 and res4: 2 basic blocks each, 2 3x3s per block, minus the first block's strided one
    assert use_lean_backward(lean) == 6
    assert [p.name for p in lean.get_parameters()] == names
    assert sum(isinstance(c, LeanBackwardConv2d) for _, c in lean.cells_and_names()) == 6
    x = _random((2, 3, 64, 96), 2)
    weights = _random((2, 256, 4, 6), 3)
    for got, expected in zip(_gradients(lean, x, weights)[2:], _gradients(stock, x, weights)[2:]):
        scale = np.abs(expected).max()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def test_only_the_cpu_asks_for_it():
    assert lean_backward_for_device("CPU")
    assert not lean_backward_for_device("GPU") and not lean_backward_for_device("Ascend")


@pytest.mark.parametrize("choice, expected", [("auto", 6 + 1), ("lean", 6 + 1), ("stock", 0)])
def test_the_detector_setting_picks_the_trunk_and_rpn_convolutions(choice, expected):
    """On CPU "auto" is lean: res3/res4's trainable 3x3s (freeze_at 2) and the RPN head's."""
    from defrcn.modeling.detector import build_detector

    model = build_detector(num_classes=3, depth=18, freeze_at=2, conv_backward=choice, verbose=False)
    lean = [name for name, cell in model.cells_and_names() if isinstance(cell, LeanBackwardConv2d)]
    assert len(lean) == expected
    assert all(name.startswith(("backbone.", "proposal_generator.")) for name in lean)
    with pytest.raises(ValueError, match="conv_backward must be one of auto, stock, lean"):
        build_detector(num_classes=3, depth=18, conv_backward="fast", verbose=False)


def test_float16_gradients_have_the_stock_dtypes(graph_mode):
    """Under mindspore.amp O3 (as the O1 recipes convert each Conv2d) the weight's gradient stays
    float32, as the stock convolution's does."""
    from mindspore import amp

    stock = nn.Conv2d(4, 5, 3, pad_mode="pad", padding=1, has_bias=True, weight_init="normal")
    lean = LeanBackwardConv2d(4, 5, has_bias=True)
    lean.weight.set_data(stock.weight.data.copy())
    lean.bias.set_data(stock.bias.data.copy())
    x, weights = _random((2, 4, 6, 7), 4), _random((2, 5, 6, 7), 5)
    results = []
    for conv in (lean, stock):
        half = amp.auto_mixed_precision(conv, "O3")
        grad_fn = ms.value_and_grad(_Loss(half), grad_position=0, weights=conv.trainable_params())
        _, (dx, dparams) = grad_fn(x, weights)
        results.append([dx] + list(dparams))
    assert [g.dtype for g in results[0]] == [g.dtype for g in results[1]]
    for got, expected in zip(*results):
        scale = np.abs(expected.asnumpy().astype(np.float32)).max()
        np.testing.assert_allclose(got.asnumpy().astype(np.float32), expected.asnumpy().astype(np.float32),
                                   rtol=1e-2, atol=1e-2 * scale)


def test_the_lean_detector_initialises_as_the_stock_one():
    """Replacing the convolutions draws nothing from the global seed's stream: under one seed
    both detectors start from the same random weights (from-scratch training starts alike)."""
    from defrcn.modeling.detector import build_detector

    values = []
    for choice in ("lean", "stock"):
        ms.set_seed(0)
        model = build_detector(num_classes=3, depth=18, freeze_at=2, conv_backward=choice, verbose=False)
        values.append({p.name: p.asnumpy() for p in model.get_parameters()})
    assert values[0].keys() == values[1].keys()
    for name, value in values[0].items():
        np.testing.assert_array_equal(value, values[1][name], err_msg=name)
