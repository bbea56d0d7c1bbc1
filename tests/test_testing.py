"""defrcn.testing, the tests' own helpers: the stand-in network, the torch-free `.pth` writer
(read back by the library's reader), and the ResNet / original DeFRCN name-and-shape tables."""
import numpy as np
import pytest
from mindspore import Tensor

from defrcn.checkpoint.convert import read_torch_state_dict
from defrcn.testing import (STAGE_BLOCKS, TinyRegression, original_defrcn_state, random_or_zeros,
                            resnet_block_shapes, torchvision_resnet_shapes, write_torch_file)


def test_tiny_regression_returns_the_total_and_its_two_parts():
    x = Tensor(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    y = Tensor(np.ones((4, 1), np.float32))
    network = TinyRegression()
    total, mse, l1 = (float(v.asnumpy()) for v in network(x, y))
    pred = network.out(network.hidden(x).tanh()).asnumpy()
    assert mse == pytest.approx(((pred - 1) ** 2).mean(), rel=1e-5)
    assert l1 == pytest.approx(np.abs(pred - 1).mean() * 0.5, rel=1e-5)
    assert total == pytest.approx(mse + l1, rel=1e-6)


@pytest.mark.parametrize("legacy", [False, True])
def test_torch_files_read_back_with_every_dtype(tmp_path, legacy):
    state = {f"w_{dtype}": (np.arange(6).reshape(2, 3) % 2).astype(dtype)
             for dtype in ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")}
    state["scalar"] = np.array(7, np.int64)
    path = tmp_path / "weights.pth"
    write_torch_file(path, {"model": state, "iteration": 12, "note": None}, legacy=legacy)
    read = read_torch_state_dict(str(path))
    assert sorted(read) == sorted(state)
    for name, value in state.items():
        assert read[name].dtype == value.dtype and read[name].shape == value.shape, name
        np.testing.assert_array_equal(read[name], value)


@pytest.mark.parametrize("depth, blocks, res2_out", [(18, 8, 64), (50, 16, 256), (101, 33, 256)])
def test_resnet_block_table(depth, blocks, res2_out):
    table = resnet_block_shapes(depth)
    assert len(table) == blocks == sum(STAGE_BLOCKS[depth])
    stage, block, convs, shortcut = table[0]
    assert (stage, block) == (2, 0) and convs[-1][1][0] == res2_out
    assert shortcut == (None if depth == 18 else (256, 64))  # BasicBlock res2 keeps 64 channels
    last_stage, _, last_convs, _ = table[-1]
    assert last_stage == 5 and last_convs[-1][1][0] == (512 if depth == 18 else 2048)
    assert all(sc is None for _, b, _, sc in table if b > 0)


def test_original_defrcn_state_names_and_shapes():
    state = original_defrcn_state(18, num_classes=6, num_anchors=12)
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (7, 512)
    assert state["roi_heads.box_predictor.bbox_pred.weight"].shape == (24, 512)
    assert state["proposal_generator.rpn_head.objectness_logits.weight"].shape == (12, 256, 1, 1)
    assert "roi_heads.res5.0.shortcut.weight" in state and "backbone.res4.0.conv1.norm.running_var" in state
    without = original_defrcn_state(18, 6, predictor=False, zeros_backbone=True)
    assert not [n for n in without if "box_predictor" in n]
    assert not without["backbone.stem.conv1.weight"].any() and without["affine_rpn.weight"].any()
    np.testing.assert_array_equal(original_defrcn_state(18, 6, seed=1)["affine_rcnn.bias"],
                                  original_defrcn_state(18, 6, seed=1)["affine_rcnn.bias"])


def test_random_or_zeros():
    rng = np.random.default_rng(0)
    assert not random_or_zeros((2, 3), rng, zeros=True).any()
    values = random_or_zeros((2, 3), rng, zeros=False)
    assert values.dtype == np.float32 and values.shape == (2, 3) and values.std() > 0


def test_torchvision_resnet_names():
    shapes = torchvision_resnet_shapes(18, num_classes=10)
    assert shapes["fc.weight"] == (10, 512) and shapes["bn1.running_var"] == (64,)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert not [n for n in shapes if "gamma" in n or "moving" in n or "classifier" in n or "down_sample" in n]
