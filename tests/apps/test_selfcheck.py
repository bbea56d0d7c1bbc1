"""defrcn.apps.selfcheck without MindSpore runs: the option checks, the inputs it writes, the
array and selection comparisons, the verdict of each row (OK, DEPARTS, CASCADE, FAILED), the
table and the lines after it (tests/tools/test_selfcheck_cli.py runs the tool)."""
import json

import numpy as np
import pytest

from defrcn.apps.selfcheck import (GRAD_PARAMS, LOSS_NAMES, NUM_CLASSES, Row, array_diff, check_options, compare,
                                   compare_folder, departed, make_inputs, model_spec, render, selection_diff,
                                   summary)
from defrcn.errors import InputError

ROWS = 27  # 5 feature, 4 RoI, 2 selection, 4 loss, 8 gradient, 1 update and 3 end-to-end rows


def test_array_diff_flags_non_finite_and_shape_changes():
    assert array_diff(np.array([1.0, 2.0]), np.array([1.0, 2.02]))[:2] == pytest.approx((0.02, 0.01))
    assert array_diff(np.array([1.0, np.inf]), np.array([1.0, np.inf]))[2] == ""
    assert array_diff(np.full(2, np.nan), np.full(2, np.nan)) == (0.0, 0.0, "")
    assert array_diff(np.zeros(2), np.array([0.0, 1e-3]))[1] == float("inf")  # nothing to scale by
    one_nan = array_diff(np.array([1.0, 2.0]), np.array([1.0, np.nan]))
    assert one_nan == (float("inf"), float("inf"), "1 value(s) finite on one side only (NaN/Inf)")
    assert array_diff(np.zeros(3), np.zeros(4))[2] == "shape (4,), reference (3,)"


def selection(scores=True):
    """Two images, kept boxes first: 2 in the first, 1 in the second."""
    out = dict(boxes=np.array([[[0, 0, 10, 10], [5, 5, 25, 20], [0, 0, 0, 0]],
                               [[2, 2, 30, 40], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
               valid=np.array([[1, 1, 0], [1, 0, 0]], np.float32))
    if scores:
        out.update(scores=np.array([[0.9, 0.6, 0.0], [0.8, 0.0, 0.0]], np.float32),
                   classes=np.array([[1, 3, 0], [2, 0, 0]], np.int32))
    return out


def test_the_same_selection_agrees():
    ok, box_diff, score_diff, note = selection_diff(selection(), selection(), 1e-2, True)
    assert (ok, box_diff, score_diff) == (True, 0.0, 0.0)
    assert note == "kept per image 2, 1; min IoU 1.0000; max score diff 0"


@pytest.mark.parametrize("change, fragment", [
    (lambda d: d["valid"].__setitem__((0, 1), 0.0), "kept per image 1/2, 1"),
    (lambda d: d["classes"].__setitem__((1, 0), 0), "kept per image 2, 1 (classes differ)"),
    (lambda d: d["boxes"].__setitem__((0, 0), [0, 0, 10, 12]), "min IoU 0.8333"),
    (lambda d: d["scores"].__setitem__((0, 0), 0.95), "max score diff 5.00e-02"),
])
def test_a_different_selection_departs(change, fragment):
    device = selection()
    change(device)
    ok, _, _, note = selection_diff(selection(), device, 1e-2, True)
    assert not ok and fragment in note


def records():
    """Every group's arrays as a side records them."""
    rng = np.random.default_rng(0)
    features = {key: rng.normal(size=(2, 3)) for key in
                ("res4", "rpn_affine", "roi_affine", "rpn_objectness", "rpn_deltas")}
    roi = {key: rng.normal(size=(4, 3)) for key in ("roi_align", "res5", "class_logits", "box_deltas")}
    losses = {f"loss/{name}": np.float32(rng.uniform(0.1, 1.0)) for name in LOSS_NAMES}
    updates = {f"update/{name}": rng.normal(size=3) for name, _ in GRAD_PARAMS}
    grads = {f"grad/{name}": rng.normal(size=3) for name, _ in GRAD_PARAMS}
    return dict(features=features, roi=roi, proposals=selection(scores=False), detections=selection(),
                train={**losses, **grads, **updates}, e2e_inference=selection(), e2e_train={**losses, **updates})


def statuses(device="GPU"):
    done = {group: {"state": "done"} for group in records()}
    return {"reference": {"device": "CPU", "groups": dict(done)}, "device": {"device": device, "groups": dict(done)}}


def verdicts(rows):
    return {row.stage: row.verdict for row in rows}


def test_identical_records_are_ok_everywhere():
    rows = compare(statuses(), {"reference": records(), "device": records()})
    assert len(rows) == ROWS and set(verdicts(rows).values()) == {"OK"}
    assert not departed(rows)
    assert summary(rows, "GPU", "CPU") == [f"all {ROWS} stages within tolerance: GPU computes what CPU computes."]


def test_an_isolated_stage_departs_and_so_do_the_end_to_end_rows():
    device = records()
    device["roi"]["res5"] = device["roi"]["res5"] * 1.05
    rows = compare(statuses(), {"reference": records(), "device": device})
    found = verdicts(rows)
    assert found["res5 pooled (given boxes)"] == "DEPARTS" and found["ROIAlign 7x7 (given boxes)"] == "OK"
    assert found["detections, whole detector"] == "OK"  # equal records stay OK
    device["e2e_train"]["loss/loss_cls"] = device["e2e_train"]["loss/loss_cls"] * 2
    found = verdicts(compare(statuses(), {"reference": records(), "device": device}))
    assert found["train step losses, whole detector"] == "DEPARTS"  # not a cascade: a stage departs
    assert departed(rows)


def test_end_to_end_differences_alone_are_a_cascade():
    device = records()
    device["e2e_inference"]["valid"][1, 0] = 0.0
    rows = compare(statuses(), {"reference": records(), "device": device})
    assert verdicts(rows)["detections, whole detector"] == "CASCADE"
    assert not departed(rows)
    lines = summary(rows, "GPU", "CPU")
    assert lines[0].startswith("all 27 stages within tolerance")
    assert lines[1].startswith("1 end-to-end row(s) differ while every stage agrees on the same inputs")


def test_a_missing_group_fails_with_the_reason():
    device = records()
    del device["detections"], device["e2e_train"]
    status = statuses()
    status["device"]["groups"].update(detections={"state": "error", "error": "RuntimeError: NMS failed. More text"},
                                      e2e_train={"state": "started"})
    rows = compare(status, {"reference": records(), "device": device})
    failed = {row.stage: row.note for row in rows if row.verdict == "FAILED"}
    assert failed == {"detections (given predictor outputs)": "GPU: RuntimeError: NMS failed",
                      "train step losses, whole detector": "GPU: crashed in this stage",
                      "SGD update, whole detector": "GPU: crashed in this stage"}
    lines = summary(rows, "GPU", "CPU")
    assert lines[0] == ("first departure: detections (given predictor outputs) fails on GPU -- look at Softmax, "
                        "TopK or per-class NMS in the post-processing on this device.")
    assert lines[1].startswith("2 later row(s) also depart")


@pytest.mark.parametrize("device, fp32, hint", [("GPU", False, True), ("GPU", True, False), ("CPU", False, False)])
def test_the_reduced_precision_hint_only_where_it_can_apply(device, fp32, hint):
    rows = [Row("res4", "1", "2e-02", "rel 1e-02", "DEPARTS", hint="the trunk")]
    lines = summary(rows, device, "CPU", fp32=fp32)
    assert lines[0] == f"first departure: res4 departs on {device} -- look at the trunk on this device."
    assert any("rerun with --fp32" in line for line in lines) is hint


def test_render_aligns_the_columns_and_keeps_the_note_last():
    rows = [Row("a", "1.00e-03", "2.00e-04", "rel 1e-02", "OK", "largest: x"),
            Row("longer stage", "-", "-", "-", "FAILED", "")]
    assert render(rows, "header").splitlines() == [
        "header",
        "stage         max abs diff  max rel diff  tolerance  result  note",
        "a             1.00e-03      2.00e-04      rel 1e-02  OK      largest: x",
        "longer stage  -             -             -          FAILED",
    ]


def test_compare_folder_needs_records_and_reports_a_side_that_could_not_start(tmp_path):
    with pytest.raises(InputError, match="no self-check records here"):
        compare_folder(str(tmp_path))
    spec = dict(model=model_spec(18), device="GPU", against="CPU", size=128, mode="graph", fp32=False)
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "status.json").write_text(json.dumps(
        {"device": "GPU", "setup_error": "RuntimeError: Unsupported device target GPU. Details follow"}))
    text, bad = compare_folder(str(tmp_path), kept=False)
    lines = text.splitlines()
    assert bad and len(lines) == 3
    assert lines[0] == ("self-check: GPU against CPU: DeFRCN R-18 C4 (4 classes), 2 images on a 128x128 canvas, "
                        "graph mode, MindSpore ?")
    assert lines[1] == "the GPU side could not start: RuntimeError: Unsupported device target GPU"
    assert "rerun with --keep DIR" in lines[2] and "mindspore.set_device('GPU')" in lines[2]


@pytest.mark.parametrize("options, fragment", [
    (dict(device="TPU"), "--device: expected one of CPU, GPU, Ascend, got 'TPU'"),
    (dict(against="gpu"), "--against: expected one of CPU, GPU, Ascend, got 'gpu'"),
    (dict(mode="eager"), "--mode: expected one of graph, pynative, got 'eager'"),
    (dict(depth=34), "--depth: expected one of 18, 50, 101, got 34"),
    (dict(size=100), "--size: a multiple of 32 from 64 up, got 100"),
    (dict(size=32), "--size: a multiple of 32 from 64 up, got 32"),
    (dict(rtol=0.0), "--rtol: must be > 0, got 0.0"),
    (dict(timeout=0), "--timeout: must be > 0, got 0"),
])
def test_bad_options_are_input_errors(options, fragment):
    good = dict(device="GPU", against="CPU", depth=18, size=128, mode="graph", rtol=1e-2, timeout=1)
    with pytest.raises(InputError) as info:
        check_options(**{**good, **options})
    assert str(info.value) == fragment
    assert check_options(**good) is None


def test_the_inputs_have_no_ties_and_a_padded_second_image():
    inputs = make_inputs(model_spec(18), 128, seed=0)
    assert inputs["images"].shape == (2, 3, 128, 128)
    np.testing.assert_array_equal(inputs["image_sizes"], [[128, 128], [112, 96]])
    assert not inputs["images"][1, :, 112:].any() and not inputs["images"][1, :, :, 96:].any()
    objectness = inputs["given_objectness"]
    assert objectness.shape == (2, 15, 8, 8) and len(np.unique(objectness)) == objectness.size
    assert len(np.unique(inputs["given_logits"])) == inputs["given_logits"].size
    assert inputs["given_logits"].shape == (48, NUM_CLASSES + 1)
    assert inputs["gt_valid"].sum(axis=1).tolist() == [3, 3] and (inputs["gt_classes"] < NUM_CLASSES).all()
    assert inputs["train_proposal_valid"][:, -5:].sum() == 0 and inputs["train_proposals"].shape == (2, 64, 4)
    again = make_inputs(model_spec(18), 128, seed=0)
    assert all(np.array_equal(value, again[key]) for key, value in inputs.items())
    assert model_spec(50)["depth"] == 50 and model_spec(50)["num_classes"] == NUM_CLASSES
