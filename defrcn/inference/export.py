"""Export the detector's inference graph to MINDIR.

The exported graph takes `images` float32 (1, 3, H, W) on the recipe's first canvas
(`input.canvases[0]`, already normalised and padded as `defrcn.inference.predict.preprocess_image`
does) and `image_sizes` float32 (1, 2) = (h, w) of the content, and returns
`(boxes (1, D, 4) canvas pixels, scores (1, D), classes (1, D) int32, valid (1, D))`,
D = `model.roi.detections_per_image`. Load it with
`mindspore.nn.GraphCell(mindspore.load(path))`.
"""
import os

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn

from defrcn.errors import InputError
from defrcn.utils.atomic import atomic_output

__all__ = ["FORMATS", "InferenceGraph", "export_inference_graph", "export_model"]

FORMATS = ("MINDIR",)


class InferenceGraph(nn.Cell):
    """The detector in eval mode as a Cell of exactly two inputs:
    (images, image_sizes) -> (boxes, scores, classes, valid)."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector
        self.set_train(False)

    def construct(self, images, image_sizes):
        return self.detector(images, image_sizes)


def export_inference_graph(model, canvas, out_file):
    """Write `model`'s inference graph for input `canvas` (height, width) to exactly `out_file`
    (MINDIR).

    The file is written under a temporary name in the same folder and moved into place,
    so a failed export never leaves a partial `out_file`. Returns out_file.
    """
    height, width = (int(v) for v in canvas)
    images = Tensor(np.zeros((1, 3, height, width), np.float32))
    image_sizes = Tensor(np.array([[height, width]], np.float32))
    folder = os.path.dirname(os.path.abspath(out_file))
    if os.path.isdir(out_file):
        raise InputError("--output is a folder; give a file name", path=out_file)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder ({error.strerror})", path=folder) from None
    with atomic_output(out_file, ".mindir") as written:  # mindspore.export appends .mindir to file_name
        ms.export(InferenceGraph(model), images, image_sizes, file_name=written[:-len(".mindir")],
                  file_format="MINDIR")
        if not os.path.isfile(written):
            raise RuntimeError(f"mindspore.export did not write {written}")
    return out_file


def export_model(recipe_path, checkpoint, out_file, *, file_format="MINDIR", overrides=(), device="CPU"):
    """Load the recipe's detector with `checkpoint` and export it (see the module docstring).

    InputError for an unsupported format (only MINDIR) and for the loader's bad input.
    Returns out_file.
    """
    from defrcn.inference.predict import load_model_for_inference

    if str(file_format).upper() not in FORMATS:
        raise InputError(f"--format: only {', '.join(FORMATS)} is supported, got {file_format!r}")
    if os.path.isdir(out_file):
        raise InputError("--output is a folder; give a file name", path=out_file)
    cfg, model, _ = load_model_for_inference(recipe_path, checkpoint, overrides, device=device,
                                             fuse_kernels=False)
    return export_inference_graph(model, cfg.input.canvases[0], out_file)  # the recipe's first canvas
