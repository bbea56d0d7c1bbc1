"""Whole-detector conversion: the original DeFRCN (detectron2 names) and the MindSpore port.

Source state dicts are built here from each code base's naming (DeFRCN `rcnn.py`, `gdl.py`,
`roi_heads.py`, detectron2 `resnet.py` / `rpn.py`; the port's `de_frcn.py`, `resnet.py`,
`rpn.py`, `rcnn.py`), not from our parameter names, with the shapes of the target config.
"""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from defrcn.checkpoint import io
from defrcn.checkpoint.convert_detector import (BOX_BIAS, BOX_WEIGHT, CLS_BIAS, CLS_WEIGHT, DetectorTarget,
                                                convert_detector, convert_detector_weights,
                                                defrcn_to_detector_name, port_to_detector_name)
from defrcn.data.classes import coco_split_classes
from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES
from defrcn.engine import load_recipe
from defrcn.errors import InputError
from defrcn.testing import STAGE_BLOCKS, random_or_zeros, resnet_block_shapes, write_torch_file
from defrcn.testing import original_defrcn_state as defrcn_state

REPO = Path(__file__).resolve().parents[2]
# The toy json's category order (ascending id) interleaves novel and base classes, as COCO does.
TOY_ORDER = ["orange_diamond", "red_circle", "blue_square", "purple_hexagon", "green_triangle",
             "yellow_star", "white_arrow", "magenta_cross", "cyan_ring"]


# --------------------------------------------------------------------------------------------
# source state dicts, from each code base's naming


def port_state(depth, num_classes, num_anchors=15, seed=0):
    """{name: array} of the port's De_Frcn network + optimizer state at `depth` (background first,
    predictor weights stored (D, out))."""
    rng = np.random.default_rng(seed)
    bn = ("gamma", "beta", "moving_mean", "moving_variance")
    state = {"backbone.stem.conv1.weight": rng.normal(size=(64, 3, 7, 7)).astype(np.float32)}
    for field in bn:
        state[f"backbone.stem.bn1.{field}"] = rng.uniform(0.5, 1.5, 64).astype(np.float32)
    for stage, block, convs, shortcut in resnet_block_shapes(depth):
        prefix = f"layer4.{block}." if stage == 5 else f"backbone.layer{stage - 1}.{block}."
        layers = [(conv, f"bn{conv[-1]}", shape) for conv, shape in convs]
        if shortcut:
            layers.append(("conv_down_sample", "bn_down_sample", shortcut + (1, 1)))
        for conv, norm, shape in layers:
            state[prefix + conv + ".weight"] = rng.normal(size=shape).astype(np.float32)
            for field in bn:
                state[f"{prefix}{norm}.{field}"] = rng.uniform(0.5, 1.5, shape[:1]).astype(np.float32)
    c4 = state["backbone.layer3.0.conv1.weight"].shape[0] * (4 if depth >= 50 else 1)
    c5 = 2 * c4
    rpn = "rpn_with_loss.rpn_convs_list.0."
    heads = {rpn + "rpn_conv.weight": (c4, c4, 3, 3), rpn + "rpn_conv.bias": (c4,),
             rpn + "rpn_cls.weight": (num_anchors, c4, 1, 1), rpn + "rpn_cls.bias": (num_anchors,),
             rpn + "rpn_reg.weight": (4 * num_anchors, c4, 1, 1), rpn + "rpn_reg.bias": (4 * num_anchors,),
             "affine_rpn.weight": (1, c4, 1, 1), "affine_rpn.bias": (1, c4, 1, 1),
             "affine_rcnn.weight": (1, c4, 1, 1), "affine_rcnn.bias": (1, c4, 1, 1),
             "rcnn.cls_scores.weight": (c5, num_classes + 1), "rcnn.cls_scores.bias": (num_classes + 1,),
             "rcnn.reg_scores.weight": (c5, 4 * num_classes), "rcnn.reg_scores.bias": (4 * num_classes,)}
    for name, shape in heads.items():
        state[name] = rng.normal(size=shape).astype(np.float32)
    state["learning_rate"] = np.array(0.02, np.float32)
    state["global_step"] = np.array([900], np.int32)
    state["moments.rcnn.cls_scores.weight"] = np.zeros((c5, num_classes + 1), np.float32)
    state["accum.layer4.0.conv1.weight"] = np.zeros((1,), np.float32)
    return state


# --------------------------------------------------------------------------------------------
# targets


def _model_shapes(num_classes, depth, anchor_sizes=(32, 64, 128, 256, 512)):
    from defrcn.modeling.detector import build_detector

    model = build_detector(num_classes=num_classes, depth=depth, rpn=dict(anchor_sizes=tuple(anchor_sizes)),
                           verbose=False)
    shapes = {param.name: tuple(param.shape) for param in model.get_parameters()}
    del model
    return shapes


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    """A toy data root with only the category list (TOY_ORDER) in annotations/train.json."""
    root = tmp_path_factory.mktemp("toy")
    (root / "annotations").mkdir()
    categories = [{"id": 10 + 3 * i, "name": name} for i, name in enumerate(TOY_ORDER)]
    (root / "annotations" / "train.json").write_text(json.dumps({"images": [], "annotations": [],
                                                                 "categories": categories}))
    return root


def toy_target(class_names, depth=18):
    """The toy recipes' target (R-18, 4 anchor sizes x 3 ratios) for a model of `class_names`."""
    return DetectorTarget(_model_shapes(len(class_names), depth, (32, 64, 128, 256)), list(class_names),
                          list(BASE_CLASS_NAMES), list(NOVEL_CLASS_NAMES), list(TOY_ORDER), 4, 3)


def write_pkl(state, path):
    with open(path, "wb") as handle:
        pickle.dump({"model": state, "iteration": 110000}, handle)
    return path


def values(path):
    return {name: value.asnumpy() for name, value in io.load_checkpoint(str(path)).items()
            if not isinstance(value, str)}


# --------------------------------------------------------------------------------------------
# names


def test_defrcn_names_map_to_the_detector():
    cases = {
        "backbone.stem.conv1.weight": "backbone.conv1.weight",
        "backbone.res4.22.conv3.norm.running_var": "backbone.layer3.22.bn3.moving_variance",
        "roi_heads.res5.0.shortcut.weight": "roi_heads.res5.layer4.0.down_sample.0.weight",
        "proposal_generator.rpn_head.conv.weight": "proposal_generator.head.conv.weight",
        "proposal_generator.rpn_head.objectness_logits.bias": "proposal_generator.head.objectness_logits.bias",
        "proposal_generator.rpn_head.anchor_deltas.weight": "proposal_generator.head.anchor_deltas.weight",
        "affine_rpn.weight": "rpn_branch.affine.weight",
        "affine_rcnn.bias": "roi_branch.affine.bias",
        CLS_WEIGHT: CLS_WEIGHT,
        BOX_BIAS: BOX_BIAS,
        "module.affine_rcnn.weight": "roi_branch.affine.weight",
    }
    for source, ours in cases.items():
        assert defrcn_to_detector_name(source) == ours, source
    for other in ("proposal_generator.anchor_generator.cell_anchors.0", "pixel_mean", "iteration"):
        assert defrcn_to_detector_name(other) is None


def test_port_names_map_to_the_detector():
    cases = {
        "backbone.stem.conv1.weight": "backbone.conv1.weight",
        "backbone.stem.bn1.moving_mean": "backbone.bn1.moving_mean",
        "backbone.layer1.0.conv_down_sample.weight": "backbone.layer1.0.down_sample.0.weight",
        "backbone.layer3.5.bn_down_sample.gamma": "backbone.layer3.5.down_sample.1.gamma",
        "backbone.layer2.3.bn2.beta": "backbone.layer2.3.bn2.beta",
        "layer4.2.conv3.weight": "roi_heads.res5.layer4.2.conv3.weight",
        "affine_rpn.bias": "rpn_branch.affine.bias",
        "rpn_with_loss.rpn_convs_list.0.rpn_conv.weight": "proposal_generator.head.conv.weight",
        "rpn_with_loss.rpn_convs_list.0.rpn_cls.bias": "proposal_generator.head.objectness_logits.bias",
        "rpn_with_loss.rpn_convs_list.0.rpn_reg.weight": "proposal_generator.head.anchor_deltas.weight",
        "rcnn.cls_scores.weight": CLS_WEIGHT,
        "rcnn.reg_scores.bias": BOX_BIAS,
    }
    for source, ours in cases.items():
        assert port_to_detector_name(source) == ours, source
    for other in ("backbone.layer4.0.conv1.weight", "moments.rcnn.cls_scores.weight", "learning_rate"):
        assert port_to_detector_name(other) is None


# --------------------------------------------------------------------------------------------
# the original DeFRCN


def test_defrcn_r101_coco_base_model_converts_every_detector_entry():
    base, novel, both = coco_split_classes()
    target = DetectorTarget(_model_shapes(60, 101), base, base, novel, both)
    state = defrcn_state(101, 60, zeros_backbone=True)
    result = convert_detector_weights(state, "defrcn", target, source="model_final.pth")
    # R-101 C4: stem 5 + 33 blocks x 3 convs x 5 + 4 shortcuts x 5 = 520; RPN 6; affines 4; predictor 4
    assert len(result.converted) == 534 and len(state) == 535
    assert result.left_out == {"proposal_generator.anchor_generator.cell_anchors.0":
                               "anchors are rebuilt from model.rpn"}
    assert result.not_in_source == ["sample_step"]
    assert result.source_classes == base and result.written_classes == base
    arrays = result.arrays
    assert arrays["rpn_branch.affine.weight"].shape == (1024,)
    assert np.array_equal(arrays["roi_branch.affine.bias"], state["affine_rcnn.bias"].reshape(-1))
    assert np.array_equal(arrays["proposal_generator.head.anchor_deltas.weight"],
                          state["proposal_generator.rpn_head.anchor_deltas.weight"])
    for key in (CLS_WEIGHT, CLS_BIAS, BOX_WEIGHT, BOX_BIAS):
        assert np.array_equal(arrays[key], state[key]), key


def test_predictor_rows_move_by_class_name_value_by_value():
    target = toy_target(TOY_ORDER)
    source_names = list(reversed(TOY_ORDER))  # a model trained with another class order
    state = defrcn_state(18, 9, num_anchors=12)
    result = convert_detector_weights(state, "defrcn", target, source_classes=source_names, source="ft.pth")
    assert result.written_classes == TOY_ORDER
    arrays = result.arrays
    for dst, name in enumerate(TOY_ORDER):
        src = source_names.index(name)
        assert np.array_equal(arrays[CLS_WEIGHT][dst], state[CLS_WEIGHT][src])
        assert arrays[CLS_BIAS][dst] == state[CLS_BIAS][src]
        assert np.array_equal(arrays[BOX_WEIGHT][4 * dst:4 * dst + 4], state[BOX_WEIGHT][4 * src:4 * src + 4])
        assert np.array_equal(arrays[BOX_BIAS][4 * dst:4 * dst + 4], state[BOX_BIAS][4 * src:4 * src + 4])
    assert np.array_equal(arrays[CLS_WEIGHT][9], state[CLS_WEIGHT][9])  # background stays last
    # an all-class model converted for a novel-only model keeps the novel rows
    result = convert_detector_weights(state, "defrcn", toy_target(NOVEL_CLASS_NAMES), source_classes=source_names)
    for dst, name in enumerate(NOVEL_CLASS_NAMES):
        assert np.array_equal(result.arrays[CLS_WEIGHT][dst], state[CLS_WEIGHT][source_names.index(name)])


@pytest.mark.parametrize("change, kwargs, expected", [
    ("five_classes", {}, "the predictor has 5 classes, which matches none of the recipe's class lists"),
    (None, dict(source_classes=["a", "b"]), "--source-classes lists 2 classes but the predictor has 6"),
    (None, dict(source_classes=["a", "a", "b", "c", "d", "e"]), "'a' is listed twice"),
    ("agnostic", {}, "class-agnostic box regression is not supported"),
    ("backbone_only", {}, "a backbone only, no RPN, GDL affine or predictor"),
    ("no_stem", {}, "not an original DeFRCN / detectron2 detector checkpoint"),
    ("r50", {}, "is not a parameter of the recipe's model"),
])
def test_bad_defrcn_inputs_give_one_line(change, kwargs, expected):
    state = defrcn_state(50 if change == "r50" else 18, 5 if change == "five_classes" else 6, num_anchors=12)
    if change == "agnostic":
        state[BOX_WEIGHT], state[BOX_BIAS] = state[BOX_WEIGHT][:4], state[BOX_BIAS][:4]
    elif change == "backbone_only":
        state = {k: v for k, v in state.items() if k.startswith(("backbone.", "roi_heads.res5."))}
    elif change == "no_stem":
        del state["backbone.stem.conv1.weight"]
    with pytest.raises(InputError) as info:
        convert_detector_weights(state, "defrcn", toy_target(BASE_CLASS_NAMES), source="x/model.pth", **kwargs)
    message = str(info.value)
    assert message.startswith("x/model.pth: ") and "\n" not in message and expected in message, message


# --------------------------------------------------------------------------------------------
# the MindSpore port


def test_port_checkpoint_maps_backbone_heads_and_predictor(tmp_path):
    base, novel, both = coco_split_classes()
    state = port_state(50, 60, num_anchors=12)
    src = tmp_path / "defrcn-18_1000.ckpt"
    from mindspore import Tensor

    io.save_checkpoint([{"name": k, "data": Tensor(v)} for k, v in state.items()], str(src))
    target = DetectorTarget(_model_shapes(60, 50, (32, 64, 128, 256)), base, base, novel, both, 4, 3)
    result = convert_detector("port", str(src), str(tmp_path / "out.ckpt"), target)
    # stem 5 + 16 blocks x 3 convs x 5 + 4 shortcuts x 5 = 265; RPN 6; affines 4; predictor 4
    assert len(result.converted) == 279
    assert sorted(result.left_out) == ["accum.layer4.0.conv1.weight", "global_step", "learning_rate",
                                       "moments.rcnn.cls_scores.weight"]
    assert set(result.left_out.values()) == {"training state"}
    assert result.not_in_source == ["sample_step"]
    out = values(tmp_path / "out.ckpt")
    cls_w, reg_w = state["rcnn.cls_scores.weight"].T, state["rcnn.reg_scores.weight"].T
    assert np.array_equal(out[CLS_WEIGHT][:60], cls_w[1:]) and np.array_equal(out[CLS_WEIGHT][60], cls_w[0])
    assert np.array_equal(out[CLS_BIAS][60], state["rcnn.cls_scores.bias"][0])
    assert np.array_equal(out[BOX_WEIGHT], reg_w)
    # anchors: ours size-major (a = s * 3 + r), the port's ratio-major (a = r * 4 + s)
    rpn = "rpn_with_loss.rpn_convs_list.0."
    for size in range(4):
        for ratio in range(3):
            ours, theirs = size * 3 + ratio, ratio * 4 + size
            assert np.array_equal(out["proposal_generator.head.objectness_logits.weight"][ours],
                                  state[rpn + "rpn_cls.weight"][theirs])
            assert np.array_equal(out["proposal_generator.head.anchor_deltas.bias"][4 * ours:4 * ours + 4],
                                  state[rpn + "rpn_reg.bias"][4 * theirs:4 * theirs + 4])
    assert np.array_equal(out["roi_heads.res5.layer4.0.down_sample.1.moving_variance"],
                          state["layer4.0.bn_down_sample.moving_variance"])
    assert np.array_equal(out["backbone.layer1.0.down_sample.0.weight"],
                          state["backbone.layer1.0.conv_down_sample.weight"])
    assert np.array_equal(out["rpn_branch.affine.weight"], state["affine_rpn.weight"].reshape(-1))
    assert any("+7.5 px" in note for note in result.notes)


# --------------------------------------------------------------------------------------------
# through tools/convert.py, then as a fine-tune recipe's base weights


def _load_initial(recipe, overrides, base_weights):
    from defrcn.data.spec import resolve_data_spec
    from defrcn.engine.train import load_initial_weights

    recipe = load_recipe(REPO / recipe, [*overrides, f"model.base_weights={base_weights}"])
    model = recipe.model(recipe.cfg)
    cfg = recipe.cfg
    load_initial_weights(model, cfg, resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes))
    return {name: param.asnumpy() for name, param in model.parameters_dict().items()}


def test_converted_base_model_serves_as_base_weights_and_through_surgery(run_tool, toy_root, tmp_path):
    state = defrcn_state(18, 6, num_anchors=12, seed=3)
    src = write_pkl(state, tmp_path / "model_final.pkl")
    out = tmp_path / "model_final.ckpt"
    result = run_tool("convert", "defrcn", src, out, "--recipe", "recipes/toy_3shot.py", sets=[f"data.root={toy_root}"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert f"defrcn: converted {len(state) - 1} of {len(state)} source entries" in result.stdout
    assert "left out 1 (anchors are rebuilt from model.rpn)" in result.stdout
    assert "predictor: 6 source classes -> 6 written" in result.stdout and "base order" in result.stdout
    converted = values(out)
    assert converted[CLS_WEIGHT].shape == (7, 512)

    # (1) directly as model.base_weights: load_initial_weights runs surgery randinit on it
    loaded = _load_initial("recipes/toy_3shot.py", [f"data.root={toy_root}"], out)
    for src_row, name in enumerate(BASE_CLASS_NAMES):
        dst = TOY_ORDER.index(name)
        assert np.array_equal(loaded[CLS_WEIGHT][dst], state[CLS_WEIGHT][src_row])
        assert np.array_equal(loaded[BOX_WEIGHT][4 * dst:4 * dst + 4], state[BOX_WEIGHT][4 * src_row:4 * src_row + 4])
    assert np.array_equal(loaded[CLS_WEIGHT][9], state[CLS_WEIGHT][6])
    assert np.array_equal(loaded["backbone.layer3.1.conv2.weight"], state["backbone.res4.1.conv2.weight"])
    assert np.array_equal(loaded["roi_branch.affine.weight"], state["affine_rcnn.weight"].reshape(-1))

    # (2) through tools/surgery.py, then loaded with nothing missing
    grown = tmp_path / "model_reset_surgery.ckpt"
    result = run_tool("surgery", "--checkpoint", out, "--method", "randinit", "--recipe", "recipes/toy_3shot.py",
                      "--output", grown, sets=[f"data.root={toy_root}"])
    assert result.returncode == 0, result.stderr
    model = load_recipe(REPO / "recipes/toy_3shot.py", [f"data.root={toy_root}"]).model()
    missing, unexpected, mismatch = io.load_into(model, io.load_checkpoint(str(grown)))
    assert missing == ["sample_step"] and unexpected == [] and mismatch == []


def test_converted_reset_surgery_and_remove_models_load_directly(run_tool, toy_root, tmp_path):
    # model_reset_surgery.pth: all 9 classes in the toy's all-class order, used as it is
    state = defrcn_state(18, 9, num_anchors=12, seed=4)
    out = tmp_path / "model_reset_surgery.ckpt"
    result = run_tool("convert", "defrcn", write_pkl(state, tmp_path / "model_reset_surgery.pkl"), out,
                      "--recipe", "recipes/toy_3shot.py", sets=[f"data.root={toy_root}"])
    assert result.returncode == 0, result.stderr
    loaded = _load_initial("recipes/toy_3shot.py", [f"data.root={toy_root}"], out)
    for key in (CLS_WEIGHT, CLS_BIAS, BOX_WEIGHT, BOX_BIAS):
        assert np.array_equal(loaded[key], state[key]), key
    assert np.array_equal(loaded["proposal_generator.head.conv.bias"], state["proposal_generator.rpn_head.conv.bias"])

    # model_reset_remove.pth: no predictor; an FSOD recipe keeps its own predictor init
    state = defrcn_state(18, 6, num_anchors=12, seed=5, predictor=False)
    out = tmp_path / "model_reset_remove.ckpt"
    fsod = [f"data.root={toy_root}", "data.setting=fsod", f"model.num_classes={len(NOVEL_CLASS_NAMES)}",
            "model.surgery=remove"]
    result = run_tool("convert", "defrcn", write_pkl(state, tmp_path / "model_reset_remove.pkl"), out,
                      "--recipe", "recipes/toy_3shot.py", sets=fsod)
    assert result.returncode == 0, result.stderr
    assert "no box predictor in the source" in result.stdout
    loaded = _load_initial("recipes/toy_3shot.py", fsod, out)
    assert loaded[CLS_WEIGHT].shape == (4, 512)
    assert np.array_equal(loaded["backbone.conv1.weight"], state["backbone.stem.conv1.weight"])


def test_defrcn_pth_through_the_cli(run_tool, toy_root, tmp_path):
    state = defrcn_state(18, 6, num_anchors=12)
    src = tmp_path / "model_final.pth"
    write_torch_file(src, {"model": state, "iteration": 12})
    result = run_tool("convert", "defrcn", src, tmp_path / "out.ckpt", "--recipe", "recipes/toy_base.py",
                      sets=[f"data.root={toy_root}"])
    assert result.returncode == 0, result.stderr
    assert np.array_equal(values(tmp_path / "out.ckpt")[CLS_WEIGHT], state[CLS_WEIGHT])


def test_bad_command_lines_give_one_line(run_tool, one_line_error, toy_root, tmp_path):
    root = [f"data.root={toy_root}"]
    (tmp_path / "junk.pkl").write_bytes(b"\x00 not a pickle")
    one_line_error(run_tool("convert", "defrcn", tmp_path / "junk.pkl", tmp_path / "o.ckpt", "--recipe",
                            "recipes/toy_base.py", sets=root), "junk.pkl", "not a readable weights file")
    five = write_pkl(defrcn_state(18, 5, num_anchors=12), tmp_path / "five.pkl")
    one_line_error(run_tool("convert", "defrcn", five, tmp_path / "o.ckpt", "--recipe", "recipes/toy_base.py", sets=root),
                   "five.pkl", "the predictor has 5 classes")
    one_line_error(run_tool("convert", "port", five, tmp_path / "o.ckpt", "--recipe", "recipes/toy_base.py", sets=root),
                   "five.pkl", "not a readable MindSpore checkpoint")
    one_line_error(run_tool("convert", "defrcn", five, tmp_path / "o.ckpt"), "--recipe is needed")
    one_line_error(run_tool("convert", "detectron2", five, tmp_path / "o.ckpt", "--recipe", "recipes/toy_base.py"),
                   "apply to defrcn and port only")
    assert not (tmp_path / "o.ckpt").exists()
