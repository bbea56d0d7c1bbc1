"""The one weights-loading policy: what is an error, what is logged, mismatches as data."""
import logging

import mindspore.nn as nn
import numpy as np
import pytest

from defrcn.checkpoint import io
from defrcn.checkpoint.loader import load_weights
from defrcn.errors import InputError


class Head(nn.Cell):
    def __init__(self, classes):
        super().__init__()
        self.body = nn.Dense(4, 4)
        self.middle = nn.Dense(4, 4)
        self.cls_score = nn.Dense(4, classes + 1)

    def construct(self, x):
        return self.cls_score(self.middle(self.body(x)))


def _saved(cell, path):
    return io.save_checkpoint(cell, str(path))


def test_a_fitting_checkpoint_loads_every_value(tmp_path):
    source, target = Head(3), Head(3)
    report = load_weights(target, _saved(source, tmp_path / "a.ckpt"))
    assert report == ([], [], [])
    np.testing.assert_array_equal(target.cls_score.weight.asnumpy(), source.cls_score.weight.asnumpy())


def test_shape_mismatches_are_data_and_one_error_line(tmp_path):
    path = _saved(Head(3), tmp_path / "three.ckpt")
    report = io.load_into(Head(5), io.load_checkpoint(path))
    assert [(m.name, m.checkpoint_shape, m.model_shape) for m in report.shape_mismatch] == [
        ("cls_score.bias", (4,), (6,)), ("cls_score.weight", (4, 4), (6, 4))]
    assert str(report.shape_mismatch[1]) == "cls_score.weight: checkpoint (4, 4) vs model (6, 4)"
    with pytest.raises(InputError) as error:
        load_weights(Head(5), path)
    assert str(error.value) == f"{path}: does not fit this model: cls_score.bias: checkpoint (4,) vs model (6,) (and 1 more)"


def test_classifier_of_the_detector_names_both_class_counts(tmp_path):
    class Predictor(nn.Cell):
        def __init__(self, classes):
            super().__init__()
            self.cls_score = nn.Dense(4, classes + 1)
            self.bbox_pred = nn.Dense(4, 4 * classes)

    class Heads(nn.Cell):
        def __init__(self, classes):
            super().__init__()
            self.box_predictor = Predictor(classes)

    class Detector(nn.Cell):
        def __init__(self, classes):
            super().__init__()
            self.roi_heads = Heads(classes)

    path = _saved(Detector(6), tmp_path / "base.ckpt")
    with pytest.raises(InputError, match=r"base\.ckpt: does not fit this model: roi_heads.box_predictor.cls_score"
                                         r"\.weight: checkpoint \(7, 4\) vs model \(10, 4\) — trained for 6 "
                                         r"classes, this recipe has 9 \(and 3 more\)"):
        load_weights(Detector(9), path)


def test_another_model_is_refused_a_few_gaps_are_logged(tmp_path, caplog):
    other = _saved(nn.Dense(3, 2), tmp_path / "other.ckpt")
    with pytest.raises(InputError, match=r"other\.ckpt: lacks 6 of the model's 6 parameters .*not a checkpoint"):
        load_weights(Head(3), other)
    partial = io.load_checkpoint(_saved(Head(3), tmp_path / "full.ckpt"))
    del partial["middle.weight"], partial["middle.bias"]
    with caplog.at_level(logging.WARNING, logger="defrcn.checkpoint.loader"):
        report = load_weights(Head(3), tmp_path / "full.ckpt", params=partial)
    assert report.missing == ["middle.bias", "middle.weight"]
    assert "2 model parameter(s) not in the checkpoint keep their initial values" in caplog.text


def test_partial_weights_leave_the_rest_quietly(tmp_path, caplog):
    backbone = io.load_checkpoint(_saved(Head(3), tmp_path / "full.ckpt"))
    only_body = {k: v for k, v in backbone.items() if k.startswith("body.")}
    with caplog.at_level(logging.WARNING, logger="defrcn.checkpoint.loader"):
        report = load_weights(Head(3), "imagenet.ckpt", params=only_body, partial=True)
    assert len(report.missing) == 4 and "keep their initial values" not in caplog.text
    with pytest.raises(InputError, match="does not fit this model"):
        load_weights(Head(5), tmp_path / "full.ckpt", partial=True)


def test_the_samplers_counter_may_be_absent(tmp_path):
    class WithCounter(Head):
        def __init__(self):
            super().__init__(3)
            import mindspore as ms

            self.sample_step = ms.Parameter(ms.Tensor(np.zeros((), np.int32)), name="sample_step",
                                            requires_grad=False)

    path = _saved(Head(3), tmp_path / "no_counter.ckpt")
    assert load_weights(WithCounter(), path).missing == ["sample_step"]  # reported, not an error
