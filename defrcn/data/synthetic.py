"""A synthetic few-shot detection data set: textured shapes on cluttered backgrounds.

Each class is one (shape, colour pair, texture) combination, so a small CNN can tell the
classes apart from a few examples. The set is written in the custom layout (`custom.py`):

    OUT/annotations/{train,test}.json   COCO format, bbox XYWH in pixels, non-contiguous
                                        category ids, info.novel_classes / info.base_classes
    OUT/images/{train,test}/NNNNNN.jpg

Train images hold either base objects only or novel objects only (about 15% of the
images), so base training can drop the novel classes without leaving unlabelled novel
objects in the background (at least one novel image per novel class); the few-shot split
tool samples K novel instances from the novel images. Test images mix all classes.
Everything is a function of the seed: the same seed gives byte-identical json and images.
"""
import json
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from defrcn.errors import InputError

__all__ = [
    "ShapeClass",
    "SYNTHETIC_CLASSES",
    "BASE_CLASS_NAMES",
    "NOVEL_CLASS_NAMES",
    "render_image",
    "make_split",
    "write_synthetic_dataset",
]

DEFAULT_SIZE = 256
NOVEL_IMAGE_FRACTION = 0.15  # share of train images that hold only novel objects
MIN_OBJECT_FRACTION = 24 / 256  # longest object side / image side: 24 px at 256 (stride 16)
MAX_OBJECT_FRACTION = 72 / 256
MAX_OBJECTS = 4
TEXTURE_PERIOD = 6  # pixels per stripe / checker cell / dot cell
JPEG_QUALITY = 95  # jpg: 10x smaller and 20x faster to encode than png on noisy images
SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered down (smooth edges)


@dataclass(frozen=True)
class ShapeClass:
    name: str
    category_id: int  # the json's own id (deliberately non-contiguous)
    shape: str
    colour: tuple  # main RGB colour
    colour2: tuple  # second texture colour
    pattern: str  # solid | stripes | diagonal | checker | dots
    novel: bool


def _cls(i, name, shape, colour, colour2, pattern, novel=False):
    return ShapeClass(name, 3 + 4 * i, shape, colour, colour2, pattern, novel)


RED, BLUE, GREEN, YELLOW = (220, 30, 30), (30, 60, 220), (30, 170, 50), (240, 220, 30)
MAGENTA, CYAN, ORANGE, PURPLE = (210, 40, 200), (40, 210, 220), (245, 140, 20), (120, 40, 170)
WHITE, BLACK = (245, 245, 245), (15, 15, 15)

SYNTHETIC_CLASSES = (
    _cls(0, "red_circle", "circle", RED, RED, "solid"),
    _cls(1, "blue_square", "square", BLUE, WHITE, "stripes"),
    _cls(2, "green_triangle", "triangle", GREEN, BLACK, "checker"),
    _cls(3, "yellow_star", "star", YELLOW, YELLOW, "solid"),
    _cls(4, "magenta_cross", "cross", MAGENTA, WHITE, "dots"),
    _cls(5, "cyan_ring", "ring", CYAN, BLACK, "diagonal"),
    _cls(6, "orange_diamond", "diamond", ORANGE, BLACK, "stripes", novel=True),
    _cls(7, "purple_hexagon", "hexagon", PURPLE, WHITE, "checker", novel=True),
    _cls(8, "white_arrow", "arrow", WHITE, RED, "diagonal", novel=True),
)
BASE_CLASS_NAMES = [c.name for c in SYNTHETIC_CLASSES if not c.novel]
NOVEL_CLASS_NAMES = [c.name for c in SYNTHETIC_CLASSES if c.novel]

_SPLIT_CODES = {"train": 0, "test": 1}


def _regular_polygon(n, radius=1.0, phase=-np.pi / 2):
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points=5, inner=0.45):
    outer = _regular_polygon(points)
    inner_pts = _regular_polygon(points, inner, phase=-np.pi / 2 + np.pi / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


# Outlines in a unit frame [-1, 1]^2 (x right, y down).
_POLYGONS = {
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float),
    "triangle": np.array([[0, -1], [1, 1], [-1, 1]], float),
    "diamond": np.array([[0, -1], [1, 0], [0, 1], [-1, 0]], float),
    "hexagon": _regular_polygon(6, phase=0.0),
    "star": _star(),
    "cross": np.array(
        [[-0.33, -1], [0.33, -1], [0.33, -0.33], [1, -0.33], [1, 0.33], [0.33, 0.33],
         [0.33, 1], [-0.33, 1], [-0.33, 0.33], [-1, 0.33], [-1, -0.33], [-0.33, -0.33]],
        float,
    ),
    "arrow": np.array(
        [[-1, -0.3], [0.15, -0.3], [0.15, -0.8], [1, 0], [0.15, 0.8], [0.15, 0.3], [-1, 0.3]],
        float,
    ),
}


def _shape_mask(shape, height, width, angle):
    """Coverage mask float32 (height, width) in [0, 1] of `shape` filling the box."""
    hs, ws = height * SUPERSAMPLE, width * SUPERSAMPLE
    canvas = Image.new("L", (ws, hs), 0)
    draw = ImageDraw.Draw(canvas)
    if shape in ("circle", "ring"):
        draw.ellipse([0, 0, ws - 1, hs - 1], fill=255)
        if shape == "ring":
            mx, my = 0.27 * ws, 0.27 * hs  # hole radius 0.46 of the outer one
            draw.ellipse([mx, my, ws - 1 - mx, hs - 1 - my], fill=0)
    else:
        pts = _POLYGONS[shape]
        c, s = np.cos(angle), np.sin(angle)
        pts = pts @ np.array([[c, s], [-s, c]])
        pts = pts / np.abs(pts).max(axis=0)  # rotated outline still fills the box
        xy = (pts + 1) / 2 * [ws - 1, hs - 1]
        draw.polygon([tuple(p) for p in xy], fill=255)
    canvas = canvas.resize((width, height), Image.BOX)
    return np.asarray(canvas, np.float32) / 255.0


def _texture(cls, height, width, rng):
    """RGB float32 (height, width, 3) fill for one object of class `cls`."""
    yy, xx = np.mgrid[0:height, 0:width]
    off = rng.integers(0, TEXTURE_PERIOD, size=2)
    yy, xx, p = yy + off[0], xx + off[1], TEXTURE_PERIOD
    if cls.pattern == "solid":
        second = np.zeros((height, width), bool)
    elif cls.pattern == "stripes":
        second = (yy // (p // 2)) % 2 == 1
    elif cls.pattern == "diagonal":
        second = ((xx + yy) // (p // 2)) % 2 == 1
    elif cls.pattern == "checker":
        second = ((yy // p) + (xx // p)) % 2 == 1
    elif cls.pattern == "dots":
        second = ((yy % p - p / 2) ** 2 + (xx % p - p / 2) ** 2) < (p / 3) ** 2
    else:  # pragma: no cover - classes are a fixed table
        raise ValueError(cls.pattern)
    gain = rng.uniform(0.85, 1.1)
    jitter = rng.normal(0, 10, size=(2, 3))
    c1 = np.clip(np.array(cls.colour) * gain + jitter[0], 0, 255)
    c2 = np.clip(np.array(cls.colour2) * gain + jitter[1], 0, 255)
    return np.where(second[..., None], c2, c1).astype(np.float32)


def _background(rng, size):
    """Cluttered RGB float32 (size, size, 3): tinted smooth noise, faint lines and blobs."""
    base = rng.uniform(70, 180) + rng.normal(0, 12, size=3)
    low = rng.normal(0, 25, size=(6, 6, 3))
    low = np.stack(
        [np.asarray(Image.fromarray(low[..., k]).resize((size, size), Image.BILINEAR))
         for k in range(3)], axis=-1,
    )
    image = Image.fromarray(np.clip(base + low, 0, 255).astype(np.uint8))
    layer = Image.new("RGB", (size, size), (0, 0, 0))
    alpha = Image.new("L", (size, size), 0)
    draw_c, draw_a = ImageDraw.Draw(layer), ImageDraw.Draw(alpha)
    for _ in range(rng.integers(2, 6)):  # desaturated blobs
        cx, cy = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.03, 0.15, 2) * size
        grey = int(rng.uniform(30, 225))
        colour = tuple(int(np.clip(grey + v, 0, 255)) for v in rng.normal(0, 15, 3))
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        draw_c.ellipse(box, fill=colour)
        draw_a.ellipse(box, fill=int(rng.uniform(60, 110)))
    for _ in range(rng.integers(2, 7)):  # thin lines
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        width = int(rng.integers(1, 3))
        draw_c.line([x0, y0, x1, y1], fill=colour, width=width)
        draw_a.line([x0, y0, x1, y1], fill=int(rng.uniform(90, 160)), width=width)
    alpha = alpha.filter(ImageFilter.BoxBlur(1))
    image = Image.composite(layer, image, alpha)
    return np.asarray(image, np.float32)


def _place(rng, size, existing, height, width, tries=30):
    """Top-left (x, y) for a height x width box that does not touch `existing`, or None."""
    for _ in range(tries):
        x = int(rng.integers(0, size - width + 1))
        y = int(rng.integers(0, size - height + 1))
        if all(x + width + 2 <= ex or ex + ew + 2 <= x or y + height + 2 <= ey
               or ey + eh + 2 <= y for ex, ey, ew, eh in existing):
            return x, y
    return None


def render_image(rng, size, class_indices):
    """Draw one image with one object per entry of `class_indices` (if it fits).

    Args:
        rng: np.random.Generator, the only source of randomness.
        size: image side in pixels (square images).
        class_indices: indices into SYNTHETIC_CLASSES.
    Returns:
        (image uint8 (size, size, 3) RGB, objects: list of (class index, [x, y, w, h] ints)),
        boxes tight around the drawn pixels (x + w exclusive).
    """
    image = _background(rng, size)
    placed, objects = [], []
    for ci in class_indices:
        cls = SYNTHETIC_CLASSES[ci]
        side = rng.uniform(MIN_OBJECT_FRACTION, MAX_OBJECT_FRACTION) * size
        aspect = 1.0 if cls.shape in ("circle", "ring") else rng.uniform(0.8, 1.25)
        h = max(8, int(round(side * min(1.0, 1 / aspect))))
        w = max(8, int(round(side * min(1.0, aspect))))
        spot = _place(rng, size, placed, h, w)
        angle = rng.uniform(-0.3, 0.3)
        if spot is None:
            continue
        x, y = spot
        mask = _shape_mask(cls.shape, h, w, angle)
        fill = _texture(cls, h, w, rng)
        region = image[y:y + h, x:x + w]
        image[y:y + h, x:x + w] = mask[..., None] * fill + (1 - mask[..., None]) * region
        rows = np.flatnonzero(mask.max(axis=1) >= 0.5)
        cols = np.flatnonzero(mask.max(axis=0) >= 0.5)
        box = [x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1),
               int(rows[-1] - rows[0] + 1)]
        placed.append((x, y, w, h))
        objects.append((ci, box))
    image += 5 * rng.standard_normal(size=image.shape, dtype=np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), objects


def _class_plan(split, index, novel_image, rng):
    """Class indices for one image (train: base-only or novel-only; test: all classes)."""
    base = [i for i, c in enumerate(SYNTHETIC_CLASSES) if not c.novel]
    novel = [i for i, c in enumerate(SYNTHETIC_CLASSES) if c.novel]
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    if split == "test":
        return list(rng.integers(0, len(SYNTHETIC_CLASSES), size=count))
    pool = novel if novel_image else base
    first = pool[index % len(pool)] if novel_image else int(rng.choice(pool))
    return [first] + [int(rng.choice(pool)) for _ in range(count - 1)]


def make_split(out_dir, split, n_images, *, seed, size=DEFAULT_SIZE):
    """Render the images of one split into OUT/images/<split>/; return the COCO dict."""
    image_dir = os.path.join(out_dir, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    code = _SPLIT_CODES[split]
    n_novel = 0
    if split == "train":  # enough novel-only images to show every novel class once
        wanted = max(len(NOVEL_CLASS_NAMES), int(round(NOVEL_IMAGE_FRACTION * n_images)))
        n_novel = min(wanted, n_images // 2)
    layout_rng = np.random.default_rng([seed, code, 1 << 30])
    novel_images = set(layout_rng.permutation(n_images)[:n_novel].tolist())
    images, annotations = [], []
    novel_rank = 0
    for index in range(n_images):
        rng = np.random.default_rng([seed, code, index])
        is_novel = index in novel_images
        plan = _class_plan(split, novel_rank if is_novel else index, is_novel, rng)
        novel_rank += int(is_novel)
        pixels, objects = render_image(rng, size, plan)
        file_name = f"{index:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(image_dir, file_name), quality=JPEG_QUALITY)
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": size})
        for ci, box in objects:
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id,
                "category_id": SYNTHETIC_CLASSES[ci].category_id, "bbox": box,
                "area": box[2] * box[3], "iscrowd": 0,
            })
    return {
        "info": {
            "description": f"defrcn-ms synthetic shapes, {split} split",
            "seed": seed,
            "base_classes": BASE_CLASS_NAMES,
            "novel_classes": NOVEL_CLASS_NAMES,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.category_id, "name": c.name, "supercategory": "shape"}
                       for c in SYNTHETIC_CLASSES],
    }


def write_synthetic_dataset(out_dir, *, seed=0, train_images=400, test_images=100,
                            size=DEFAULT_SIZE):
    """Write the whole data set under `out_dir`; return the two annotation json paths."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise InputError("exists and is not a directory", path=out_dir)
    if size < 64:
        raise InputError(f"--size must be at least 64, got {size}")
    if train_images < 1 or test_images < 1:
        raise InputError("--train-images and --test-images must be at least 1")
    paths = []
    try:
        os.makedirs(os.path.join(out_dir, "annotations"), exist_ok=True)
        for split, count in (("train", train_images), ("test", test_images)):
            coco = make_split(out_dir, split, count, seed=seed, size=size)
            path = os.path.join(out_dir, "annotations", f"{split}.json")
            with open(path, "w") as f:
                json.dump(coco, f)
            paths.append(path)
    except OSError as e:  # not a directory, no permission, read-only file system ...
        raise InputError(f"cannot write the data set: {e.strerror}",
                         path=e.filename or out_dir) from e
    return paths
