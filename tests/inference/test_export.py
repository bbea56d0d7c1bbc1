"""defrcn.inference.export on a stand-in detector (a few ops, seconds to compile): the graph
of two inputs in eval mode, exactly the file asked for, loadable and computing what the Cell
computes; bad output paths and formats refused before anything is built (tests/tools/
test_export_cli.py exports the real detector)."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from defrcn.errors import InputError
from defrcn.inference.export import InferenceGraph, export_inference_graph, export_model


class StandIn(nn.Cell):
    """(images, image_sizes) -> (boxes, scores, classes, valid) like the detector, 3 slots;
    the scores differ in training mode, so an export in training mode would show."""

    def __init__(self):
        super().__init__()
        self.scale = ms.Parameter(Tensor(np.float32(0.5)), name="scale")

    def construct(self, images, image_sizes):
        pooled = images.mean(axis=(1, 2, 3)).reshape(-1, 1)
        scores = ops.sigmoid(pooled * self.scale + ops.arange(3, dtype=ms.float32).reshape(1, 3))
        if self.training:
            scores = scores * 0.0
        boxes = ops.tile(ops.concat((image_sizes * 0.0, image_sizes), axis=1).reshape(-1, 1, 4), (1, 3, 1))
        return boxes, scores, ops.zeros((1, 3), ms.int32), ops.ones((1, 3), ms.float32)


def inputs(height, width, seed=0):
    images = np.random.default_rng(seed).normal(size=(1, 3, height, width)).astype(np.float32)
    return Tensor(images), Tensor(np.array([[height - 4, width - 2]], np.float32))


def test_the_graph_is_the_detector_in_eval_mode():
    model = StandIn()
    model.set_train(True)
    graph = InferenceGraph(model)
    assert not graph.training and not model.training
    expected = [o.asnumpy() for o in model(*inputs(8, 12))]
    np.testing.assert_array_equal(graph(*inputs(8, 12))[1].asnumpy(), expected[1])
    assert expected[1].min() > 0


def test_exports_exactly_the_file_and_it_computes_what_the_cell_does(tmp_path):
    model = StandIn()
    model.set_train(False)
    out = tmp_path / "new" / "detector.mindir"  # missing folders are made
    assert export_inference_graph(model, (16, 24), str(out)) == str(out)
    assert os.listdir(out.parent) == ["detector.mindir"]  # no second suffix, no temp file
    graph = nn.GraphCell(ms.load(str(out)))
    images, sizes = inputs(16, 24, seed=1)
    for got, expected in zip(graph(images, sizes), model(images, sizes)):
        np.testing.assert_allclose(got.asnumpy(), expected.asnumpy(), rtol=1e-6)


def test_bad_output_paths_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="--output is a folder; give a file name"):
        export_inference_graph(StandIn(), (16, 24), str(tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot create the output folder"):
        export_inference_graph(StandIn(), (16, 24), str(tmp_path / "file" / "m.mindir"))
    assert os.listdir(tmp_path) == ["file"]


def test_export_model_refuses_other_formats_and_folders_before_loading(tmp_path):
    with pytest.raises(InputError, match="--format: only MINDIR is supported, got 'ONNX'"):
        export_model("no_recipe.py", "no.ckpt", str(tmp_path / "m.onnx"), file_format="ONNX")
    with pytest.raises(InputError, match="--output is a folder"):
        export_model("no_recipe.py", "no.ckpt", str(tmp_path), file_format="mindir")
