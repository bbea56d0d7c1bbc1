"""Image and box transforms for static-shape detection batches (pure numpy + Pillow).

Conventions: images are uint8 (H, W, 3) RGB until `normalize_image`, which returns float32
(3, H, W) in the pixel format's channel order. Boxes are float32 (N, 4) XYXY in pixels of
the image they belong to. A resize keeps the aspect ratio (one `scale` for both axes), so
canvas coordinates map back to the original image by dividing by `scale`. Images are never
stretched: they are resized (shortest edge, longest edge capped), scaled down further if
needed to fit the canvas, and padded top-left with zeros after normalisation.
"""
import logging

import numpy as np
from PIL import Image

__all__ = [
    "PIXEL_FORMATS",
    "choose_canvas",
    "resize_scale",
    "resized_shape",
    "resize_image",
    "sample_augmentation",
    "hflip_image",
    "hflip_boxes",
    "normalize_image",
    "normalize_to_canvas",
    "pad_image",
    "clip_boxes",
    "pad_gt",
    "boxes_to_original",
    "prepare_example",
]

logger = logging.getLogger(__name__)

# channel order, value scale, per-channel mean and std (in that channel order)
PIXEL_FORMATS = {
    # detectron2 / Caffe2 MSRA weights: BGR, 0-255, std 1 (defrcn_facts 1.1, d2 defaults)
    "msra": ("BGR", 1.0, (103.530, 116.280, 123.675), (1.0, 1.0, 1.0)),
    # torchvision / ImageNet weights: RGB, 0-1 (torchvision.transforms.Normalize docs)
    "torchvision": ("RGB", 1 / 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

_warned_max_gt = False


def choose_canvas(height, width, canvases):
    """Index of the canvas (H, W) in `canvases` for an image of height x width.

    Prefers a canvas of the same orientation (landscape: width >= height; a square canvas
    fits both); among those, or if none matches, the one that shrinks the image least.
    """
    landscape = width >= height

    def fit(c):
        return min(c[0] / height, c[1] / width)

    def key(i):
        ch, cw = canvases[i]
        matches = ch == cw or (cw >= ch) == landscape
        return (not matches, -fit(canvases[i]), i)

    return min(range(len(canvases)), key=key)


def resize_scale(height, width, short_size, max_size, canvas):
    """Scale so the short edge is `short_size`, the long edge <= `max_size`, and the
    resized image fits inside `canvas` (H, W)."""
    scale = short_size / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return min(scale, canvas[0] / height, canvas[1] / width)


def resized_shape(height, width, scale):
    """(h, w) of an image resized by `scale`, rounded; at least 1 pixel."""
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_image(image, shape):
    """Bilinear resize of uint8 (H, W, 3) to `shape` (h, w)."""
    if image.shape[:2] == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def sample_augmentation(rng, min_sizes, flip_prob):
    """Draw (short_size, flip) from a np.random.Generator: size uniform from the list."""
    short = int(min_sizes[int(rng.integers(len(min_sizes)))])
    return short, bool(rng.random() < flip_prob)


def hflip_image(image):
    """Mirror (H, W, C) left-right."""
    return image[:, ::-1]


def hflip_boxes(boxes, width):
    """Mirror XYXY boxes in an image `width` wide: x0' = w - x1, x1' = w - x0."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def normalize_image(image, pixel_format):
    """uint8 (H, W, 3) RGB -> float32 (3, H, W) normalised for `pixel_format`."""
    return normalize_to_canvas(image, pixel_format, image.shape[:2])


def normalize_to_canvas(image, pixel_format, canvas):
    """uint8 (h, w, 3) RGB -> float32 (3, H, W): normalised content top-left, zeros after.

    Same result as pad_image(normalize_image(image)), in one pass per channel.
    """
    order, value_scale, mean, std = PIXEL_FORMATS[pixel_format]
    h, w = image.shape[:2]
    if h > canvas[0] or w > canvas[1]:
        raise ValueError(f"image {h}x{w} does not fit canvas {canvas[0]}x{canvas[1]}")
    out = np.zeros((3, canvas[0], canvas[1]), np.float32)
    sources = (2, 1, 0) if order == "BGR" else (0, 1, 2)
    for c, src in enumerate(sources):  # (x * value_scale - mean) / std = x * a + b
        a = np.float32(value_scale / std[c])
        b = np.float32(-mean[c] / std[c])
        content = out[c, :h, :w]
        np.multiply(image[:, :, src], a, out=content)
        content += b
    return out


def pad_image(chw, canvas):
    """Place float32 (3, h, w) at the top-left of a zero canvas (3, H, W)."""
    c, h, w = chw.shape
    if h > canvas[0] or w > canvas[1]:
        raise ValueError(f"image {h}x{w} does not fit canvas {canvas[0]}x{canvas[1]}")
    out = np.zeros((c, canvas[0], canvas[1]), np.float32)
    out[:, :h, :w] = chw
    return out


def clip_boxes(boxes, height, width):
    """Clip XYXY boxes to [0, width] x [0, height]; return (clipped, keep mask of non-empty)."""
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes, keep


def pad_gt(boxes, classes, max_gt):
    """Pad to a fixed count: float32 (G, 4) boxes, int32 (G,) classes, float32 (G,) valid.

    Keeps the first `max_gt` boxes when there are more (warns once per process).
    """
    global _warned_max_gt
    n = len(boxes)
    if n > max_gt:
        if not _warned_max_gt:
            logger.warning("an image has %d ground-truth boxes; keeping the first %d "
                           "(max_gt; warned once)", n, max_gt)
            _warned_max_gt = True
        n = max_gt
    out_boxes = np.zeros((max_gt, 4), np.float32)
    out_classes = np.zeros((max_gt,), np.int32)
    valid = np.zeros((max_gt,), np.float32)
    out_boxes[:n] = np.asarray(boxes, np.float32).reshape(-1, 4)[:n]
    out_classes[:n] = np.asarray(classes, np.int32)[:n]
    valid[:n] = 1.0
    return out_boxes, out_classes, valid


def boxes_to_original(boxes, scale, height=None, width=None):
    """Map XYXY boxes from canvas pixels back to the original image (divide by `scale`);
    clip to the original height x width when given."""
    out = np.asarray(boxes, np.float32) / np.float32(scale)
    if height is not None and width is not None:
        out[..., [0, 2]] = out[..., [0, 2]].clip(0, width)
        out[..., [1, 3]] = out[..., [1, 3]].clip(0, height)
    return out


def prepare_example(image, boxes, classes, *, canvas, short_size, max_size, flip,
                    pixel_format, max_gt):
    """Resize, flip, normalise and pad one image with its ground truth.

    Args:
        image: uint8 (H, W, 3) RGB; boxes: (N, 4) XYXY original pixels; classes: (N,) ints.
        canvas: (Hc, Wc) the static output size.
    Returns:
        dict with image float32 (3, Hc, Wc), image_size float32 (2,) = (h, w) of the
        content, gt_boxes (G, 4), gt_classes (G,), gt_valid (G,), scale float32 scalar.
    """
    height, width = image.shape[:2]
    scale = resize_scale(height, width, short_size, max_size, canvas)
    h, w = resized_shape(height, width, scale)
    image = resize_image(image, (h, w))
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(scale)
    if flip:
        image = hflip_image(image)
        boxes = hflip_boxes(boxes, w)
    boxes, keep = clip_boxes(boxes, h, w)
    gt_boxes, gt_classes, gt_valid = pad_gt(boxes[keep], np.asarray(classes)[keep], max_gt)
    return {
        "image": normalize_to_canvas(image, pixel_format, canvas),
        "image_size": np.array([h, w], np.float32),
        "gt_boxes": gt_boxes,
        "gt_classes": gt_classes,
        "gt_valid": gt_valid,
        "scale": np.float32(scale),
    }
