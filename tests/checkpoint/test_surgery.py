import numpy as np
import pytest

import mindspore as ms
from mindspore import Parameter, Tensor

from defrcn.checkpoint import io
from defrcn.checkpoint.surgery import (BOX_BIAS, BOX_WEIGHT, CLS_BIAS, CLS_WEIGHT, PREDICTOR_KEYS,
                                       apply_surgery_to_model, surgery)
from defrcn.data.classes import COCO_BASE_CLASSES, COCO_CLASSES, COCO_NOVEL_CLASSES, voc_split_classes
from defrcn.errors import InputError
from defrcn.modeling.predictor import BoxPredictor

DIM = 8  # a tiny stand-in for res5's 2048 features


def base_checkpoint(num_base, dim=DIM, seed=1):
    """A fake base checkpoint: predictor with distinct rows, a backbone entry and training state."""
    rng = np.random.default_rng(seed)
    return {
        CLS_WEIGHT: rng.normal(size=(num_base + 1, dim)).astype(np.float32),
        CLS_BIAS: rng.normal(size=(num_base + 1,)).astype(np.float32),
        BOX_WEIGHT: rng.normal(size=(4 * num_base, dim)).astype(np.float32),
        BOX_BIAS: rng.normal(size=(4 * num_base,)).astype(np.float32),
        "backbone.conv1.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "sample_step": np.array(1234, dtype=np.int32),
        "optimizer.moments.backbone.conv1.weight": np.ones((4, 3, 3, 3), np.float32),
        "extra.iteration": np.array(5000, dtype=np.int64),
        "train_step.global_step": np.array(5000, dtype=np.int32),
    }


def check_grown(base, out, base_names, target_names):
    """Every base row bit-identical at its class's target index; new rows N(0, .01), biases 0."""
    position = {name: i for i, name in enumerate(target_names)}
    cls_w, cls_b, box_w, box_b = (out[k] for k in PREDICTOR_KEYS)
    assert cls_w.shape == (len(target_names) + 1, DIM) and box_w.shape == (4 * len(target_names), DIM)
    for src, name in enumerate(base_names):
        dst = position[name]
        assert np.array_equal(cls_w[dst], base[CLS_WEIGHT][src]) and cls_b[dst] == base[CLS_BIAS][src]
        assert np.array_equal(box_w[4 * dst:4 * dst + 4], base[BOX_WEIGHT][4 * src:4 * src + 4])
        assert np.array_equal(box_b[4 * dst:4 * dst + 4], base[BOX_BIAS][4 * src:4 * src + 4])
    assert np.array_equal(cls_w[-1], base[CLS_WEIGHT][-1]) and cls_b[-1] == base[CLS_BIAS][-1]
    new = [position[n] for n in target_names if n not in base_names]
    assert np.all(cls_b[new] == 0)
    assert np.all(box_b[np.concatenate([np.arange(4 * i, 4 * i + 4) for i in new])] == 0)
    return new


def test_randinit_coco_interleaves_base_rows_by_name():
    base_names, target = list(COCO_BASE_CLASSES), list(COCO_CLASSES)
    base = base_checkpoint(len(base_names))
    out = surgery(base, method="randinit", base_class_names=base_names, target_class_names=target, seed=3)
    new = check_grown(base, out, base_names, target)
    # DeFRCN tools/model_surgery.py: the novel classes land at these 80-class indices
    assert new == [0, 1, 2, 3, 4, 5, 6, 8, 14, 15, 16, 17, 18, 19, 39, 56, 57, 58, 60, 62]
    assert [target[i] for i in new] == list(COCO_NOVEL_CLASSES)
    # the new rows are fresh draws, not copies of a base row
    assert not any(np.array_equal(out[CLS_WEIGHT][i], row) for i in new for row in base[CLS_WEIGHT])


@pytest.mark.parametrize("split", [1, 2, 3])
def test_randinit_voc_copies_the_first_15_rows_in_place(split):
    base_names, novel, target = voc_split_classes(split)
    base = base_checkpoint(len(base_names))
    out = surgery(base, method="randinit", base_class_names=base_names, target_class_names=target)
    assert check_grown(base, out, base_names, target) == [15, 16, 17, 18, 19]
    assert np.array_equal(out[CLS_WEIGHT][:15], base[CLS_WEIGHT][:15])
    assert np.array_equal(out[BOX_WEIGHT][:60], base[BOX_WEIGHT][:60])


def test_new_rows_are_normal_with_std_0_01():
    base_names = [f"b{i}" for i in range(2)]
    target = base_names + [f"n{i}" for i in range(200)]
    base = base_checkpoint(2, dim=256)
    out = surgery(base, method="randinit", base_class_names=base_names, target_class_names=target, seed=0)
    cls_new = out[CLS_WEIGHT][2:-1]  # 200 x 256 new classifier values
    box_new = out[BOX_WEIGHT][8:]  # 800 x 256 new box values
    for values in (cls_new, box_new):
        assert abs(values.std() - 0.01) < 0.0003 and abs(values.mean()) < 0.0003
    assert out[CLS_WEIGHT].dtype == np.float32
    again = surgery(base, method="randinit", base_class_names=base_names, target_class_names=target, seed=0)
    other = surgery(base, method="randinit", base_class_names=base_names, target_class_names=target, seed=1)
    assert np.array_equal(again[CLS_WEIGHT], out[CLS_WEIGHT])
    assert not np.array_equal(other[CLS_WEIGHT], out[CLS_WEIGHT])


@pytest.mark.parametrize("method", ["randinit", "remove"])
def test_state_is_dropped_sample_step_reset_rest_copied(method):
    base = base_checkpoint(3)
    out = surgery(base, method=method, base_class_names=["a", "b", "c"], target_class_names=["x", "a", "c", "b"])
    assert not [n for n in out if n.startswith(io.STATE_PREFIXES)]
    assert out["sample_step"] == 0 and out["sample_step"].dtype == np.int32
    assert out["backbone.conv1.weight"] is base["backbone.conv1.weight"]
    assert base["sample_step"] == 1234  # the input is left alone
    if method == "remove":
        assert not set(PREDICTOR_KEYS) & set(out)
    else:
        assert out[CLS_WEIGHT].shape == (5, DIM)


def test_parameters_in_parameters_out():
    base = {name: Parameter(Tensor(value), name=name) for name, value in base_checkpoint(2).items()}
    out = surgery(base, method="randinit", base_class_names=["a", "b"], target_class_names=["a", "n", "b"])
    assert isinstance(out[CLS_WEIGHT], Parameter) and out[CLS_WEIGHT].name == CLS_WEIGHT
    assert isinstance(out["sample_step"], Parameter) and int(out["sample_step"].asnumpy()) == 0
    assert np.array_equal(out[CLS_WEIGHT].asnumpy()[2], base[CLS_WEIGHT].asnumpy()[1])


@pytest.mark.parametrize("change, kwargs, expected", [
    (None, dict(base_class_names=["a", "b", "zz"]), "'roi_heads.box_predictor.cls_score.weight' has 3 rows "
                                                    "(2 classes) but 3 base classes"),
    (None, dict(target_class_names=["a", "n"]), "base class 'b' is not among the target classes"),
    (None, dict(base_class_names=["a", "a"]), "base class 'a' is listed twice"),
    (None, dict(method="grow"), "unknown method 'grow'"),
    (BOX_WEIGHT, {}, "no 'roi_heads.box_predictor.bbox_pred.weight'"),
    (BOX_BIAS, {}, "bbox_pred.bias' has 7 rows"),
])
def test_bad_inputs_give_one_line_naming_the_checkpoint(change, kwargs, expected):
    base = base_checkpoint(2)
    if change == BOX_WEIGHT:
        del base[BOX_WEIGHT]
    elif change == BOX_BIAS:
        base[BOX_BIAS] = np.zeros(7, np.float32)
    args = dict(method="randinit", base_class_names=["a", "b"], target_class_names=["a", "n", "b"])
    args.update(kwargs)
    with pytest.raises(InputError) as info:
        surgery(base, source="out/base/model_final.ckpt", **args)
    message = str(info.value)
    assert message.startswith("out/base/model_final.ckpt: ") and "\n" not in message
    assert expected in message


class _Heads(ms.nn.Cell):
    def __init__(self, num_classes):
        super().__init__()
        self.box_predictor = BoxPredictor(DIM, num_classes)


class _Trunk(ms.nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv1 = ms.nn.Conv2d(3, 4, 3, has_bias=False)


class TinyDetector(ms.nn.Cell):
    """The parameter layout of the detector (backbone, ROI heads' predictor, sample_step), small."""

    def __init__(self, num_classes):
        super().__init__()
        self.backbone = _Trunk()
        self.roi_heads = _Heads(num_classes)
        self.sample_step = Parameter(Tensor(7, ms.int32), name="sample_step", requires_grad=False)


def test_apply_surgery_to_model_loads_grown_and_removed_predictors(tmp_path):
    base = base_checkpoint(2)
    path = str(tmp_path / "base.ckpt")
    io.save_checkpoint([{"name": n, "data": Tensor(v)} for n, v in base.items()], path)
    model = TinyDetector(3)
    report = apply_surgery_to_model(model, path, method="randinit", base_class_names=["a", "b"],
                                    target_class_names=["n", "a", "b"], seed=0)
    assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
    cls_w = model.roi_heads.box_predictor.cls_score.weight.asnumpy()
    assert np.array_equal(cls_w[1:], base[CLS_WEIGHT])
    assert np.array_equal(model.backbone.conv1.weight.asnumpy(), base["backbone.conv1.weight"])
    assert int(model.sample_step.asnumpy()) == 0

    fresh = TinyDetector(1)
    before = fresh.roi_heads.box_predictor.cls_score.weight.asnumpy().copy()
    report = apply_surgery_to_model(fresh, path, method="remove", base_class_names=["a", "b"],
                                    target_class_names=["n"])
    assert report.missing == sorted(PREDICTOR_KEYS) and report.unexpected == []
    assert np.array_equal(fresh.roi_heads.box_predictor.cls_score.weight.asnumpy(), before)
    assert np.array_equal(fresh.backbone.conv1.weight.asnumpy(), base["backbone.conv1.weight"])

    with pytest.raises(InputError, match="the model's predictor has 3 classes but 4 target classes"):
        apply_surgery_to_model(TinyDetector(3), path, method="randinit", base_class_names=["a", "b"],
                               target_class_names=["n", "a", "b", "m"])
