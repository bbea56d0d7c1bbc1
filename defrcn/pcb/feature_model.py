"""Box embeddings for PCB: `embed(image, boxes) -> (N, E)` of one image.

Two feature models (the original's `calibration_layer.py` uses the first):
- `ImageNetResNetFeatures` (cfg.test.pcb.model "resnet101", also "resnet18/34/50/152"):
  a torchvision-layout ImageNet ResNet (mindcv's, stride in the 3x3) on the ORIGINAL
  full-resolution image (RGB, /255, ImageNet mean/std, no resize, no padding); layer4
  (stride 32) -> ROIAlignV2 1x1 with adaptive sampling, scale 1/32 -> the net's own fc ->
  1000-d logits.
- `DetectorFeatures` (cfg.test.pcb.model "self"): the detector's own view of a box, for
  recipes without ImageNet weights: the test-time resized image in the detector's pixel
  format on its canvas -> trunk (res4) -> the ROI branch's affine -> the ROI heads' own
  pooler (7x7) -> res5 -> mean pool; (res5 channels)-d, no classifier.

Both have `embed_many(pairs)`: the embeddings of many (image, boxes) pairs in one pass
(`PCB.rescore_many` and the prototypes use it).

The 1x1 ROIAlign of the ImageNet model is computed in numpy (`roi_align_1x1`, exact adaptive
sampling: ceil(box size) x ceil(box size) points), on the feature map of an image of any size.

Images of any size: the ResNet runs in graph mode with a dynamic input shape (one compile
for all sizes; static per-shape graphs cost ~2 s and ~40 MB each, measured on R-101 at
480x640: 1.2 s static, 1.8 s dynamic, 2.3 s PyNative per image).
"""
import hashlib
import math
import os

import mindspore as ms
import mindspore.nn as nn
import numpy as np

from defrcn.data.transforms import (choose_canvas, normalize_image, normalize_to_canvas, resize_image,
                                    resize_scale, resized_shape)
from defrcn.errors import InputError
from defrcn.modeling.backbone import residual_stage
from defrcn.modeling.padding import valid_cells
from defrcn.utils.heap import ReleasesHeapAfterCompile

__all__ = ["RESNET_DEPTHS", "IMAGENET_PIXEL_FORMAT", "roi_align_1x1", "ImageNetResNetFeatures",
           "DetectorFeatures", "build_feature_model"]

RESNET_DEPTHS = {"resnet18": 18, "resnet34": 34, "resnet50": 50, "resnet101": 101, "resnet152": 152}
IMAGENET_PIXEL_FORMAT = "torchvision"  # RGB / 255, ImageNet mean/std, as calibration_layer.py
FEATURE_STRIDE = 32  # layer4 of a ResNet
MAKE_WEIGHTS_HINT = ("make it with: python tools/convert.py torchvision resnet101-5d3b4d8f.pth OUT.ckpt "
                     "(or set test.pcb.model=self)")


def _axis_weights(start, size, length):
    """Summed bilinear weights (R, length) of ceil(size) evenly spaced samples along one axis
    of detectron2's ROIAlign (one output bin), plus the sample counts (R,)."""
    start = np.asarray(start, np.float64)
    size = np.asarray(size, np.float64)
    count = np.maximum(np.ceil(size), 0).astype(np.int64)
    rois = len(start)
    weights = np.zeros((rois, length), np.float64)
    most = int(count.max()) if rois else 0
    if most == 0:
        return weights, count
    # every box's samples on one (R, most) grid; slots past a box's own count are left out
    slot = np.arange(most)
    n = np.maximum(count, 1)[:, None]
    pos = start[:, None] + (slot + 0.5) * size[:, None] / n
    used = (slot < count[:, None]) & (pos >= -1.0) & (pos <= length)  # beyond one cell outside: zero
    pos = np.clip(pos, 0.0, None)
    low = np.floor(pos).astype(np.int64)
    at_end = low >= length - 1
    low = np.where(at_end, length - 1, low)
    pos = np.where(at_end, low, pos)
    high = np.minimum(low + 1, length - 1)
    frac = pos - low
    row = np.broadcast_to(np.arange(rois)[:, None] * length, pos.shape)
    flat = weights.reshape(-1)
    # row-major: each box's samples are added in the same order as one box at a time would
    np.add.at(flat, (row + low)[used], (1.0 - frac)[used])
    np.add.at(flat, (row + high)[used], frac[used])
    return weights, count


def roi_align_1x1(features, boxes, spatial_scale):
    """detectron2 ROIAlignV2 (aligned=True), output 1x1, sampling_ratio 0 (adaptive), exact.

    features float (C, H, W); boxes (N, 4) XYXY in image pixels -> float32 (N, C): the mean
    of bilinear samples on a ceil(h) x ceil(w) grid over the box (h, w in feature cells).
    """
    feats = np.asarray(features, np.float32)
    c, h, w = feats.shape
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) * spatial_scale - 0.5
    if len(boxes) == 0:
        return np.zeros((0, c), np.float32)
    wy, ny = _axis_weights(boxes[:, 1], boxes[:, 3] - boxes[:, 1], h)
    wx, nx = _axis_weights(boxes[:, 0], boxes[:, 2] - boxes[:, 0], w)
    # bilinear sampling on a product grid is separable: weight(y, x) = wy(y) * wx(x)
    grid = (wy[:, :, None] * wx[:, None, :]).reshape(len(boxes), h * w)
    grid /= np.maximum(ny * nx, 1)[:, None]
    return (grid.astype(np.float32) @ feats.reshape(c, h * w).T).astype(np.float32)


class _ResNetC5(ReleasesHeapAfterCompile, nn.Cell):
    """Stem + layer1..layer4 of a mindcv ResNet: (1, 3, H, W) -> (1, C5, ~H/32, ~W/32)."""

    def __init__(self, resnet):
        super().__init__(auto_prefix=False)
        self.conv1, self.bn1, self.relu = resnet.conv1, resnet.bn1, resnet.relu
        # torchvision's stem pooling pads 1 pixel on every side (mindcv's "same" pads bottom/right)
        self.stem_pool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4

    def construct(self, x):
        x = self.stem_pool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = residual_stage(stage, x)
        return x


def _file_fingerprint(path):
    stat = os.stat(path)
    return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def _load_resnet_weights(resnet, path, model_name):
    """Every parameter of the mindcv ResNet from `path` (checked against its .sha256 when there
    is one); InputError naming the file for anything else."""
    from defrcn.checkpoint import io

    if not os.path.isfile(path):
        raise InputError(f"PCB weights not found; {MAKE_WEIGHTS_HINT}", path=f"test.pcb.weights {path}")
    missing, _, mismatched = io.load_into(resnet, io.load_checkpoint(path))
    if missing:
        raise InputError(f"not a mindcv {model_name} checkpoint: {len(missing)} parameters missing "
                         f"(first: {missing[0]})", path=path)
    if mismatched:
        first = mismatched[0]
        raise InputError(f"not a mindcv {model_name} checkpoint: {first.name} has shape "
                         f"{first.checkpoint_shape}, expected {first.model_shape}", path=path)


class ImageNetResNetFeatures:
    """ImageNet ResNet embeddings (see the module docstring): 1000-d logits per box.

    Args:
        model_name: "resnet18/34/50/101/152" (DeFRCN: resnet101).
        weights: mindcv-named .ckpt of that net (classifier included); None = random init
            (tests only). InputError when the file is missing or does not fit.
    """

    def __init__(self, model_name="resnet101", weights=None):
        from mindcv.models.resnet import ResNet
        from defrcn.modeling.backbone import RESNET_SPECS

        if model_name not in RESNET_DEPTHS:
            raise InputError(f"test.pcb.model: unknown '{model_name}' (one of "
                             f"{', '.join(RESNET_DEPTHS)}, self)")
        block, layers = RESNET_SPECS[RESNET_DEPTHS[model_name]]
        self.resnet = ResNet(block, list(layers))
        if weights is not None:
            _load_resnet_weights(self.resnet, weights, model_name)
        self.resnet.set_train(False)
        self.backbone = _ResNetC5(self.resnet)
        self.backbone.set_train(False)
        self.backbone.set_inputs(ms.Tensor(shape=[1, 3, None, None], dtype=ms.float32))
        self.fc_weight = self.resnet.classifier.weight.asnumpy().astype(np.float32)  # (1000, C5)
        self.fc_bias = self.resnet.classifier.bias.asnumpy().astype(np.float32)
        self.dim = self.fc_weight.shape[0]
        weights_id = _file_fingerprint(weights) if weights is not None else "random"
        self.fingerprint = f"{model_name}|{IMAGENET_PIXEL_FORMAT}|{weights_id}"
        self.tag = model_name

    def feature_map(self, image):
        """uint8 (H, W, 3) RGB original image -> float32 (C5, H', W') layer4 map (stride 32)."""
        chw = normalize_image(np.ascontiguousarray(image), IMAGENET_PIXEL_FORMAT)
        return self.backbone(ms.Tensor(chw[None])).asnumpy()[0]

    def embed(self, image, boxes):
        """uint8 (H, W, 3) RGB original image, (N, 4) XYXY original pixels -> float32 (N, 1000)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            return np.zeros((0, self.dim), np.float32)
        pooled = roi_align_1x1(self.feature_map(image), boxes, 1.0 / FEATURE_STRIDE)
        return pooled @ self.fc_weight.T + self.fc_bias

    def embed_many(self, pairs):
        """`embed` of each (image, boxes) pair of an iterable -> a list, in order (one forward
        pass per image: images of different sizes cannot share a batch)."""
        return [self.embed(image, boxes) for image, boxes in pairs]


class _DetectorPooled(ReleasesHeapAfterCompile, nn.Cell):
    """The detector's trunk, ROI branch and pooler (shared, not copied; no renaming).

    construct(image (1, 3, H, W) canvas, boxes (1, N, 4), extent (1, 2) content size): the
    pooled RoI maps (N, C4, P, P) the detector computes on that image, whatever the canvas."""

    def __init__(self, detector):
        super().__init__(auto_prefix=False)
        self.backbone = detector.backbone
        self.roi_branch = detector.roi_branch
        self.pooler = detector.roi_heads.pooler
        self.feature_stride = detector.roi_heads.feature_stride

    def construct(self, image, boxes, extent):
        features = self.roi_branch(self.backbone(image, extent))
        return self.pooler(features, boxes, valid_cells(extent, self.feature_stride))


class _DetectorRes5(ReleasesHeapAfterCompile, nn.Cell):
    """The detector's res5 and mean pool: (R, C4, P, P) pooled maps -> (R, C5)."""

    def __init__(self, detector):
        super().__init__(auto_prefix=False)
        self.res5 = detector.roi_heads.res5

    def construct(self, pooled):
        return self.res5(pooled).mean(axis=(2, 3))


# RoIs per call are padded up to a multiple of this (static shapes in graph mode: a few buckets).
ROI_BUCKET = 32


class DetectorFeatures:
    """The detector's own box features (cfg.test.pcb.model "self"): (N, res5 channels).

    Each image goes through the trunk and pooler alone; res5 (most of the cost) runs on
    `ROI_BUCKET` RoIs at a time, gathered across the images of one `embed_many` call, so the
    few boxes of many images share one res5 call instead of each padding its own.

    Args:
        detector: a `DeFRCN` Cell (its parameters are used as they are at call time).
        pixel_format, min_size, max_size, canvases: the recipe's test input settings
            (cfg.input.format, min_size_test, max_size_test, canvases).
    """

    def __init__(self, detector, *, pixel_format, min_size, max_size, canvases):
        self.detector = detector
        self.pooled = _DetectorPooled(detector)
        self.res5 = _DetectorRes5(detector)
        self.pixel_format = pixel_format
        self.min_size, self.max_size = int(min_size), int(max_size)
        self.canvases = [tuple(int(v) for v in c) for c in canvases]
        self.dim = int(detector.roi_heads.res5.out_channels)
        self.tag = "self"

    def _cells(self):
        return (self.pooled, self.res5)

    @property
    def fingerprint(self):
        """Changes with the detector's weights and the input settings."""
        digest = hashlib.sha256()
        for cell in self._cells():
            for param in cell.get_parameters():
                digest.update(param.name.encode())
                digest.update(np.ascontiguousarray(param.asnumpy()).tobytes())
        return (f"self|{self.pixel_format}|{self.min_size}|{self.max_size}|{self.canvases}|"
                f"{digest.hexdigest()}")

    def _pool(self, image, boxes):
        """Pooled maps (N, C4, P, P) of the N boxes (original pixels) of one original image."""
        n = len(boxes)
        height, width = image.shape[:2]
        canvas = self.canvases[choose_canvas(height, width, self.canvases)]
        scale = resize_scale(height, width, self.min_size, self.max_size, canvas)
        resized = resize_image(np.ascontiguousarray(image), resized_shape(height, width, scale))
        chw = normalize_to_canvas(resized, self.pixel_format, canvas)
        padded = int(math.ceil(n / ROI_BUCKET) * ROI_BUCKET)
        canvas_boxes = np.zeros((1, padded, 4), np.float32)
        canvas_boxes[0, :n] = boxes * np.float32(scale)
        canvas_boxes[0, n:] = (0.0, 0.0, 1.0, 1.0)
        extent = ms.Tensor(np.array([resized.shape[:2]], np.float32))
        return self.pooled(ms.Tensor(chw[None]), ms.Tensor(canvas_boxes), extent).asnumpy()[:n]

    def embed(self, image, boxes):
        """uint8 (H, W, 3) RGB original image, (N, 4) XYXY original pixels -> float32 (N, dim)."""
        return self.embed_many([(image, boxes)])[0]

    def embed_many(self, pairs):
        """`embed` of each (image, boxes) pair of an iterable (images read as it is consumed) ->
        a list of float32 (N_i, dim), in order."""
        # the parts are the detector's: evaluate them in inference mode, then restore each
        # cell's own flag (pre-order, so a child's flag is set after its parent's)
        flags = [(cell, cell.training) for head in self._cells()
                 for _, cell in list(head.cells_and_names())[1:]]  # [0]: the wrapper itself
        for head in self._cells():
            head.set_train(False)
        try:
            return self._embed_many(pairs)
        finally:
            for cell, training in flags:
                cell.set_train(training)

    def _embed_many(self, pairs):
        out = []
        owners, queue = [], []  # (output index, row) of each queued pooled RoI; pooled arrays

        def run_res5(final):
            nonlocal owners, queue
            pooled = np.concatenate(queue) if len(queue) > 1 else queue[0]
            end = len(owners) if final else len(owners) // ROI_BUCKET * ROI_BUCKET
            for start in range(0, end, ROI_BUCKET):
                chunk = pooled[start:start + ROI_BUCKET]
                n = len(chunk)
                if n < ROI_BUCKET:  # the last call: pad with copies of a real RoI (res5 is per RoI)
                    chunk = np.concatenate([chunk, np.repeat(chunk[:1], ROI_BUCKET - n, axis=0)])
                features = self.res5(ms.Tensor(chunk)).asnumpy()
                for (index, row), vector in zip(owners[start:start + n], features):
                    out[index][row] = vector
            owners, queue = owners[end:], [pooled[end:]]

        for image, boxes in pairs:
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            out.append(np.zeros((len(boxes), self.dim), np.float32))
            if len(boxes):
                queue.append(self._pool(image, boxes))
                owners += [(len(out) - 1, row) for row in range(len(boxes))]
                if len(owners) >= ROI_BUCKET:
                    run_res5(final=False)
        if owners:
            run_res5(final=True)
        return out


def build_feature_model(pcb, model=None, *, input=None):
    """The feature model the `test.pcb` settings ask for: "self" needs `model` (the detector)
    and the `input` settings (format, test sizes, canvases) its images are prepared with."""
    if pcb.model == "self":
        if model is None:
            raise InputError("test.pcb.model: 'self' needs the detector (no model was given)")
        i = input
        return DetectorFeatures(model, pixel_format=i.format, min_size=i.min_size_test,
                                max_size=i.max_size_test, canvases=i.canvases)
    if pcb.model not in RESNET_DEPTHS:
        raise InputError(f"test.pcb.model: unknown '{pcb.model}' (one of {', '.join(RESNET_DEPTHS)}, self)")
    if not pcb.weights:
        raise InputError(f"test.pcb.weights: empty; {MAKE_WEIGHTS_HINT}")
    return ImageNetResNetFeatures(pcb.model, pcb.weights)
