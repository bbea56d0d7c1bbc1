"""The padded region detectron2 would compute on: extents, masks, and the parts that honour them
(trunk, RPN, pooler) compared with the same network run on the unpadded input."""
import mindspore as ms
import numpy as np
import pytest

from defrcn.modeling.backbone import build_resnet_c4
from defrcn.modeling.padding import padded_extent, region_mask, valid_cells
from defrcn.modeling.pooler import ROIPooler
from defrcn.modeling.rpn import RPN


def test_extent_is_the_batch_max_in_training_and_each_image_in_inference():
    sizes = ms.Tensor(np.array([[100, 120], [90, 130]], np.float32))
    np.testing.assert_array_equal(padded_extent(sizes).asnumpy(), [[100, 130], [100, 130]])
    np.testing.assert_array_equal(padded_extent(sizes, batch_max=False).asnumpy(), [[100, 120], [90, 130]])
    np.testing.assert_array_equal(padded_extent(sizes, 32, batch_max=False).asnumpy(), [[128, 128], [96, 160]])


def test_mask_keeps_ceil_of_extent_over_stride():
    extent = ms.Tensor(np.array([[100, 120], [33, 16]], np.float32))
    np.testing.assert_array_equal(valid_cells(extent, 16).asnumpy(), [[7, 8], [3, 1]])
    mask = region_mask(extent, 9, 10, 16).asnumpy()
    assert mask.shape == (2, 1, 9, 10)
    assert mask[0, 0].sum() == 7 * 8 and mask[0, 0, :7, :8].all()
    assert mask[1, 0].sum() == 3 and mask[1, 0, :3, :1].all()


@pytest.mark.parametrize("depth, stride_in_1x1", [(18, True), (50, True), (50, False)])
def test_masked_trunk_on_any_canvas_equals_the_unpadded_input(depth, stride_in_1x1):
    ms.set_seed(0)
    trunk, _ = build_resnet_c4(depth, norm="frozen_bn", freeze_at=0, stride_in_1x1=stride_in_1x1)
    trunk.set_train(False)
    image = np.random.RandomState(0).randn(1, 3, 75, 101).astype(np.float32)
    own = trunk(ms.Tensor(image)).asnumpy()
    extent = ms.Tensor(np.array([[75, 101]], np.float32))
    for canvas in ((80, 112), (128, 160)):
        padded = np.zeros((1, 3) + canvas, np.float32)
        padded[..., :75, :101] = image
        plain = trunk(ms.Tensor(padded)).asnumpy()[..., :own.shape[2], :own.shape[3]]
        masked = trunk(ms.Tensor(padded), extent).asnumpy()[..., :own.shape[2], :own.shape[3]]
        scale = np.abs(own).max()
        assert np.abs(plain - own).max() > 1e-2 * scale  # the padding does reach the features
        np.testing.assert_allclose(masked, own, atol=1e-5 * scale)


@pytest.mark.parametrize("aligned", [True, False])
def test_pooler_valid_cells_equal_pooling_the_cropped_map(aligned):
    rng = np.random.RandomState(1)
    own = rng.randn(2, 4, 5, 7).astype(np.float32)
    padded = rng.randn(2, 4, 9, 12).astype(np.float32) * 10  # garbage past the map's end
    padded[:, :, :5, :7] = own
    boxes = np.array([[[0, 0, 112, 80], [60, 40, 112, 80], [100, 70, 112, 80]]] * 2, np.float32)
    pooler = ROIPooler(output_size=3, spatial_scale=1 / 16, sampling_ratio=0, aligned=aligned)
    expected = pooler(ms.Tensor(own), ms.Tensor(boxes)).asnumpy()
    cells = ms.Tensor(np.array([[5, 7], [5, 7]], np.float32))
    got = pooler(ms.Tensor(padded), ms.Tensor(boxes), cells).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(pooler(ms.Tensor(padded), ms.Tensor(boxes)).asnumpy() - expected).max() > 1e-2


def test_rpn_uses_only_the_anchors_inside_the_extent():
    ms.set_seed(0)
    rpn = RPN(in_channels=8, pre_nms_topk_test=100, post_nms_topk_test=20)
    rpn.set_train(False)
    own = np.random.RandomState(2).randn(1, 8, 5, 7).astype(np.float32)
    padded = np.full((1, 8, 8, 10), 50.0, np.float32)  # anything past the extent must not matter
    padded[..., :5, :7] = own
    sizes = ms.Tensor(np.array([[80, 112]], np.float32))
    expected = [o.asnumpy() for o in rpn(ms.Tensor(own), sizes)]
    got = [o.asnumpy() for o in rpn(ms.Tensor(padded), sizes, None, None, None,
                                     ms.Tensor(np.array([[80, 112]], np.float32)))]
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5, atol=1e-3)
    unmasked = rpn(ms.Tensor(padded), sizes)[0].asnumpy()
    assert np.abs(unmasked - expected[0]).max() > 1.0
