"""Single-image inference: load a recipe's detector with a checkpoint, run it on any image.

    cfg, model, class_names = load_model_for_inference("recipes/toy_base.py", "model_final.ckpt")
    boxes, scores, classes = predict_image(model, cfg.input, image_rgb_uint8)

Preprocessing is the test loader's (`defrcn.data.transforms.prepare_example` with no
flip): pick the canvas matching the image's orientation, resize the short edge to
`input.min_size_test` (long edge capped at `input.max_size_test`, shrunk further to fit
the canvas), normalise for `input.format`, pad bottom/right. Boxes come back in the
original image's pixels (divided by the resize scale, clipped to the image).
"""
import logging

import numpy as np
from PIL import Image

from defrcn.data.classes import coco_category_id
from defrcn.data.custom import annotation_file, read_classes
from defrcn.data.transforms import boxes_to_original, choose_canvas, prepare_example
from defrcn.config.recipe import load_recipe
from defrcn.data.spec import resolve_data_spec
from defrcn.errors import InputError

__all__ = [
    "load_model_for_inference",
    "category_ids_of",
    "build_recipe_pcb",
    "preprocess_image",
    "predict_image",
    "read_image_rgb",
    "read_image_header",
]

logger = logging.getLogger(__name__)

def category_ids_of(spec, class_names):
    """The data set's own category id of each name (COCO ids, the custom json's ids), or
    None per name when the data set has none (VOC) or its json cannot be read."""
    benchmark = spec.benchmark
    if benchmark == "coco":
        return [coco_category_id(name) for name in class_names]
    if benchmark in ("custom", "toy"):
        try:
            names, ids = read_classes(annotation_file(spec.root, "train"))
        except InputError:
            return [None] * len(class_names)
        by_name = dict(zip(names, ids))
        return [by_name.get(name) for name in class_names]
    return [None] * len(class_names)


def load_model_for_inference(recipe_path, checkpoint, overrides=(), device="CPU", fuse_kernels=True):
    """Build the recipe's detector, load `checkpoint` into it and switch to eval mode (graph
    mode, MindSpore's memory level O1, process-wide: `plan_graph_memory`; with
    `fuse_kernels`, the folded convolutions' elementwise tails fused on CPU as the recipe's
    `test.kernel_fusion` says: `fuse_inference_kernels`).

    Args:
        recipe_path: a recipe `.py` or a run's `config.json`.
        checkpoint: a `.ckpt` (training state entries are ignored).
        overrides: `key=value` strings applied to the recipe's cfg.
        device: "CPU", "GPU" or "Ascend" (sets MindSpore's device target).
    Returns:
        (cfg, model, class_names): class_names[i] is the name of contiguous class id i.
    Raises:
        InputError (one line naming the file / key) for a bad recipe, override or device,
        an unreadable checkpoint, or one whose parameters do not fit the model.
    """
    import mindspore as ms

    from defrcn.checkpoint.io import load_checkpoint  # imports MindSpore: only when a model is built
    from defrcn.checkpoint.loader import load_weights
    from defrcn.utils.device import (check_device, fuse_inference_kernels, keep_graph_precision,
                                     plan_graph_memory, set_kernel_fusion)
    from defrcn.modeling.fold_bn import fold_for_inference

    check_device(device)
    recipe = load_recipe(recipe_path, overrides)
    cfg = recipe.cfg
    class_names = list(resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes).model_classes)
    ms.set_context(mode=ms.GRAPH_MODE)  # as evaluation runs (MindSpore 2.8's default is PyNative)
    if ms.get_context("device_target") != device:
        ms.set_device(device)
    keep_graph_precision(device)
    plan_graph_memory()
    params = load_checkpoint(str(checkpoint))  # before the (slower) model build
    model = recipe.model(cfg)
    load_weights(model, checkpoint, params=params)
    folded = fold_for_inference(model)
    if fuse_kernels:
        fuse_inference_kernels(device, cfg, folded=folded)
    else:
        set_kernel_fusion(device, inference=False)
    return cfg, model, class_names


def read_image_rgb(path):
    """Read an image file as uint8 (H, W, 3) RGB; InputError naming the file otherwise."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise InputError("image file not found", path=path) from None
    except (OSError, ValueError, SyntaxError) as error:  # PIL: UnidentifiedImageError is an OSError
        raise InputError(f"cannot read image ({type(error).__name__})", path=path) from None


def preprocess_image(input_settings, image_rgb_uint8):
    """The test loader's preprocessing of one image; input_settings: a recipe's `input`
    (canvases, min_size_test, max_size_test, format).

    Returns:
        (image float32 (1, 3, Hc, Wc) on the chosen canvas, image_size float32 (1, 2) =
        (h, w) of the resized content, scale: resized / original).
    """
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    i = input_settings
    canvases = [tuple(int(v) for v in c) for c in i.canvases]
    canvas = canvases[choose_canvas(height, width, canvases)]
    example = prepare_example(image, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32),
                              canvas=canvas, short_size=i.min_size_test, max_size=i.max_size_test, flip=False,
                              pixel_format=i.format, max_gt=1)
    return example["image"][None], example["image_size"][None], float(example["scale"])


def predict_image(model, input_settings, image_rgb_uint8):
    """Detect objects in one image of any size (aspect ratio kept).

    Args:
        model: the detector in eval mode (`load_model_for_inference`).
        input_settings: the recipe's `input` (see `preprocess_image`).
        image_rgb_uint8: (H, W, 3) uint8 RGB.
    Returns:
        boxes float32 (N, 4) XYXY in original pixels, scores float32 (N,), class ids int32 (N,)
        (contiguous ids into the class names); only valid detections, highest score first.
    """
    from mindspore import Tensor

    height, width = np.asarray(image_rgb_uint8).shape[:2]
    images, image_sizes, scale = preprocess_image(input_settings, image_rgb_uint8)
    boxes, scores, classes, valid = model(Tensor(images), Tensor(image_sizes))
    keep = valid.asnumpy()[0].astype(bool)
    boxes = boxes.asnumpy()[0][keep]
    scores = scores.asnumpy()[0][keep].astype(np.float32)
    classes = classes.asnumpy()[0][keep].astype(np.int32)
    order = np.argsort(-scores, kind="stable")
    boxes = boxes_to_original(boxes[order], scale, height, width)
    return boxes.astype(np.float32), scores[order], classes[order]


def read_image_header(path):
    """(width, height) from the file's header, without decoding; InputError if not an image."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise InputError("image file not found", path=path) from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"cannot read image ({type(error).__name__})", path=path) from None


def build_recipe_pcb(cfg, model, test_meta=None):
    """The PCB of a fine-tuning recipe (`test.pcb`, its K-shot support set, the prototype cache
    under its output folder) for `model`; `test_meta` sets the class-id space of `rescore`."""
    from defrcn.pcb import build_pcb, default_cache_dir
    from defrcn.pcb.feature_model import build_feature_model

    spec = resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)
    features = build_feature_model(cfg.test.pcb, model, input=cfg.input)
    return build_pcb(spec, cfg.test.pcb, features, test_meta=test_meta,
                     cache_dir=default_cache_dir(cfg.test.pcb, cfg.get("output_dir", "")))
