"""PCB feature models: exact 1x1 ROIAlign, the ImageNet ResNet path and the detector's own path."""
import mindspore as ms
import numpy as np
import pytest
from mindcv.models.resnet import resnet18, resnet101

from defrcn.config.config import Config
from defrcn.errors import InputError
from defrcn.modeling.detector import build_detector
from defrcn.modeling.pooler import ROIPooler
from defrcn.modeling.padding import valid_cells
from defrcn.pcb import feature_model
from defrcn.pcb.feature_model import (DetectorFeatures, ImageNetResNetFeatures, _axis_weights,
                                      build_feature_model, roi_align_1x1)


def _image(height, width, seed=0):
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)


def _cfg(model, weights):
    return Config(test=dict(pcb=dict(model=model, weights=str(weights))),
                  input=dict(format="torchvision", min_size_test=128, max_size_test=128, canvases=[[128, 128]]))


@pytest.mark.parametrize("box", [
    [10.0, 20.0, 10 + 32 * 2.6, 20 + 32 * 2.2],  # 2.6 x 2.2 cells -> adaptive 3 x 3 points
    [-40.0, 100.0, -40 + 32 * 1.5, 100 + 32 * 1.9],  # partly left of the map
    [100.0, 150.0, 100 + 32 * 3.7, 150 + 32 * 3.1],  # partly beyond the bottom/right edge
])
def test_roi_align_1x1_equals_the_pooler_with_adaptive_sampling(box):
    # detectron2's adaptive rule (sampling_ratio 0) uses ceil(box size in cells) points per axis.
    features = np.random.RandomState(1).randn(1, 8, 6, 5).astype(np.float32)
    box = np.array([box], np.float32)
    ours = roi_align_1x1(features[0], box, 1.0 / 32)
    pooler = ROIPooler(output_size=1, spatial_scale=1.0 / 32, sampling_ratio=0, aligned=True)
    reference = pooler(ms.Tensor(features), ms.Tensor(box[None])).asnumpy()[:, :, 0, 0]
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def _axis_weights_one_box_at_a_time(start, size, length):
    """The straightforward form of `_axis_weights`: one box at a time, in Python."""
    count = np.maximum(np.ceil(size), 0).astype(np.int64)
    weights = np.zeros((len(start), length), np.float64)
    for r in range(len(start)):
        n = int(count[r])
        if n == 0:
            continue
        pos = start[r] + (np.arange(n) + 0.5) * size[r] / n
        inside = (pos >= -1.0) & (pos <= length)
        pos = np.clip(pos[inside], 0.0, None)
        low = np.floor(pos).astype(np.int64)
        at_end = low >= length - 1
        low = np.where(at_end, length - 1, low)
        pos = np.where(at_end, low, pos)
        high = np.minimum(low + 1, length - 1)
        frac = pos - low
        np.add.at(weights[r], low, 1.0 - frac)
        np.add.at(weights[r], high, frac)
    return weights, count


def test_axis_weights_of_all_boxes_at_once_equal_one_box_at_a_time():
    rng = np.random.RandomState(3)
    length = 15
    start = np.concatenate([rng.uniform(-4, length + 2, 200), [-3.0, 14.2, 2.0, 5.0, 0.0]])
    size = np.concatenate([rng.uniform(0, 9, 200), [1.5, 3.0, 0.0, -1.0, 20.0]])  # empty, negative, huge
    weights, count = _axis_weights(start, size, length)
    expected, expected_count = _axis_weights_one_box_at_a_time(start, size, length)
    np.testing.assert_array_equal(count, expected_count)
    np.testing.assert_array_equal(weights, expected)  # the same additions in the same order
    empty, none = _axis_weights(np.zeros(0), np.zeros(0), length)
    assert empty.shape == (0, length) and none.shape == (0,)


def test_roi_align_1x1_of_the_whole_image_is_the_mean_of_the_map():
    features = np.random.RandomState(2).randn(4, 3, 5).astype(np.float32)  # a 160 x 96 image
    pooled = roi_align_1x1(features, [[0.0, 0.0, 160.0, 96.0]], 1.0 / 32)
    np.testing.assert_allclose(pooled[0], features.mean(axis=(1, 2)), atol=1e-6)


@pytest.mark.slow
def test_resnet101_embeddings_are_1000_d_and_a_whole_image_box_is_avgpool_plus_fc(tmp_path):
    path = tmp_path / "r101.ckpt"
    net = resnet101()
    ms.save_checkpoint(net, str(path))
    fm = build_feature_model(_cfg("resnet101", path).test.pcb)
    assert isinstance(fm, ImageNetResNetFeatures) and fm.dim == 1000
    np.testing.assert_array_equal(fm.fc_weight, net.classifier.weight.asnumpy())  # the file was loaded
    image = _image(128, 96)
    boxes = np.array([[0, 0, 96, 128], [10, 20, 60, 90], [50, 5, 95, 40]], np.float32)
    emb = fm.embed(image, boxes)
    assert emb.shape == (3, 1000) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # Image sides are multiples of 32, so the adaptive grid of the whole-image box hits every
    # cell centre once: ROIAlign 1x1 = global average pool, and the embedding = the net's
    # own classifier on it.
    feature_map = fm.feature_map(image)
    assert feature_map.shape == (2048, 4, 3)
    logits = net.classifier(ms.Tensor(feature_map.mean(axis=(1, 2))[None])).asnumpy()[0]
    np.testing.assert_allclose(emb[0], logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max())
    assert np.abs(emb[1] - emb[2]).max() > 1e-3 * np.abs(emb).max()  # boxes see different features
    scale = np.abs(emb).max()  # random weights in eval mode: logits of order 1e4
    np.testing.assert_allclose(fm.embed(image, boxes[1:2])[0], emb[1], rtol=1e-5, atol=1e-6 * scale)


def test_resnet_runs_on_images_of_any_size(tmp_path):
    fm = ImageNetResNetFeatures("resnet18")
    for height, width in [(100, 77), (64, 130), (100, 77)]:
        emb = fm.embed(_image(height, width), [[5, 5, width - 5, height - 5]])
        assert emb.shape == (1, 1000) and np.isfinite(emb).all()
        assert fm.feature_map(_image(height, width)).shape[1:] == (-(-height // 32), -(-width // 32))
    assert fm.embed(_image(64, 64), np.zeros((0, 4))).shape == (0, 1000)


def test_the_resnet_gives_back_the_compilers_freed_heap_once_for_all_sizes(graph_mode, monkeypatch):
    from defrcn.utils import heap

    releases = []
    monkeypatch.setattr(heap, "release_freed_heap", lambda: releases.append(1))
    fm = ImageNetResNetFeatures("resnet18")
    for height, width in [(100, 77), (64, 130)]:  # one graph with a dynamic shape: one compile
        fm.embed(_image(height, width), [[5, 5, width - 5, height - 5]])
    assert releases == [1]


def test_weights_errors_are_one_line_input_errors(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(InputError) as err:
        build_feature_model(_cfg("resnet101", missing).test.pcb)
    message = str(err.value)
    assert str(missing) in message and "tools/convert.py" in message and "\n" not in message
    with pytest.raises(InputError, match="test.pcb.weights: empty"):
        build_feature_model(_cfg("resnet101", "").test.pcb)
    with pytest.raises(InputError, match="test.pcb.model: unknown 'vgg16'"):
        build_feature_model(_cfg("vgg16", "x.ckpt").test.pcb)
    with pytest.raises(InputError, match="needs the detector"):
        build_feature_model(_cfg("self", "").test.pcb)
    small = tmp_path / "r18.ckpt"
    ms.save_checkpoint(resnet18(), str(small))
    with pytest.raises(InputError, match="not a mindcv resnet34 checkpoint") as err:
        build_feature_model(_cfg("resnet34", small).test.pcb)
    assert str(small) in str(err.value)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(InputError, match="not a readable MindSpore checkpoint"):
        build_feature_model(_cfg("resnet18", garbage).test.pcb)


def test_self_features_use_the_detectors_res5_and_leave_it_as_it_was():
    detector = build_detector(num_classes=3, depth=18, norm="bn", freeze_at=0, verbose=False,
                              rpn=dict(pre_nms_topk_test=100, post_nms_topk_test=20),
                              roi=dict(detections_per_image=10))
    detector.set_train(True)
    names = [p.name for p in detector.get_parameters()]
    fm = build_feature_model(_cfg("self", "").test.pcb, detector, input=_cfg("self", "").input)
    assert isinstance(fm, DetectorFeatures) and fm.dim == 512
    image = _image(96, 128)
    boxes = np.array([[0, 0, 128, 96], [10, 20, 60, 90], [70, 10, 120, 50]], np.float32)
    emb = fm.embed(image, boxes)
    assert emb.shape == (3, 512) and np.isfinite(emb).all()
    np.testing.assert_allclose(fm.embed(image, boxes[2:]), emb[2:], rtol=1e-5, atol=1e-5)
    assert all(cell.training for _, cell in detector.cells_and_names())  # training flags restored
    assert [p.name for p in detector.get_parameters()] == names  # nothing renamed
    before = fm.fingerprint
    detector.roi_heads.res5.layer4[0].conv1.weight.set_data(
        ms.Tensor(np.zeros(detector.roi_heads.res5.layer4[0].conv1.weight.shape, np.float32)))
    assert fm.fingerprint != before  # new weights -> new prototypes


class _OneGraphBoxHead(ms.nn.Cell):
    """The "self" features of one image in one graph, as DetectorFeatures first computed them:
    trunk -> ROI branch -> pooler -> res5 -> mean."""

    def __init__(self, detector):
        super().__init__(auto_prefix=False)
        self.backbone, self.roi_branch = detector.backbone, detector.roi_branch
        self.pooler, self.res5 = detector.roi_heads.pooler, detector.roi_heads.res5
        self.feature_stride = detector.roi_heads.feature_stride

    def construct(self, image, boxes, extent):
        features = self.roi_branch(self.backbone(image, extent))
        return self.res5(self.pooler(features, boxes, valid_cells(extent, self.feature_stride))).mean(axis=(2, 3))


def test_self_features_of_many_images_equal_each_image_alone_in_one_graph(monkeypatch):
    # res5 runs on RoIs packed across images: each box must still get its own image's features
    monkeypatch.setattr(feature_model, "ROI_BUCKET", 4)
    detector = build_detector(num_classes=3, depth=18, norm="bn", freeze_at=0, verbose=False)
    cfg = _cfg("self", "")
    fm = build_feature_model(cfg.test.pcb, detector, input=cfg.input)
    reference = _OneGraphBoxHead(detector)
    reference.set_train(False)
    rng = np.random.RandomState(4)
    pairs = []
    for index, (height, width, count) in enumerate([(96, 128, 3), (128, 100, 0), (128, 128, 6), (64, 128, 1),
                                                     (120, 90, 2)]):
        xy = rng.rand(count, 2) * [width * 0.6, height * 0.6]
        boxes = np.concatenate([xy, xy + 10 + rng.rand(count, 2) * 30], axis=1).astype(np.float32)
        pairs.append((_image(height, width, seed=index), boxes))
    many = fm.embed_many(iter(pairs))
    assert [len(e) for e in many] == [3, 0, 6, 1, 2]
    for (image, boxes), embedded in zip(pairs, many):
        if not len(boxes):
            continue
        scale = feature_model.resize_scale(*image.shape[:2], 128, 128, (128, 128))
        resized = feature_model.resize_image(image, feature_model.resized_shape(*image.shape[:2], scale))
        chw = feature_model.normalize_to_canvas(resized, "torchvision", (128, 128))
        padded = np.tile(np.float32([[0, 0, 1, 1]]), (8, 1))
        padded[:len(boxes)] = boxes * np.float32(scale)
        expected = reference(ms.Tensor(chw[None]), ms.Tensor(padded[None]),
                             ms.Tensor(np.float32([resized.shape[:2]]))).asnumpy()[:len(boxes)]
        np.testing.assert_allclose(embedded, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
        np.testing.assert_allclose(fm.embed(image, boxes), embedded, rtol=1e-5, atol=1e-6)
