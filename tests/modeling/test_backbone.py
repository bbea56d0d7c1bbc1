"""ResNet C4 backbone on mindcv: shapes, freezing, frozen BN, stride placement, parameter counts."""

import mindspore as ms
import mindspore.nn as nn
import numpy as np
import pytest
from mindcv.models.resnet import resnet18, resnet101

from defrcn.modeling.backbone import (FrozenBatchNorm2d, build_resnet_c4, freeze_cell, residual_stage,
                                      set_frozen_bn_impl)
from defrcn.modeling.lean_backward import use_lean_backward
from defrcn.modeling.winograd import use_winograd
from defrcn.modeling.param_count import count_parameters, format_parameter_count

# torchvision resnet101: 44,549,160 parameters, of which the fc layer 2048 * 1000 + 1000.
RESNET101_WITHOUT_FC = 44_549_160 - 2_049_000
# detectron2 R-101 C4 Faster R-CNN, 81 classes (FrozenBN affine are buffers there): the
# backbone's convolutions + RPN head (3x3 1024->1024 + bias, 1x1 -> 15, 1x1 -> 60) + box
# predictor (2048 -> 81, 2048 -> 320) = 52,731,548 = the 52.73M of its build log.
RPN_HEAD_PARAMS = 1024 * 1024 * 9 + 1024 + (1024 * 15 + 15) + (1024 * 60 + 60)
PREDICTOR_81_PARAMS = (2048 * 81 + 81) + (2048 * 320 + 320)
DETECTRON2_R101_C4_PARAMS = 52_731_548


pytestmark = pytest.mark.usefixtures("pynative_mode")


def _params(cell, trainable):
    return [p.name for p in cell.get_parameters() if p.requires_grad == trainable]


def _random(shape, seed=0):
    return ms.Tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def test_resnet18_trunk_has_stride_16_and_256_channels():
    trunk, res5 = build_resnet_c4(18, norm="bn", freeze_at=0)
    assert (trunk.out_channels, trunk.stride, res5.out_channels) == (256, 16, 512)
    assert trunk(_random((2, 3, 64, 96))).shape == (2, 256, 4, 6)
    assert trunk(_random((1, 3, 50, 70))).shape == (1, 256, 4, 5)  # ceil at every stride-2 step
    assert res5(_random((3, 256, 7, 7))).shape == (3, 512, 4, 4)


def test_resnet101_shapes_and_parameter_count():
    trunk, res5 = build_resnet_c4(101)
    assert (trunk.out_channels, res5.out_channels) == (1024, 2048)
    assert trunk(_random((1, 3, 32, 48))).shape == (1, 1024, 2, 3)
    assert res5.input_stride == 2  # reads cells 0, 2, 4, 6 of the 7 x 7 pooled grid
    assert res5(_random((2, 1024, 4, 4))).shape == (2, 2048, 4, 4)

    trunk_count, res5_count = count_parameters(trunk), count_parameters(res5)
    total = trunk_count["total"] + res5_count["total"]
    reference = resnet101(pretrained=False)
    assert total == count_parameters(reference)["total"] - count_parameters(reference.classifier)["total"]
    assert total == RESNET101_WITHOUT_FC
    # BatchNorm affine (gamma + beta) has as many elements as the running statistics.
    bn_affine = trunk_count["statistics"] + res5_count["statistics"]
    assert total - bn_affine + RPN_HEAD_PARAMS + PREDICTOR_81_PARAMS == DETECTRON2_R101_C4_PARAMS
    # freeze_at=3 + frozen BN: trainable = the convolutions of res4 and res5.
    assert res5_count["frozen"] == res5_count["statistics"]  # frozen = BN gamma/beta only
    assert "52.73M" in format_parameter_count(dict(total=DETECTRON2_R101_C4_PARAMS, trainable=0, frozen=0,
                                                   statistics=0))


def test_parameter_names_match_mindcv_checkpoints():
    trunk, res5 = build_resnet_c4(18, norm="bn", freeze_at=3)
    ours = [n for n, _ in trunk.parameters_and_names()] + [n for n, _ in res5.parameters_and_names()]
    assert sorted(ours) == sorted([p.name for p in trunk.get_parameters()] + [p.name for p in res5.get_parameters()])
    mindcv_names = {p.name for p in resnet18(pretrained=False).get_parameters()}
    assert set(ours) == mindcv_names - {"classifier.weight", "classifier.bias"}
    assert len(ours) == len(set(ours))


@pytest.mark.parametrize("norm", ["frozen_bn", "bn"])
def test_freeze_at_3_freezes_stem_res2_res3(norm):
    trunk, res5 = build_resnet_c4(50, norm=norm, freeze_at=3)
    for part in (trunk.conv1, trunk.bn1, trunk.layer1, trunk.layer2):
        assert _params(part, trainable=True) == []
    assert isinstance(trunk.bn1, FrozenBatchNorm2d)
    assert isinstance(trunk.layer2[0].down_sample[1], FrozenBatchNorm2d)  # converted inside a SequentialCell
    assert trunk.layer2[0].down_sample[1].gamma.name == "layer2.0.down_sample.1.gamma"
    for part in (trunk.layer3, res5):
        trainable = _params(part, trainable=True)
        conv_weights = [p.name for p in part.get_parameters() if "conv" in p.name or "down_sample.0" in p.name]
        assert set(conv_weights) <= set(trainable)
        assert all(("bn" in n or "down_sample.1" in n) for n in set(trainable) - set(conv_weights))
        assert (len(trainable) > len(conv_weights)) == (norm == "bn")  # bn: gamma/beta train too


@pytest.mark.parametrize("freeze_at, input_grad_is_zero", [(0, False), (1, True), (3, True)])
def test_frozen_stages_are_cut_from_the_gradient(freeze_at, input_grad_is_zero):
    trunk, _ = build_resnet_c4(18, norm="bn", freeze_at=freeze_at)
    x = _random((1, 3, 32, 32))

    def loss(image):
        return trunk(image).sum()

    grad = ms.grad(loss)(x).asnumpy()
    assert (np.abs(grad).max() == 0) == input_grad_is_zero
    counts = count_parameters(trunk)
    assert counts["trainable"] > 0 and (counts["frozen"] > 0) == (freeze_at > 0)


def test_frozen_batchnorm_is_fixed_and_computes_the_formula():
    rng = np.random.default_rng(0)
    norm = FrozenBatchNorm2d(3)
    values = dict(gamma=[1.5, -0.5, 2.0], beta=[0.1, 0.0, -1.0], moving_mean=[0.3, -2.0, 1.0],
                  moving_variance=[4.0, 0.25, 1.0])
    for name, value in values.items():
        getattr(norm, name).set_data(ms.Tensor(np.array(value, np.float32)))
    assert norm.trainable_params() == []
    assert sorted(p.name for p in norm.get_parameters()) == ["beta", "gamma", "moving_mean", "moving_variance"]
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    v = {k: np.array(a).reshape(1, 3, 1, 1) for k, a in values.items()}
    scale = v["gamma"] / np.sqrt(v["moving_variance"] + 1e-5)
    expected = x * scale + (v["beta"] - v["moving_mean"] * scale)
    np.testing.assert_allclose(norm(ms.Tensor(x)).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    # Same result as MindSpore's BatchNorm2d in inference with the same values.
    bn = nn.BatchNorm2d(3)
    for name, value in values.items():
        getattr(bn, name).set_data(ms.Tensor(np.array(value, np.float32)))
    bn.set_train(False)
    np.testing.assert_allclose(norm(ms.Tensor(x)).asnumpy(), bn(ms.Tensor(x)).asnumpy(), rtol=1e-5, atol=1e-5)


def test_frozen_batchnorm_backward_is_the_stock_input_gradient(each_mode):
    """The backward that keeps no input gives exactly what BatchNormGrad gives the input: the
    same values as nn.BatchNorm2d in inference (a different eps per layer included)."""
    rng = np.random.default_rng(1)
    channels = 16
    values = dict(gamma=rng.uniform(-2, 2, channels), beta=rng.uniform(-1, 1, channels),
                  moving_mean=rng.uniform(-1, 1, channels), moving_variance=rng.uniform(0.05, 4, channels))
    x = _random((3, channels, 5, 7), seed=2)
    weights = _random((3, channels, 5, 7), seed=3)
    for eps in (1e-5, 1e-3):
        frozen, stock = FrozenBatchNorm2d(channels, eps=eps), nn.BatchNorm2d(channels, eps=eps)
        for name, value in values.items():
            for norm in (frozen, stock):
                getattr(norm, name).set_data(ms.Tensor(value.astype(np.float32)))
        stock.set_train(False)
        grads = [ms.grad(_WeightedSum(norm))(x, weights).asnumpy() for norm in (frozen, stock)]
        expected = weights.asnumpy() * (values["gamma"] / np.sqrt(values["moving_variance"] + eps)
                                        ).reshape(1, -1, 1, 1)
        np.testing.assert_allclose(grads[0], expected, rtol=1e-5, atol=1e-6)
        if eps == 1e-5 and each_mode == "graph":
            # on CPU, BatchNormGrad's dx bit for bit (other devices: to rounding)
            np.testing.assert_array_equal(grads[0], grads[1])
        else:
            np.testing.assert_allclose(grads[0], grads[1], rtol=1e-6, atol=1e-6)


class _WeightedSum(nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x, weights):
        return (self.norm(x) * weights).sum()


@pytest.mark.parametrize("depth, stride_in_1x1", [(18, False), (50, True)])
def test_res5_gives_the_values_of_mindcvs_in_place_blocks(each_mode, depth, stride_in_1x1):
    """res5 runs its blocks through `residual_stage` (out-of-place residual sums) in training and
    inference: the values of mindcv's own blocks (`out += identity`), bit for bit, in both
    execution modes.
    The blocks cover a down-sampling shortcut and an identity one."""
    ms.set_seed(depth)
    trunk, res5 = build_resnet_c4(depth, norm="frozen_bn", freeze_at=3, stride_in_1x1=stride_in_1x1)
    side = 7 if res5.input_stride == 1 else 4
    rois = _random((3, trunk.out_channels, side, side), seed=depth)
    in_place = res5.layer4(rois).asnumpy()  # mindcv's own blocks
    res5.set_train(True)
    np.testing.assert_array_equal(res5(rois).asnumpy(), in_place)
    res5.set_train(False)
    np.testing.assert_array_equal(res5(rois).asnumpy(), in_place)
    assert res5.layer4[0].down_sample is not None and res5.layer4[1].down_sample is None
    if each_mode == "pynative":
        images = _random((1, 256 if depth == 50 else 64, 8, 8), seed=1)
        np.testing.assert_array_equal(residual_stage(trunk.layer2, images).asnumpy(),
                                      trunk.layer2(images).asnumpy())


def test_freeze_cell_converts_batchnorm_and_keeps_values():
    cell = nn.SequentialCell([nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)])
    cell[1].moving_mean.set_data(ms.Tensor(np.array([1.0, 2.0, 3.0], np.float32)))
    cell.set_train(False)
    x = _random((1, 2, 3, 3))
    before = cell(x).asnumpy()
    freeze_cell(cell)
    assert isinstance(cell[1], FrozenBatchNorm2d) and cell.trainable_params() == []
    np.testing.assert_allclose(cell(x).asnumpy(), before, rtol=1e-5, atol=1e-6)


def test_stride_in_1x1_moves_the_stride_and_keeps_names_and_shapes():
    msra_trunk, msra_res5 = build_resnet_c4(50, stride_in_1x1=True, freeze_at=0)
    tv_trunk, tv_res5 = build_resnet_c4(50, stride_in_1x1=False, freeze_at=0)
    for msra_stage, tv_stage in ((msra_trunk.layer2, tv_trunk.layer2), (msra_trunk.layer3, tv_trunk.layer3),
                                 (msra_res5.layer4, tv_res5.layer4)):
        # res5 takes its input already sampled at stride 2, so its conv1 runs at stride 1
        msra_stride = 1 if msra_stage is msra_res5.layer4 else 2
        assert tuple(msra_stage[0].conv1.stride)[-1] == msra_stride and tuple(msra_stage[0].conv2.stride)[-1] == 1
        assert tuple(tv_stage[0].conv1.stride)[-1] == 1 and tuple(tv_stage[0].conv2.stride)[-1] == 2

    def shapes(cell):
        return [(n, p.shape) for n, p in cell.parameters_and_names()]

    assert shapes(msra_trunk) == shapes(tv_trunk) and shapes(msra_res5) == shapes(tv_res5)
    for cell in (msra_trunk, msra_res5):
        assert sorted(p.name for p in cell.get_parameters()) == sorted(n for n, _ in cell.parameters_and_names())
    x = _random((1, 3, 40, 56))
    assert msra_trunk(x).shape == tv_trunk(x).shape == (1, 1024, 3, 4)
    assert (msra_res5.input_stride, tv_res5.input_stride) == (2, 1)
    assert msra_res5(_random((1, 1024, 4, 4))).shape == tv_res5(_random((1, 1024, 7, 7))).shape == (1, 2048, 4, 4)


def _strided_copy(conv, stride):
    return nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=1, stride=stride,
                     weight_init=conv.weight.data.copy())


@pytest.mark.parametrize("depth", [50, 101])
def test_res5_on_the_sampled_input_gives_the_strided_blocks_values(each_mode, depth):
    """With the stride in the 1x1, res5 takes cells 0, 2, 4, 6 of the 7 x 7 grid and runs conv1 and the
    shortcut at stride 1: the values of the stage with both at stride 2 on the whole grid, in training
    and in inference, and the same input gradient on the cells the strided stage reads (zero elsewhere)."""
    ms.set_seed(depth)
    _, res5 = build_resnet_c4(depth, norm="frozen_bn", freeze_at=0)
    block = res5.layer4[0]
    assert tuple(block.conv1.stride)[-1] == 1 and tuple(block.down_sample[0].stride)[-1] == 1
    _, strided = build_resnet_c4(depth, norm="frozen_bn", freeze_at=0)
    for name, param in strided.parameters_and_names():
        param.set_data(dict(res5.parameters_and_names())[name].data.copy())
    strided.layer4[0].conv1 = _strided_copy(strided.layer4[0].conv1, 2)
    strided.layer4[0].down_sample[0] = _strided_copy(strided.layer4[0].down_sample[0], 2)
    grid = _random((2, 1024, 7, 7), seed=depth)
    sampled = ms.Tensor(grid.asnumpy()[:, :, ::2, ::2].copy())
    for training in (True, False):
        res5.set_train(training)
        strided.set_train(training)
        np.testing.assert_allclose(res5(sampled).asnumpy(), strided(grid).asnumpy(), rtol=1e-5, atol=1e-5)
    weights = _random((2, 2048, 4, 4), seed=3)
    res5.set_train(True)
    strided.set_train(True)
    grad_sampled = ms.grad(_WeightedSum(res5))(sampled, weights).asnumpy()
    grad_grid = ms.grad(_WeightedSum(strided))(grid, weights).asnumpy()
    np.testing.assert_allclose(grad_sampled, grad_grid[:, :, ::2, ::2], rtol=1e-5, atol=1e-6)
    grad_grid[:, :, ::2, ::2] = 0
    assert not grad_grid.any()


def test_stem_max_pool_pads_like_torchvision():
    trunk, _ = build_resnet_c4(18, norm="bn", freeze_at=0)
    x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
    padded = np.pad(x[0, 0], 1, constant_values=-np.inf)
    expected = np.array([[padded[2 * i:2 * i + 3, 2 * j:2 * j + 3].max() for j in range(4)] for i in range(4)])
    np.testing.assert_array_equal(trunk.max_pool(ms.Tensor(x)).asnumpy()[0, 0], expected)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="depth"):
        build_resnet_c4(42)
    with pytest.raises(ValueError, match="norm"):
        build_resnet_c4(18, norm="gn")
    with pytest.raises(ValueError, match="freeze_at"):
        build_resnet_c4(18, freeze_at=5)


class _WeightedCrop(nn.Cell):
    """sum(trunk(x, extent)[..., :h, :w] * weights): a loss on the output inside the extent."""

    def __init__(self, trunk, masked):
        super().__init__()
        self.trunk, self.masked = trunk, masked

    def construct(self, x, extent, weights):
        out = self.trunk(x, extent) if self.masked else self.trunk(x)
        return (out[:, :, :weights.shape[2], :weights.shape[3]] * weights).sum()


def test_masked_trunk_gradients_equal_those_of_the_unpadded_input(each_mode):
    """Training on a canvas: the gradients of a loss on the output inside the extent, with respect to
    the input and every weight, are those of the same loss on the unpadded image."""
    ms.set_seed(6)
    trunk, _ = build_resnet_c4(50, norm="frozen_bn", freeze_at=0)
    trunk.set_train(True)
    image = np.random.default_rng(3).standard_normal((1, 3, 75, 101)).astype(np.float32)
    padded = np.zeros((1, 3, 80, 112), np.float32)
    padded[..., :75, :101] = image
    extent = ms.Tensor(np.array([[75, 101]], np.float32))
    weights = _random((1, 1024, 5, 7), seed=4)
    params = trunk.trainable_params()
    dx_own, dw_own = ms.grad(_WeightedCrop(trunk, False), grad_position=0, weights=params)(
        ms.Tensor(image), extent, weights)
    dx_canvas, dw_canvas = ms.grad(_WeightedCrop(trunk, True), grad_position=0, weights=params)(
        ms.Tensor(padded), extent, weights)
    np.testing.assert_allclose(dx_canvas.asnumpy()[..., :75, :101], dx_own.asnumpy(), rtol=1e-4,
                               atol=1e-5 * np.abs(dx_own.asnumpy()).max())
    for own, canvas in zip(dw_own, dw_canvas):
        np.testing.assert_allclose(canvas.asnumpy(), own.asnumpy(), rtol=1e-4, atol=1e-5 * np.abs(own.asnumpy()).max())


def _random_statistics(cell, seed):
    """Frozen BN statistics and affines far from the identity, so that a wrong scale shows."""
    rng = np.random.default_rng(seed)
    for name, param in cell.parameters_and_names():
        leaf = name.rsplit(".", 1)[-1]
        values = {"gamma": lambda: rng.uniform(0.5, 1.5, param.shape),
                  "beta": lambda: rng.normal(0, 0.2, param.shape),
                  "moving_mean": lambda: rng.normal(0, 0.2, param.shape),
                  "moving_variance": lambda: rng.uniform(0.5, 2.0, param.shape)}.get(leaf)
        if values is not None:
            param.set_data(ms.Tensor(values().astype(np.float32)))


class _TrunkAndRes5Loss(nn.Cell):
    def __init__(self, trunk, res5):
        super().__init__()
        self.trunk, self.res5 = trunk, res5

    def construct(self, image, extent, rois):
        features = self.trunk(image, extent)
        return (features ** 2).mean() + (self.res5(rois) ** 2).mean()


@pytest.mark.parametrize("depth", [18, 50])
def test_frozen_bn_in_the_convolution_gives_the_kernels_values_and_gradients(each_mode, depth):
    """model.frozen_bn_impl "in_conv" against "kernel": the same parameters and names, and, with
    every stage trainable, the stem, the masked trunk, the shortcuts, res5 (Winograd) and the
    lean 3x3 backward give the same loss and the same gradient for every weight, to rounding."""
    results = []
    for impl in ("kernel", "in_conv"):
        ms.set_seed(depth)
        trunk, res5 = build_resnet_c4(depth, norm="frozen_bn", freeze_at=0, stride_in_1x1=depth > 34)
        use_winograd(res5)
        use_lean_backward(trunk)
        _random_statistics(trunk, seed=1)
        _random_statistics(res5, seed=2)
        count = set_frozen_bn_impl(trunk, impl) + set_frozen_bn_impl(res5, impl)
        net = _TrunkAndRes5Loss(trunk, res5)
        net.set_train(True)
        side = 7 if res5.input_stride == 1 else 4
        inputs = (_random((1, 3, 64, 96), seed=3), ms.Tensor(np.array([[60, 90]], np.float32)),
                  _random((5, trunk.out_channels, side, side), seed=4))
        weights = net.trainable_params()
        loss, grads = ms.value_and_grad(net, None, weights)(*inputs)
        net.set_train(False)
        results.append(dict(count=count, loss=float(loss.asnumpy()), eval=res5(inputs[2]).asnumpy(),
                            names=[p.name for p in net.get_parameters()],
                            grads={w.name: g.asnumpy() for w, g in zip(weights, grads)}))
    kernel, in_conv = results
    assert kernel["count"] == in_conv["count"] == {18: 20, 50: 53}[depth]
    assert in_conv["names"] == kernel["names"]
    assert abs(in_conv["loss"] - kernel["loss"]) <= 1e-5 * abs(kernel["loss"])
    np.testing.assert_allclose(in_conv["eval"], kernel["eval"], rtol=1e-4, atol=1e-5 * np.abs(kernel["eval"]).max())
    assert len(kernel["grads"]) == len(in_conv["grads"]) > 0
    for name, expected in kernel["grads"].items():
        np.testing.assert_allclose(in_conv["grads"][name], expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max(),
                                   err_msg=name)


def test_set_frozen_bn_impl_sets_every_frozen_norm_and_rejects_unknown_values():
    trunk, res5 = build_resnet_c4(18, norm="frozen_bn", freeze_at=3, stride_in_1x1=False)
    norms = [cell for _, cell in trunk.cells_and_names() if isinstance(cell, FrozenBatchNorm2d)]
    assert set_frozen_bn_impl(trunk, "in_conv") == len(norms) == 15
    assert all(norm.in_conv for norm in norms)
    assert set_frozen_bn_impl(trunk, "kernel") == 15 and not any(norm.in_conv for norm in norms)
    with pytest.raises(ValueError, match="frozen BN impl must be one of kernel, in_conv, got 'fused'"):
        set_frozen_bn_impl(res5, "fused")
