"""defrcn.apps.benchmark, piece by piece: the random batch and JPEGs, the call timer, the
BN calibration, and the argument checks (tests/tools/test_benchmark_cli.py runs the tool)."""
import time

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from defrcn.apps.benchmark import (MSRA_MEAN_BGR, _norm_layers, benchmark_recipe, calibrate_norm_statistics,
                                   peak_rss_mib, synthetic_batch, time_calls, write_synthetic_images)
from defrcn.errors import InputError

RECIPE = "recipes/toy_base.py"


def test_synthetic_batch_has_the_loader_columns():
    batch = synthetic_batch(2, 96, 128, num_classes=6, max_gt=5, boxes_per_image=3, seed=1)
    assert batch["images"].shape == (2, 3, 96, 128) and batch["images"].dtype == np.float32
    np.testing.assert_array_equal(batch["image_sizes"], [[96, 128], [96, 128]])
    assert batch["gt_boxes"].shape == (2, 5, 4) and batch["gt_classes"].dtype == np.int32
    np.testing.assert_array_equal(batch["gt_valid"], [[1, 1, 1, 0, 0]] * 2)
    boxes = batch["gt_boxes"][:, :3].reshape(-1, 4)
    sides = boxes[:, 2:] - boxes[:, :2]
    assert (sides >= 16).all() and (sides[:, 0] <= 64 + 16).all() and (sides[:, 1] <= 48 + 16).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 128).all() and (boxes[:, 3] <= 96).all()
    assert not batch["gt_boxes"][:, 3:].any() and (batch["gt_classes"] < 6).all()
    for key, value in synthetic_batch(2, 96, 128, num_classes=6, max_gt=5, seed=1).items():
        np.testing.assert_array_equal(value, batch[key])  # a seed gives the same batch


def test_pixels_are_normalised_for_the_format():
    # uniform 0-255 pixels: mean 127.5, standard error 0.6 per channel at 128 x 128
    msra = synthetic_batch(1, 128, 128, num_classes=1, max_gt=2, seed=0)["images"]
    np.testing.assert_allclose(msra.mean(axis=(0, 2, 3)), 127.5 - np.array(MSRA_MEAN_BGR), atol=3.0)
    torchvision = synthetic_batch(1, 64, 64, num_classes=1, max_gt=2, pixel_format="torchvision")["images"]
    assert abs(torchvision.mean()) < 0.3 and 1.0 < torchvision.std() < 1.5
    assert synthetic_batch(1, 64, 64, num_classes=1, max_gt=1, boxes_per_image=3)["gt_valid"].sum() == 1


def test_synthetic_images_and_their_records(tmp_path):
    records = write_synthetic_images(str(tmp_path), 3, 60, 80, boxes_per_image=2, seed=4)
    assert [r["image_id"] for r in records] == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.jpg", "00001.jpg", "00002.jpg"]
    for record in records:
        with Image.open(record["file_name"]) as image:
            assert image.size == (80, 60) and image.format == "JPEG"
        assert (record["height"], record["width"]) == (60, 80) and len(record["annotations"]) == 2
        for annotation in record["annotations"]:
            x0, y0, x1, y1 = annotation["bbox"]
            assert annotation["category_id"] == 0
            assert 0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 60 and x1 - x0 >= 24 and y1 - y0 >= 24


def test_only_the_calls_after_the_warmup_are_timed():
    calls = []

    def call():
        calls.append(len(calls))
        time.sleep(0.02 if len(calls) <= 2 else 0.001)

    times = time_calls(call, iters=3, warmup=2)
    assert len(calls) == 5 and len(times) == 3
    assert all(1.0 <= t < 15.0 for t in times), times


def test_peak_rss_is_in_mib():
    assert 50 < peak_rss_mib() < 1024 * 1024


def test_calibration_normalises_every_norm_layer(graph_mode):
    """After calibration each BN's input, normalised with its own statistics, has mean 0 and
    variance 1 per channel on the calibration batch (checked with a forward hook)."""
    from defrcn.modeling.backbone import build_resnet_c4

    ms.set_seed(0)
    trunk, res5 = build_resnet_c4(18, norm="frozen_bn", freeze_at=0, stride_in_1x1=False)
    trunk.set_train(True)
    images = np.random.default_rng(0).normal(0, 50, (2, 3, 64, 64)).astype(np.float32)
    assert calibrate_norm_statistics(trunk, res5, images) == 20
    assert ms.get_context("mode") == ms.GRAPH_MODE and trunk.training and not res5.training
    seen = []

    def check(cell, args):
        x = args[0].asnumpy()
        mean, var = cell.moving_mean.asnumpy(), cell.moving_variance.asnumpy()
        z = (x - mean.reshape(1, -1, 1, 1)) / np.sqrt(var.reshape(1, -1, 1, 1) + 1e-5)
        seen.append((np.abs(z.mean(axis=(0, 2, 3))).max(), np.abs(z.var(axis=(0, 2, 3)) - 1).max()))

    trunk.set_train(False)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # the hooks run in PyNative; graph_mode restores the mode
    handles = [layer.register_forward_pre_hook(check) for layer in _norm_layers(trunk) + _norm_layers(res5)]
    res5(trunk(ms.Tensor(images)))
    for handle in handles:
        handle.remove()
    assert len(seen) == 20
    assert max(m for m, _ in seen) < 1e-3 and max(v for _, v in seen) < 1e-2


def test_calibration_sees_norms_that_run_inside_their_convolution(graph_mode):
    """A frozen BN set to run inside its convolution is calibrated as one that runs alone (the
    hooks need it as its own Cell), and keeps its setting afterwards."""
    from defrcn.modeling.backbone import build_resnet_c4, set_frozen_bn_impl

    images = np.random.default_rng(0).normal(0, 50, (2, 3, 64, 64)).astype(np.float32)
    statistics = []
    for impl in ("kernel", "in_conv"):
        ms.set_seed(0)
        trunk, res5 = build_resnet_c4(18, norm="frozen_bn", freeze_at=0, stride_in_1x1=False)
        set_frozen_bn_impl(trunk, impl)
        set_frozen_bn_impl(res5, impl)
        assert calibrate_norm_statistics(trunk, res5, images) == 20
        layers = _norm_layers(trunk) + _norm_layers(res5)
        assert all(layer.in_conv == (impl == "in_conv") for layer in layers)
        statistics.append([layer.moving_variance.asnumpy() for layer in layers])
    assert not np.allclose(statistics[0][-1], 1.0)
    for kernel, in_conv in zip(*statistics):
        np.testing.assert_array_equal(in_conv, kernel)


@pytest.mark.parametrize("options, fragment", [
    (dict(mode="bogus"), "--mode: expected one of train, infer, data, got 'bogus'"),
    (dict(batch=0), "--batch: must be >= 1, got 0"),
    (dict(size=(16, 128)), "--size: H and W must be >= 32, got (16, 128)"),
    (dict(iters=0), "--iters must be >= 1 and --warmup >= 0, got 0 and 1"),
    (dict(mode="train", breakdown=True), "--breakdown: only with --mode infer"),
])
def test_bad_arguments_are_input_errors_before_any_model(options, fragment):
    with pytest.raises(InputError) as info:
        benchmark_recipe(RECIPE, **options)
    assert str(info.value) == fragment
