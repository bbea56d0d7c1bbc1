"""A small detector trained from scratch must detect the boxes of the images it saw.

Trains the toy recipe (ResNet-18 C4, 128 px, Winograd res5) for 150 steps on 8 synthetic images
through the real CLI and evaluates on those same images (here: bAP50 87; 100 with the stock res5
convolution; after 100 steps it was 72-78 or above 80 depending on the sampling stream, too close
to the bar).
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from defrcn.data.synthetic import write_synthetic_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_toy_detector_overfits_a_handful_of_images(tmp_path):
    root = tmp_path / "data"
    write_synthetic_dataset(root, train_images=8, test_images=1, size=128, seed=3)
    shutil.copy(root / "annotations/train.json", root / "annotations/test.json")
    shutil.rmtree(root / "images/test")
    shutil.copytree(root / "images/train", root / "images/test")
    overrides = [
        f"data.root={root}", "input.canvases=[[128,128]]", "input.min_size_train=128",
        "input.max_size_train=128", "input.min_size_test=128", "input.max_size_test=128",
        "input.flip_prob=0.0", "model.rpn.anchor_sizes=16,32,64,128", "solver.max_iter=150",
        "solver.steps=120", "solver.checkpoint_period=1000", "log.period=50",
    ]
    argv = [sys.executable, str(REPO / "tools/train.py"), str(REPO / "recipes/toy_base.py"),
            "--output-dir", str(tmp_path / "run")]
    for item in overrides:
        argv += ["--set", item]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=1500)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["bAP50"] >= 80.0, metrics
