"""Draw detection boxes on an image with Pillow (for TensorBoard and tools/infer.py)."""
import numpy as np
from PIL import Image, ImageDraw


def draw_boxes(image_rgb_uint8, boxes, labels, scores=None, color=(255, 0, 0), width=2):
    """Return a copy of the image with boxes and captions drawn.

    Args:
        image_rgb_uint8: (H, W, 3) uint8 RGB.
        boxes: (N, 4) float, absolute pixels, (x1, y1, x2, y2).
        labels: N strings (class names).
        scores: optional N floats in [0, 1], shown as `name 0.87`.
        color: RGB tuple for all boxes.
    Returns:
        (H, W, 3) uint8 RGB array.
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels"
                         + ("" if scores is None else f" and {len(scores)} scores"))
    canvas = Image.fromarray(image.copy())
    pen = ImageDraw.Draw(canvas)
    color = tuple(int(c) for c in color)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        pen.rectangle([x1, y1, x2, y2], outline=color, width=width)
        caption = str(labels[index])
        if scores is not None:
            caption += f" {float(scores[index]):.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), caption)
        text_y = max(y1 - (bottom - top) - 2, 0)
        text_box = [x1, text_y, x1 + (right - left) + 2, text_y + (bottom - top) + 2]
        pen.rectangle(text_box, fill=color)
        pen.text((x1 + 1, text_y), caption, fill=(255, 255, 255))
    return np.asarray(canvas)
