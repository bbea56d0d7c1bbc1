"""Weight-decay groups by parameter kind, and the per-step LR driven by global_step."""
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from defrcn.solver.optim import build_adamw, build_sgd, classify_parameters, parameter_groups


pytestmark = pytest.mark.usefixtures("pynative_mode")


class Affine(nn.Cell):
    """Like DeFRCN's per-channel affine after the GDL: not a norm Cell."""

    def __init__(self, channels):
        super().__init__()
        self.weight = Parameter(Tensor(np.ones(channels, np.float32)), name="weight")
        self.bias = Parameter(Tensor(np.zeros(channels, np.float32)), name="bias")

    def construct(self, x):
        return x * self.weight.reshape(1, -1, 1, 1) + self.bias.reshape(1, -1, 1, 1)


class Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.affine = Affine(4)
        self.frozen = nn.Conv2d(4, 4, 1, has_bias=True)
        for param in self.frozen.get_parameters():
            param.requires_grad = False
        self.fc = nn.Dense(4, 2)

    def construct(self, x):
        return self.fc(self.frozen(self.affine(self.bn(self.conv(x)))).mean((2, 3)))


def test_classify_cell():
    kinds = classify_parameters(Tiny())
    assert kinds == {
        "conv.weight": "weight", "conv.bias": "bias",
        "bn.gamma": "norm", "bn.beta": "norm",
        "affine.weight": "weight", "affine.bias": "bias",
        "fc.weight": "weight", "fc.bias": "bias",
    }  # frozen.* and the BN moving statistics are not trainable: left out


def test_classify_by_cell_type_not_name():
    class Scale(nn.Cell):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm((4,))  # its parameters are gamma/beta
            self.group = nn.GroupNorm(2, 4)  # also gamma/beta in MindSpore

        def construct(self, x):
            return x

    kinds = classify_parameters(Scale())
    assert set(kinds.values()) == {"norm"} and len(kinds) == 4


def test_classify_parameter_list_by_name():
    params = [Parameter(Tensor(np.zeros(2, np.float32)), name=n) for n in ("a.bn1.gamma", "a.beta", "b.bias", "c.w")]
    assert classify_parameters(params) == {"a.bn1.gamma": "norm", "a.beta": "norm", "b.bias": "bias", "c.w": "weight"}


def test_parameter_groups_decay():
    groups = parameter_groups(Tiny(), 5e-5, 1e-4, 0.0)
    as_names = [(sorted(p.name for p in g["params"]), g["weight_decay"]) for g in groups]
    assert as_names == [
        (["affine.weight", "conv.weight", "fc.weight"], 5e-5),
        (["affine.bias", "conv.bias", "fc.bias"], 1e-4),
        (["bn.beta", "bn.gamma"], 0.0),
    ]


def test_empty_groups_dropped_and_nothing_trainable():
    net = nn.Dense(2, 2, has_bias=False)
    assert len(parameter_groups(net, 1, 2, 3)) == 1
    net.weight.requires_grad = False
    with pytest.raises(ValueError, match="no trainable"):
        parameter_groups(net, 1, 2, 3)


def test_sgd_lr_follows_global_step():
    rates = np.array([0.1, 0.2, 0.3], np.float32)
    opt = build_sgd(Tiny(), rates)
    assert isinstance(opt, nn.Momentum)
    assert float(opt.get_lr().asnumpy()) == pytest.approx(0.1)
    opt.global_step.set_data(Tensor(np.array([2], np.int32)))  # as restored from a checkpoint
    assert float(opt.get_lr().asnumpy()) == pytest.approx(0.3)
    assert len(opt.parameters) == 8


class Linear(nn.Cell):
    def __init__(self):
        super().__init__()
        self.weight = Parameter(Tensor(np.array([1.0, 2.0], np.float32)), name="lin.weight")
        self.bias = Parameter(Tensor(np.array([3.0], np.float32)), name="lin.bias")

    def construct(self, x):
        return ops.reduce_sum(x * self.weight) + ops.reduce_sum(self.bias)


def test_sgd_update_matches_torch_rule():
    """Two steps: v = m v + (g + wd p); p -= lr_t v, with wd by kind and lr_t per step."""
    net = Linear()
    rates = np.array([0.5, 0.25], np.float32)
    opt = build_sgd(net, rates, momentum=0.9, weight_decay=0.1, weight_decay_bias=0.2)
    step = nn.TrainOneStepCell(net, opt)
    x = Tensor(np.array([1.0, -1.0], np.float32))
    step(x)
    step(x)
    w, b = np.array([1.0, 2.0]), np.array([3.0])
    vw, vb = np.zeros(2), np.zeros(1)
    for lr in rates:
        vw = 0.9 * vw + (np.array([1.0, -1.0]) + 0.1 * w)
        vb = 0.9 * vb + (np.array([1.0]) + 0.2 * b)
        w, b = w - lr * vw, b - lr * vb
    np.testing.assert_allclose(net.weight.asnumpy(), w, rtol=1e-5)
    np.testing.assert_allclose(net.bias.asnumpy(), b, rtol=1e-5)


def test_adamw_groups():
    opt = build_adamw(Tiny(), np.full(4, 1e-3, np.float32))
    assert isinstance(opt, nn.AdamWeightDecay)
    assert len(opt.parameters) == 8


def test_empty_lr():
    with pytest.raises(ValueError, match="empty"):
        build_sgd(Tiny(), np.zeros(0, np.float32))


def test_lr_table_is_the_optimizers_own():
    from mindspore import nn

    from defrcn.solver.optim import build_adamw, build_sgd, optimizer_lr_table

    rates = [0.001, 0.01, 0.01, 0.001]
    for build in (build_sgd, build_adamw):
        table = optimizer_lr_table(build(nn.Dense(3, 2), rates))
        np.testing.assert_array_equal(table, np.float32(rates))  # what the optimizer applies, float32
