"""Transforms: exact box maths, round trips, aspect kept, static canvases."""
import numpy as np
import pytest

from defrcn.data import transforms as T


def _image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_hflip_boxes_exact_case():
    boxes = np.array([[1, 2, 4, 5]], np.float32)
    np.testing.assert_array_equal(T.hflip_boxes(boxes, 10), [[6, 2, 9, 5]])


def test_flip_twice_is_identity():
    image = _image(5, 7)
    boxes = np.array([[0, 0, 3, 2], [1.5, 1, 7, 5]], np.float32)
    np.testing.assert_array_equal(T.hflip_image(T.hflip_image(image)), image)
    np.testing.assert_array_equal(T.hflip_boxes(T.hflip_boxes(boxes, 7), 7), boxes)
    np.testing.assert_array_equal(T.hflip_image(image)[:, 0], image[:, -1])


@pytest.mark.parametrize("canvases, hw, expected", [
    ([(800, 1344), (1344, 800)], (480, 640), 0),
    ([(800, 1344), (1344, 800)], (640, 480), 1),
    ([(1344, 800), (800, 1344)], (500, 500), 1),  # square image counts as landscape
    ([(256, 256)], (100, 300), 0),
    ([(800, 1344)], (640, 480), 0),  # no portrait canvas: still the only one
])
def test_choose_canvas_matches_orientation(canvases, hw, expected):
    assert T.choose_canvas(*hw, canvases) == expected


@pytest.mark.parametrize("hw, short, max_size, canvas, expected", [
    ((480, 640), 800, 1333, (800, 1344), 800 / 480),  # short edge rules
    ((200, 1000), 800, 1333, (800, 1344), 1333 / 1000),  # long edge capped
    ((480, 640), 800, 1333, (512, 512), 512 / 640),  # scaled down to fit the canvas
])
def test_resize_scale(hw, short, max_size, canvas, expected):
    assert T.resize_scale(*hw, short, max_size, canvas) == pytest.approx(expected)


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (333, 500), (100, 1000), (37, 53)])
@pytest.mark.parametrize("canvas", [(800, 1344), (1344, 800), (256, 256)])
def test_resize_keeps_aspect_and_fits_canvas(hw, canvas):
    scale = T.resize_scale(*hw, 800, 1333, canvas)
    h, w = T.resized_shape(*hw, scale)
    assert h <= canvas[0] and w <= canvas[1]
    assert abs(h - hw[0] * scale) <= 0.5 and abs(w - hw[1] * scale) <= 0.5  # never stretched
    assert T.resize_image(_image(*hw), (h, w)).shape == (h, w, 3)


def test_normalisation_constants():
    pixel = np.array([[[123, 116, 103]]], np.uint8)  # RGB
    msra = T.normalize_image(pixel, "msra")
    assert msra.shape == (3, 1, 1) and msra.dtype == np.float32
    np.testing.assert_allclose(msra[:, 0, 0], [103 - 103.53, 116 - 116.28, 123 - 123.675],
                               atol=1e-4)  # BGR order, 0-255
    white = T.normalize_image(np.full((1, 1, 3), 255, np.uint8), "torchvision")
    np.testing.assert_allclose(white[:, 0, 0], [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                (1 - 0.406) / 0.225], rtol=1e-5)


def test_pad_image_places_content_top_left_with_zeros():
    chw = np.ones((3, 2, 3), np.float32)
    out = T.pad_image(chw, (4, 5))
    assert out.shape == (3, 4, 5)
    assert out[:, :2, :3].min() == 1 and out[:, 2:].max() == 0 and out[:, :, 3:].max() == 0
    with pytest.raises(ValueError):
        T.pad_image(chw, (1, 5))


def test_pad_gt_and_valid_mask():
    boxes, classes, valid = T.pad_gt(np.ones((3, 4)), [4, 5, 6], 5)
    assert boxes.shape == (5, 4) and boxes.dtype == np.float32
    assert classes.dtype == np.int32 and valid.dtype == np.float32
    np.testing.assert_array_equal(valid, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(classes, [4, 5, 6, 0, 0])
    assert boxes[3:].max() == 0
    boxes, classes, valid = T.pad_gt(np.arange(28).reshape(7, 4), np.arange(7), 5)
    np.testing.assert_array_equal(classes, np.arange(5))  # the first G kept
    assert valid.sum() == 5 and boxes[4, 0] == 16
    boxes, classes, valid = T.pad_gt(np.zeros((0, 4)), [], 2)
    assert valid.sum() == 0 and boxes.shape == (2, 4)


def test_clip_boxes_drops_empty():
    boxes, keep = T.clip_boxes([[-5, -5, 5, 5], [20, 1, 30, 4], [2, 2, 2, 8]], 10, 12)
    np.testing.assert_array_equal(boxes[0], [0, 0, 5, 5])
    np.testing.assert_array_equal(keep, [True, False, False])


def _prepare(flip, canvas=(800, 1344), short=800):
    boxes = np.array([[10, 20, 110, 220], [600, 400, 640, 480]], np.float32)
    out = T.prepare_example(_image(480, 640), boxes, np.array([2, 5]), canvas=canvas,
                            short_size=short, max_size=1333, flip=flip,
                            pixel_format="msra", max_gt=4)
    return boxes, out


def test_prepare_then_inverse_round_trips_boxes():
    boxes, out = _prepare(flip=False)
    assert out["image"].shape == (3, 800, 1344) and out["image"].dtype == np.float32
    h, w = out["image_size"]
    assert (h, w) == (800, 1067)
    assert out["image"][:, :, 1067:].max() == 0
    back = T.boxes_to_original(out["gt_boxes"][:2], out["scale"], 480, 640)
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    np.testing.assert_array_equal(out["gt_classes"], [2, 5, 0, 0])
    np.testing.assert_array_equal(out["gt_valid"], [1, 1, 0, 0])


def test_prepare_flip_mirrors_image_and_boxes():
    _, plain = _prepare(flip=False, canvas=(256, 256), short=256)
    boxes, flipped = _prepare(flip=True, canvas=(256, 256), short=256)
    h, w = (int(v) for v in flipped["image_size"])
    assert (h, w) == (192, 256)
    np.testing.assert_array_equal(flipped["image"][:, :h, :w], plain["image"][:, :h, ::-1])
    unflipped = T.hflip_boxes(flipped["gt_boxes"][:2], w)
    np.testing.assert_allclose(T.boxes_to_original(unflipped, flipped["scale"]), boxes,
                               atol=1e-3)


def test_sample_augmentation_is_a_function_of_the_generator():
    draws = [T.sample_augmentation(np.random.default_rng(7), [1, 2, 3], 0.5) for _ in range(2)]
    assert draws[0] == draws[1]
    many = {T.sample_augmentation(np.random.default_rng(s), [1, 2, 3], 0.5) for s in range(40)}
    assert {m[0] for m in many} == {1, 2, 3} and {m[1] for m in many} == {True, False}


@pytest.mark.parametrize("pixel_format", ["msra", "torchvision"])
def test_fused_normalise_and_pad_equals_the_two_steps(pixel_format):
    image = T.hflip_image(_image(5, 7))
    fused = T.normalize_to_canvas(image, pixel_format, (6, 9))
    two_steps = T.pad_image(T.normalize_image(image, pixel_format), (6, 9))
    np.testing.assert_array_equal(fused, two_steps)
    assert fused[:, 5:].max() == 0 and fused[:, :, 7:].max() == 0
