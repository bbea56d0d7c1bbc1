import pickle

import numpy as np
import pytest

from defrcn.checkpoint import io
from defrcn.testing import torchvision_resnet_shapes, write_torch_file


def test_torchvision_resnet18_through_the_cli(run_tool, one_line_error, tmp_path):
    state = {name: np.full(shape, 0.5, np.float32) for name, shape in torchvision_resnet_shapes(18).items()}
    state["bn1.num_batches_tracked"] = np.array(3, np.int64)
    write_torch_file(tmp_path / "resnet18.pth", state, legacy=True)  # torchvision's 2017 files are legacy
    result = run_tool("convert", "torchvision", tmp_path / "resnet18.pth", tmp_path / "resnet18.ckpt")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "ResNet-18: 102 entries" in result.stdout and "num_batches_tracked" in result.stdout
    converted = io.load_checkpoint(str(tmp_path / "resnet18.ckpt"))
    assert converted["layer2.0.down_sample.1.moving_variance"].shape == (128,)
    assert converted["classifier.weight"].shape == (1000, 512)

    write_torch_file(tmp_path / "other.pth", {"encoder.weight": np.zeros((3, 3), np.float32)})
    result = run_tool("convert", "torchvision", tmp_path / "other.pth", tmp_path / "other.ckpt")
    one_line_error(result, "other.pth", "not a torchvision ResNet state dict")
    assert not (tmp_path / "other.ckpt").exists()


def test_bad_inputs_give_one_line(run_tool, one_line_error, tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"\x00 not a pickle")
    one_line_error(run_tool("convert", "detectron2", tmp_path / "junk.pkl", tmp_path / "o.ckpt"),
                   "junk.pkl", "not a readable weights file")
    with open(tmp_path / "heads.pkl", "wb") as handle:
        pickle.dump({"model": {"roi_heads.box_predictor.cls_score.weight": np.zeros((3, 4))}}, handle)
    one_line_error(run_tool("convert", "detectron2", tmp_path / "heads.pkl", tmp_path / "o.ckpt"),
                   "heads.pkl", "no stem conv")
    one_line_error(run_tool("convert", "detectron2", tmp_path / "none.pkl", tmp_path / "o.ckpt"),
                   "none.pkl", "file not found")
    one_line_error(run_tool("convert", "caffe", tmp_path / "junk.pkl", tmp_path / "o.ckpt"), "caffe")
