"""tools/parity.py: the numpy helpers behind its table (the run itself needs a PyTorch
interpreter and the original's sources, so it is not part of the test suite)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def load_tool():
    spec = importlib.util.spec_from_file_location("parity_tool", REPO / "tools" / "parity.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diff_is_relative_to_the_original_scale():
    tool = load_tool()
    d, r = tool.diff(np.array([1.0, 2.0, 4.001]), np.array([1.0, 2.0, 4.0]))
    assert np.isclose(d, 0.001) and np.isclose(r, 0.00025)
    assert tool.diff(np.zeros(0), np.zeros(0)) == (0.0, 0.0)


def test_verdict_uses_the_float64_floor():
    tool = load_tool()
    assert tool.verdict(5e-5) == "ok"
    assert tool.verdict(3e-4, floor=2e-4) == "fp32"
    assert tool.verdict(3e-4, floor=1e-4) == "DIFF"
    assert tool.verdict(3e-4) == "DIFF"


def test_match_boxes_is_one_to_one_and_class_aware():
    tool = load_tool()
    orig = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    ours = np.array([[20, 20, 30, 30.1], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    pairs = tool.match_boxes(ours, orig)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]
    # the original's first box has no box of its class left: only the second one matches
    assert [(i, j) for i, j, _ in tool.match_boxes(ours, orig, ours_cls=[0, 1, 1], orig_cls=[0, 0])] == [(1, 0)]


def test_sizes_and_scene():
    tool = load_tool()
    assert tool.parse_sizes("800x1216,800x1067")[1] == {"tag": "800x1067", "height": 800, "width": 1067}
    a, boxes = tool.synthetic_scene(48, 64, np.random.default_rng(0), 3)
    b, _ = tool.synthetic_scene(48, 64, np.random.default_rng(0), 3)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert boxes.shape == (3, 4) and (boxes[:, 2] > boxes[:, 0]).all()


def test_help():
    out = subprocess.run([sys.executable, "tools/parity.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--torch-python" in out.stdout


def test_a_bad_setting_is_refused_before_the_original_runs(tmp_path):
    out = subprocess.run([sys.executable, "tools/parity.py", "--defrcn-src", str(tmp_path), "--detectron2-src",
                          str(tmp_path), "--torch-python", sys.executable, "--work", str(tmp_path / "work"),
                          "--set", "model.res5_conv=fft"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith(
        "error: --set: model.res5_conv: 'fft' is not one of auto, direct, winograd")
    assert not (tmp_path / "work").exists()
