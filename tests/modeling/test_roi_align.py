"""defrcn.modeling.roi_align: ROIAlign as two matrix products, checked on linear fields (where
bilinear sampling is exact, so each bin's value is the field at the bin's centre), against a
cropped map, and for chunking, layout and the gradient to the features."""
import numpy as np
import pytest

import mindspore as ms

from defrcn.modeling.roi_align import axis_weights, max_samples_per_bin, roi_align_grouped, swap_last_two_axes

pytestmark = pytest.mark.usefixtures("pynative_mode")


def random_boxes(rng, batch, per_image, image_size):
    """(batch, per_image, 4) boxes from 4 px to the image size; some reach past the border."""
    sizes = rng.uniform(4.0, image_size, size=(batch, per_image, 2))
    x0y0 = rng.uniform(-0.1 * image_size, 1.1 * image_size, size=(batch, per_image, 2)) - sizes / 2
    return np.concatenate([x0y0, x0y0 + sizes], axis=-1).astype(np.float32)


def pool(features, boxes, output_size, scale, **options):
    return roi_align_grouped(ms.Tensor(np.asarray(features, np.float32)), ms.Tensor(np.asarray(boxes, np.float32)),
                             output_size, scale, **options).asnumpy()


def axis(start, size, length, output_size, sampling):
    return axis_weights(ms.Tensor(np.asarray(start, np.float32).reshape(-1, 1)),
                        ms.Tensor(np.asarray(size, np.float32).reshape(-1, 1)), length, output_size,
                        sampling, max_samples_per_bin(length, output_size, sampling)).asnumpy()


def test_max_samples_per_bin():
    assert max_samples_per_bin(50, 7, 2) == 2
    assert max_samples_per_bin(50, 7, 0) == 8  # adaptive: ceil((50 + 1) / 7)
    assert max_samples_per_bin(13, 7, 0) == 2


@pytest.mark.parametrize("sampling", [0, 1, 2, 3])
def test_axis_weights_inside_the_map_sum_to_one_and_centre_on_the_bin(sampling):
    starts, sizes = [1.25, 0.0], [6.5, 11.0]
    weights = axis(starts, sizes, 12, 7, sampling)
    assert weights.shape == (2, 7, 12)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    centres = [[s + (i + 0.5) * n / 7 for i in range(7)] for s, n in zip(starts, sizes)]
    np.testing.assert_allclose(weights @ np.arange(12), centres, atol=1e-5)


def test_axis_weights_ignore_samples_beyond_one_cell_outside_the_map():
    weights = axis([-5.0, 12.5], [2.0, 2.0], 12, 2, 2)
    np.testing.assert_array_equal(weights, 0.0)


def linear_field(batch, channels, height, width, seed=0):
    """features[b, c] = a[c] * x + b[c] * y + k[c], and the coefficients."""
    rng = np.random.default_rng(seed)
    a, b, k = rng.normal(size=(3, channels))
    y, x = np.mgrid[0:height, 0:width]
    field = a[:, None, None] * x + b[:, None, None] * y + k[:, None, None]
    return np.broadcast_to(field, (batch, channels, height, width)).astype(np.float32), (a, b, k)


@pytest.mark.parametrize("sampling", [0, 2])
@pytest.mark.parametrize("aligned", [True, False])
def test_linear_field_pools_to_its_value_at_each_bin_centre(aligned, sampling):
    scale, size = 0.25, 3
    features, (a, b, k) = linear_field(2, 3, 12, 10)
    # inside the map in feature cells (x 0..9, y 0..11) under both conventions
    boxes = np.array([[[4, 4, 30, 40], [10, 6, 14, 9]], [[2.5, 20, 36, 44], [8, 8, 28, 16]]], np.float32)
    got = pool(features, boxes, size, scale, sampling_ratio=sampling, aligned=aligned)
    assert got.shape == (4, 3, size, size)
    offset = 0.5 if aligned else 0.0
    for r, (x0, y0, x1, y1) in enumerate(boxes.reshape(-1, 4) * scale - offset):
        width, height = x1 - x0, y1 - y0
        if not aligned:
            width, height = max(width, 1.0), max(height, 1.0)
        cx = x0 + (np.arange(size) + 0.5) * width / size
        cy = y0 + (np.arange(size) + 0.5) * height / size
        expected = (a[:, None, None] * cx[None, None, :] + b[:, None, None] * cy[None, :, None]
                    + k[:, None, None])
        np.testing.assert_allclose(got[r], expected, atol=1e-4, err_msg=f"roi {r}")


def test_valid_cells_pool_as_a_map_of_that_size():
    rng = np.random.default_rng(1)
    features = rng.standard_normal((2, 3, 9, 11)).astype(np.float32)
    boxes = random_boxes(rng, 2, 6, 144)
    valid = np.array([[6, 11], [9, 7]], np.float32)
    got = pool(features, boxes, 4, 1 / 16, sampling_ratio=2, valid_cells=ms.Tensor(valid))
    for image, (rows, cols) in enumerate(valid.astype(int)):
        alone = pool(features[image:image + 1, :, :rows, :cols], boxes[image:image + 1], 4, 1 / 16,
                     sampling_ratio=2)
        np.testing.assert_allclose(got[image * 6:(image + 1) * 6], alone, atol=1e-5)


def test_gradient_mass_is_one_per_bin_and_none_reaches_the_boxes():
    features = ms.Tensor(np.random.default_rng(2).standard_normal((1, 2, 8, 8)).astype(np.float32))
    boxes = ms.Tensor(np.array([[[8, 8, 56, 40], [16, 4, 40, 60]]], np.float32))

    def pooled_sum(feature_map, box_tensor):
        return roi_align_grouped(feature_map, box_tensor, 3, 1 / 8, sampling_ratio=2).sum()

    feature_grad, box_grad = ms.grad(pooled_sum, grad_position=(0, 1))(features, boxes)
    # each of 2 RoIs x 9 bins averages samples whose bilinear weights sum to 1
    np.testing.assert_allclose(feature_grad.asnumpy().sum(axis=(0, 2, 3)), [18.0, 18.0], atol=1e-4)
    np.testing.assert_array_equal(box_grad.asnumpy(), 0.0)


def test_roi_chunks_equal_all_at_once_with_gradient(each_mode):
    rng = np.random.default_rng(6)
    features = ms.Tensor(rng.standard_normal((2, 3, 9, 11)).astype(np.float32))
    boxes = ms.Tensor(random_boxes(rng, 2, 10, 144))
    weights = ms.Tensor(rng.standard_normal((20, 3, 7, 7)).astype(np.float32))

    def weighted(rois_per_call):
        def fn(feature_map):
            return (roi_align_grouped(feature_map, boxes, 7, 1 / 16, rois_per_call=rois_per_call) * weights).sum()
        return fn

    whole = ms.value_and_grad(weighted(1000))(features)
    chunked = ms.value_and_grad(weighted(3))(features)  # chunks of 3, 3, 3, 1
    np.testing.assert_allclose(chunked[0].asnumpy(), whole[0].asnumpy(), rtol=1e-5)
    np.testing.assert_allclose(chunked[1].asnumpy(), whole[1].asnumpy(), atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 4, 9), (2, 9, 4)])
def test_swap_last_two_axes_is_an_exact_transpose(shape):
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(swap_last_two_axes(ms.Tensor(x)).asnumpy(), x.transpose(0, 2, 1))


def test_tall_map_chunks_equal_all_at_once():
    rng = np.random.default_rng(8)
    features = rng.standard_normal((1, 3, 13, 6)).astype(np.float32)  # taller than wide
    boxes = random_boxes(rng, 1, 10, 96)
    whole = pool(features, boxes, 7, 1 / 16, rois_per_call=1000)
    chunked = pool(features, boxes, 7, 1 / 16, rois_per_call=4)  # 4 * 6 // 13 = 1 RoI per call
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)
