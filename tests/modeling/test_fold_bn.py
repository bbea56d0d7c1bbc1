"""defrcn.modeling.fold_bn: the folded network computes what the plain one does."""
import numpy as np
import pytest

import mindspore as ms

from defrcn.modeling.backbone import FrozenBatchNorm2d, build_resnet_c4
from defrcn.modeling.fold_bn import fold_frozen_bn


pytestmark = pytest.mark.usefixtures("pynative_mode")


def _randomise_statistics(cell, rng):
    """Non-trivial frozen BN values so a wrong fold shows."""
    for _, sub in cell.cells_and_names():
        if isinstance(sub, FrozenBatchNorm2d):
            n = sub.num_features
            sub.gamma.set_data(ms.Tensor(rng.uniform(0.5, 1.5, n).astype(np.float32)))
            sub.beta.set_data(ms.Tensor(rng.normal(0, 0.2, n).astype(np.float32)))
            sub.moving_mean.set_data(ms.Tensor(rng.normal(0, 0.5, n).astype(np.float32)))
            sub.moving_variance.set_data(ms.Tensor(rng.uniform(0.5, 4.0, n).astype(np.float32)))


def _count(cell, kind):
    return sum(isinstance(sub, kind) for _, sub in cell.cells_and_names())


@pytest.mark.parametrize("depth, stride_in_1x1", [(18, False), (50, True)])
def test_folded_trunk_and_res5_match_the_plain_ones(depth, stride_in_1x1):
    rng = np.random.default_rng(depth)
    ms.set_seed(depth)
    trunk, res5 = build_resnet_c4(depth, norm="frozen_bn", freeze_at=3, stride_in_1x1=stride_in_1x1)
    _randomise_statistics(trunk, rng)
    _randomise_statistics(res5, rng)
    images = ms.Tensor(rng.normal(0, 1, (2, 3, 64, 64)).astype(np.float32))
    rois = ms.Tensor(rng.normal(0, 1, (3, trunk.out_channels, 7, 7)).astype(np.float32))
    plain_features = trunk(images).asnumpy()
    plain_boxes = res5(rois).asnumpy()
    n_bn = _count(trunk, FrozenBatchNorm2d) + _count(res5, FrozenBatchNorm2d)

    folded = fold_frozen_bn(trunk) + fold_frozen_bn(res5)
    assert folded == n_bn  # every frozen BN of a ResNet follows a convolution
    assert _count(trunk, FrozenBatchNorm2d) == _count(res5, FrozenBatchNorm2d) == 0
    np.testing.assert_allclose(trunk(images).asnumpy(), plain_features, rtol=1e-4,
                               atol=1e-4 * np.abs(plain_features).max())
    np.testing.assert_allclose(res5(rois).asnumpy(), plain_boxes, rtol=1e-4,
                               atol=1e-4 * np.abs(plain_boxes).max())
    names = [p.name for p in list(trunk.get_parameters()) + list(res5.get_parameters())]
    assert len(names) == len(set(names))


def test_fold_keeps_requires_grad_and_leaves_unpaired_cells():
    ms.set_seed(0)
    trunk, _ = build_resnet_c4(18, norm="frozen_bn", freeze_at=1, stride_in_1x1=False)
    stem_frozen = trunk.conv1.weight.requires_grad
    res4_trainable = trunk.layer3[0].conv1.weight.requires_grad
    fold_frozen_bn(trunk)
    assert trunk.conv1.weight.requires_grad == stem_frozen is False
    assert trunk.layer3[0].conv1.weight.requires_grad == res4_trainable is True
    assert trunk.conv1.has_bias and trunk.layer3[0].conv1.bias.name.endswith("conv1.bias")
    # only the frozen convolutions: the stem (freeze_at 1) but no residual stage
    trunk2, _ = build_resnet_c4(18, norm="frozen_bn", freeze_at=1, stride_in_1x1=False)
    assert fold_frozen_bn(trunk2, only_frozen_convs=True) == 1
    assert isinstance(trunk2.bn1, ms.nn.Identity) and isinstance(trunk2.layer1[0].bn1, FrozenBatchNorm2d)
    # a BN-free cell is left alone
    assert fold_frozen_bn(ms.nn.Conv2d(3, 4, 3)) == 0


def test_frozen_bn_kernel_matches_the_affine_formula_in_value_and_input_gradient():
    from mindspore import ops

    rng = np.random.default_rng(3)
    bn = FrozenBatchNorm2d(5)
    _randomise_statistics(bn, rng)
    x = ms.Tensor(rng.normal(0, 2, (2, 5, 4, 4)).astype(np.float32))
    scale = bn.gamma.asnumpy() / np.sqrt(bn.moving_variance.asnumpy() + bn.eps)
    shift = bn.beta.asnumpy() - bn.moving_mean.asnumpy() * scale
    expected = x.asnumpy() * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(bn(x).asnumpy(), expected, rtol=1e-5, atol=1e-5)
    grad = ops.grad(lambda t: (bn(t) * 3.0).sum())(x).asnumpy()
    np.testing.assert_allclose(grad, np.broadcast_to(3.0 * scale.reshape(1, -1, 1, 1), grad.shape),
                               rtol=1e-5)


def test_fold_for_inference_keeps_the_detections_of_a_frozen_bn_detector():
    """What tools/eval.py and tools/infer.py do after loading weights: same detections."""
    from defrcn.modeling.detector import build_detector
    from defrcn.modeling.fold_bn import fold_for_inference

    def build():
        ms.set_seed(7)
        model = build_detector(num_classes=3, depth=18, norm="frozen_bn", freeze_at=2, verbose=False,
                               rpn=dict(pre_nms_topk_test=200, post_nms_topk_test=40),
                               roi=dict(detections_per_image=10, score_thresh=0.0))
        _randomise_statistics(model, np.random.default_rng(3))
        return model

    plain, folded = build(), build()
    plain.set_train(False)
    assert fold_for_inference(folded) == _count(plain, FrozenBatchNorm2d)
    assert _count(folded, FrozenBatchNorm2d) == 0 and not folded.training
    images = ms.Tensor(np.random.default_rng(4).standard_normal((1, 3, 96, 128)).astype(np.float32))
    sizes = ms.Tensor(np.array([[96, 128]], np.float32))
    expected = [o.asnumpy() for o in plain(images, sizes)]
    got = [o.asnumpy() for o in folded(images, sizes)]
    assert expected[3].sum() > 0
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3)
