"""res5's 3x3 convolutions as Winograd F(4x4, 3x3) matmuls: the values and gradients of the
direct convolution, alone and inside the whole detector."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from defrcn.modeling.detector import build_detector
from defrcn.modeling.fold_bn import fold_for_inference
from defrcn.modeling.winograd import WinogradConv2d, resolve_res5_conv, use_winograd, winograd_matrices


class Apply(nn.Cell):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def construct(self, x):
        return self.conv(x)


class SquareSum(nn.Cell):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def construct(self, x):
        return (self.conv(x) ** 2).sum()


class FirstOutput(nn.Cell):
    """The detector's total loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def construct(self, *inputs):
        return self.model(*inputs)[0]


class Gradients(nn.Cell):
    """Gradients of a scalar-valued Cell w.r.t. its trainable parameters, and (inputs=True)
    first w.r.t. its inputs: (input grads, parameter grads)."""

    def __init__(self, net, inputs=True):
        super().__init__()
        self.net = net
        self.params = ms.ParameterTuple(net.trainable_params())
        self.grad = ops.GradOperation(get_all=inputs, get_by_list=True)

    def construct(self, *inputs):
        return self.grad(self.net, self.params)(*inputs)


def _direct_numpy(x, w):
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((x.shape[0], w.shape[0], x.shape[2], x.shape[3]))
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            patch = padded[:, :, i:i + 3, j:j + 3].reshape(x.shape[0], -1)
            out[:, :, i, j] = patch @ w.reshape(w.shape[0], -1).T.astype(np.float64)
    return out


def test_transforms_reproduce_the_convolution_in_float64():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((3, 5, 4, 4)), rng.standard_normal((7, 5, 3, 3))
    t_in, t_w, t_out = winograd_matrices()
    v = (x.reshape(15, 16) @ t_in).reshape(3, 5, 36).transpose(2, 0, 1)
    u = (w.reshape(35, 9) @ t_w).reshape(7, 5, 36).transpose(2, 1, 0)
    y = (np.matmul(v, u).transpose(1, 2, 0).reshape(21, 36) @ t_out).reshape(3, 7, 4, 4)
    np.testing.assert_allclose(y, _direct_numpy(x, w), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("has_bias", [False, True])
def test_values_and_gradients_equal_the_direct_convolution(graph_mode, has_bias):
    rng = np.random.default_rng(1)
    direct = nn.Conv2d(256, 128, 3, pad_mode="pad", padding=1, has_bias=has_bias, bias_init="normal")
    direct.weight.set_data(Tensor((rng.standard_normal((128, 256, 3, 3)) * np.sqrt(2 / 2304)).astype(np.float32)))
    holder = Apply(direct)
    assert use_winograd(holder) == 1 and isinstance(holder.conv, WinogradConv2d)
    assert holder.conv.weight is direct.weight  # the same Parameter: names and checkpoints unchanged
    x = Tensor(np.maximum(rng.standard_normal((40, 256, 4, 4)), 0).astype(np.float32))
    expected, got = Apply(direct)(x).asnumpy(), Apply(holder.conv)(x).asnumpy()
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * scale)

    (gx_d,), gw_d = Gradients(SquareSum(direct))(x)
    (gx_w,), gw_w = Gradients(SquareSum(holder.conv))(x)
    for a, b in zip((gx_w, *gw_w), (gx_d, *gw_d)):
        a, b = a.asnumpy(), b.asnumpy()
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_other_maps_and_convolutions_are_left_to_the_stock_kernel(graph_mode):
    strided = nn.Conv2d(8, 8, 3, stride=2, pad_mode="pad", padding=1)
    one_by_one = nn.Conv2d(8, 8, 1)
    holder = nn.SequentialCell([strided, one_by_one])
    assert use_winograd(holder) == 0
    conv = nn.Conv2d(8, 4, 3, pad_mode="pad", padding=1)
    x = Tensor(np.random.default_rng(2).standard_normal((2, 8, 7, 7)).astype(np.float32))
    expected = Apply(conv)(x).asnumpy()
    holder = Apply(conv)
    use_winograd(holder)
    np.testing.assert_array_equal(Apply(holder.conv)(x).asnumpy(), expected)  # 7x7: the stock op


def _detector(res5_conv, norm="frozen_bn"):
    ms.set_seed(0)
    np.random.seed(0)
    return build_detector(num_classes=3, depth=18, norm=norm, freeze_at=0, stride_in_1x1=False, verbose=False,
                          rpn=dict(pre_nms_topk_train=200, post_nms_topk_train=32, pre_nms_topk_test=100,
                                   post_nms_topk_test=20),
                          roi=dict(batch_size_per_image=16, detections_per_image=10), res5_conv=res5_conv)


def _same_weights(source, target):
    values = {p.name: p.data.asnumpy() for p in source.get_parameters()}
    for p in target.get_parameters():
        p.set_data(Tensor(values[p.name]))


def _inputs():
    rng = np.random.default_rng(3)
    images = Tensor(rng.standard_normal((2, 3, 128, 128)).astype(np.float32))
    sizes = Tensor(np.array([[128, 128], [112, 128]], np.float32))
    gt = np.zeros((2, 4, 4), np.float32)
    gt[:, 0], gt[:, 1] = [10, 12, 70, 80], [40, 30, 120, 110]
    classes, valid = np.zeros((2, 4), np.int32), np.zeros((2, 4), bool)
    classes[:, :2], valid[:, :2] = [[0, 2], [1, 0]], True
    return images, sizes, Tensor(gt), Tensor(classes), Tensor(valid)


@pytest.mark.slow
def test_whole_detector_losses_gradients_and_detections_match(graph_mode):
    direct, winograd = _detector("direct", norm="bn"), _detector("winograd", norm="bn")
    _same_weights(direct, winograd)
    assert sum(isinstance(c, WinogradConv2d) for _, c in winograd.cells_and_names()) == 3  # R-18 res5
    assert [p.name for p in direct.get_parameters()] == [p.name for p in winograd.get_parameters()]
    images, sizes, gt, classes, valid = _inputs()

    def losses_and_grads(model):
        model.set_train(True)
        loss = FirstOutput(model)(images, sizes, gt, classes, valid).asnumpy()
        grads = Gradients(FirstOutput(model), inputs=False)(images, sizes, gt, classes, valid)
        return loss, {p.name: g.asnumpy() for p, g in zip(model.trainable_params(), grads)}

    loss_d, grads_d = losses_and_grads(direct)
    loss_w, grads_w = losses_and_grads(winograd)
    np.testing.assert_allclose(loss_w, loss_d, rtol=1e-4)
    assert grads_w.keys() == grads_d.keys()
    for key in grads_d:  # res5's own and everything the box losses reach through it
        np.testing.assert_allclose(grads_w[key], grads_d[key], rtol=1e-3, atol=1e-4 * np.abs(grads_d[key]).max(),
                                   err_msg=key)
    direct.set_train(False)
    winograd.set_train(False)
    fold_for_inference(direct)
    fold_for_inference(winograd)
    assert sum(isinstance(c, WinogradConv2d) for _, c in winograd.cells_and_names()) == 3  # kept by folding
    out_d = [t.asnumpy() for t in direct(images, sizes)]
    out_w = [t.asnumpy() for t in winograd(images, sizes)]
    assert out_d[3].sum() >= 5  # detections exist to compare
    np.testing.assert_array_equal(out_w[3], out_d[3])  # the same detections survive
    np.testing.assert_allclose(out_w[1], out_d[1], rtol=1e-4, atol=1e-5)  # scores
    np.testing.assert_allclose(out_w[0], out_d[0], rtol=1e-4, atol=1e-3)  # boxes, pixels


@pytest.mark.parametrize("device, expected", [("CPU", "winograd"), ("GPU", "direct"), ("Ascend", "direct")])
def test_auto_is_winograd_on_cpu_only(device, expected):
    assert resolve_res5_conv("auto", device) == expected
    assert resolve_res5_conv("direct", device) == "direct"
    assert resolve_res5_conv("winograd", device) == "winograd"


def test_the_detector_setting_picks_res5_convolutions():
    """On this CPU "auto" builds the Winograd res5 (R-18: three 3x3s); a bad value is refused."""
    counts = {}
    for choice in ("auto", "direct", "winograd"):
        model = build_detector(num_classes=3, depth=18, res5_conv=choice, verbose=False)
        counts[choice] = [name for name, cell in model.cells_and_names() if isinstance(cell, WinogradConv2d)]
    assert counts["auto"] == counts["winograd"] and len(counts["auto"]) == 3
    assert all(name.startswith("roi_heads.res5.") for name in counts["auto"])
    assert counts["direct"] == []
    with pytest.raises(ValueError, match="res5_conv must be one of auto, direct, winograd, got 'fft'"):
        build_detector(num_classes=3, depth=18, res5_conv="fft", verbose=False)
