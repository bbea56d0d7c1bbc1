"""tools/selfcheck.py: CPU against CPU through the real tool (two side processes), then the
comparison of its kept records with one side perturbed (`--compare`, no MindSpore run)."""
import ctypes.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS = 27


def selfcheck(*args, timeout=600):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, "tools/selfcheck.py", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def table(stdout):
    """{stage: (max abs diff, max rel diff, result)} of the printed table."""
    lines = stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("stage "))
    starts = [lines[head].index(col) for col in ("max abs diff", "max rel diff", "tolerance", "result", "note")]
    rows = {}
    for line in lines[head + 1:head + 1 + ROWS]:
        cut = [line[:starts[0]]] + [line[a:b] for a, b in zip(starts, starts[1:])]
        cells = [c.strip() for c in cut]
        rows[cells[0]] = (cells[1], cells[2], cells[4])
    return rows


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """One CPU-against-CPU run (PyNative: no graph compilation) with its records kept."""
    folder = tmp_path_factory.mktemp("selfcheck") / "records"
    result = selfcheck("--device", "CPU", "--mode", "pynative", "--keep", folder)
    return result, folder


def perturbed_copy(kept_folder, tmp_path):
    """The kept records without the weights (the comparison reads only spec.json and the sides)."""
    copy = tmp_path / "records"
    copy.mkdir()
    shutil.copy(kept_folder / "spec.json", copy)
    for side in ("reference", "device"):
        shutil.copytree(kept_folder / side, copy / side)
    return copy


def edit(folder, group, change):
    path = folder / "device" / f"{group}.npz"
    with np.load(path) as data:
        arrays = {k: data[k].copy() for k in data.files}
    change(arrays)
    np.savez(path, **arrays)


def test_cpu_against_cpu_agrees_everywhere(kept):
    result, folder = kept
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert out.startswith("self-check: CPU against CPU: DeFRCN R-18 C4 (4 classes), 2 images on a 128x128 canvas, "
                          "pynative mode, MindSpore 2.8.0")
    rows = table(out)
    assert len(rows) == ROWS and all(verdict == "OK" for _, _, verdict in rows.values()), out
    for stage in ("backbone res4", "RPN head objectness", "ROIAlign 7x7 (given boxes)", "grad stem conv",
                  "train loss_cls (given proposals)", "SGD update (given proposals)", "SGD update, whole detector"):
        assert rows[stage][:2] == ("0", "0"), (stage, rows[stage])
    assert rows["RPN proposals (given head outputs)"][0] == "0 px"
    assert "kept per image 32, 32; min IoU 1.0000" in out
    assert f"all {ROWS} stages within tolerance: CPU computes what CPU computes." in out
    assert "[selfcheck] running CPU and CPU sides (pynative mode)" in result.stderr
    status = json.loads((folder / "device" / "status.json").read_text())
    assert status["device"] == "CPU" and all(g["state"] == "done" for g in status["groups"].values())


def test_a_perturbed_stage_is_the_first_departure(kept, tmp_path):
    folder = perturbed_copy(kept[1], tmp_path)
    edit(folder, "roi", lambda a: a.__setitem__("class_logits", a["class_logits"] * 1.05))
    result = selfcheck("--compare", folder)
    assert result.returncode == 1, result.stderr
    rows = table(result.stdout)
    assert rows["class logits (given boxes)"][2] == "DEPARTS"
    assert float(rows["class logits (given boxes)"][1]) == pytest.approx(0.05, rel=1e-3)
    assert [s for s, (_, _, v) in rows.items() if v != "OK"] == ["class logits (given boxes)"]
    assert ("first departure: class logits (given boxes) departs on CPU -- look at the box predictor's Dense "
            "(MatMul) on this device.") in result.stdout
    # a looser tolerance lets it pass
    assert selfcheck("--compare", folder, "--rtol", "0.1").returncode == 0
    # on a GPU (TF32 convolutions unless --fp32) the summary points at --fp32
    spec = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps(dict(spec, device="GPU")))
    result = selfcheck("--compare", folder)
    assert result.stdout.splitlines()[0].startswith("self-check: GPU against CPU")
    assert "can be TF32 / HF32 / float16 rounding: rerun with --fp32" in result.stdout


def test_a_lost_proposal_departs_and_later_rows_are_counted(kept, tmp_path):
    folder = perturbed_copy(kept[1], tmp_path)
    edit(folder, "proposals", lambda a: a["valid"].__setitem__((1, 7), 0.0))
    edit(folder, "train", lambda a: a.__setitem__("grad/backbone.conv1.weight",
                                                  a["grad/backbone.conv1.weight"] + 1.0))
    result = selfcheck("--compare", folder)
    assert result.returncode == 1
    rows = table(result.stdout)
    assert rows["RPN proposals (given head outputs)"][2] == "DEPARTS"
    assert rows["grad stem conv"][2] == "DEPARTS"
    assert "kept per image 32, 31/32" in result.stdout
    assert "first departure: RPN proposals (given head outputs) departs on CPU -- look at TopK, box decoding " \
           "(Exp) or NMS in the RPN on this device." in result.stdout
    assert "1 later row(s) also depart" in result.stdout


def test_end_to_end_differences_alone_are_a_cascade(kept, tmp_path):
    folder = perturbed_copy(kept[1], tmp_path)
    edit(folder, "e2e_inference", lambda a: a["valid"].__setitem__((0, 19), 0.0))
    edit(folder, "e2e_train", lambda a: a.__setitem__("loss/loss_cls", a["loss/loss_cls"] * 1.1))
    result = selfcheck("--compare", folder)
    assert result.returncode == 0, result.stdout
    rows = table(result.stdout)
    assert rows["detections, whole detector"][2] == "CASCADE"
    assert rows["train step losses, whole detector"][2] == "CASCADE"
    assert "2 end-to-end row(s) differ while every stage agrees on the same inputs" in result.stdout


def test_a_stage_that_fails_on_the_device_is_reported(kept, tmp_path):
    folder = perturbed_copy(kept[1], tmp_path)
    status_path = folder / "device" / "status.json"
    status = json.loads(status_path.read_text())
    status["groups"]["detections"] = {"state": "error", "error": "RuntimeError: NMSWithMask is not supported"}
    status["groups"]["e2e_train"] = {"state": "started"}
    status_path.write_text(json.dumps(status))
    result = selfcheck("--compare", folder)
    assert result.returncode == 1
    rows = table(result.stdout)
    assert rows["detections (given predictor outputs)"][2] == "FAILED"
    assert rows["SGD update, whole detector"][2] == "FAILED"
    assert "CPU: RuntimeError: NMSWithMask is not supported" in result.stdout
    assert "CPU: crashed in this stage" in result.stdout
    assert "first departure: detections (given predictor outputs) fails on CPU" in result.stdout


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="a GPU is present: the GPU side would run")
def test_a_device_that_cannot_start_stops_both_sides_quickly(tmp_path):
    result = selfcheck("--device", "GPU", "--mode", "pynative", "--keep", tmp_path / "records", timeout=120)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("self-check: GPU against CPU")
    assert lines[1] == "the GPU side could not start: RuntimeError: Unsupported device target GPU"
    assert "mindspore.run_check()" in lines[2] and "stage" not in result.stdout
    exits = {side: json.loads((tmp_path / "records" / side / "exit.json").read_text())["code"]
             for side in ("reference", "device")}
    assert exits == {"device": 1, "reference": "stopped: the GPU side could not start"}


@pytest.mark.parametrize("args, fragment", [
    (("--device", "TPU"), "'TPU' is not one of 'CPU', 'GPU', 'Ascend'"),
    (("--device", "CPU", "--size", "100"), "--size: a multiple of 32"),
    (("--device", "CPU", "--rtol", "0"), "--rtol: must be > 0"),
    ((), "give --device CPU|GPU|Ascend"),
    (("--compare", "/nonexistent/selfcheck"), "spec.json missing"),
])
def test_bad_options_are_one_line_errors(args, fragment, one_line_error):
    one_line_error(selfcheck(*args, timeout=120), fragment)

