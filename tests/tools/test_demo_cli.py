"""tools/demo.py --quick: the whole pipeline through the real CLI (data, splits, base
training, surgery, fine-tuning, evaluation with and without PCB, pictures) in a minute or two;
and the demo's refusal of a folder it does not own."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from defrcn.apps.demo import STAGES, TABLE_KEYS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, "tools/demo.py", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_quick_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    result = _run("--quick", "--output-dir", out)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["seconds"]) == list(STAGES)
    assert all(value >= 0 for value in summary["seconds"].values())
    assert summary["total_seconds"] == pytest.approx(sum(summary["seconds"].values()), abs=0.5)
    assert set(summary["results"]["base"]) == {"bAP", "bAP50"}
    for key in ("fewshot", "fewshot_pcb"):
        assert set(summary["results"][key]) == set(TABLE_KEYS)
        assert all(0.0 <= value <= 100.0 for value in summary["results"][key].values())
    assert summary["iterations"] == {"base": 3, "finetune": 3} and summary["quick"] is True
    assert summary["seconds_per_step"]["base"] > 0 and summary["seconds_per_step"]["finetune"] > 0
    # the stages' own outputs, all under --output-dir
    assert (out / "data" / "fewshot" / "full_box_10shot_white_arrow_trainval.json").is_file()
    assert (out / "toy_base" / "model_reset_surgery.ckpt").is_file()
    for name in ("metrics.json", "metrics_pcb.json", "model_final.ckpt"):
        assert (out / "toy_10shot" / name).is_file()
    assert list((out / "toy_10shot" / "pcb").iterdir())  # the prototype cache stays under --output-dir
    pngs = sorted((out / "predictions").glob("*.png"))
    assert [p for p in summary["predictions"]] == [str(p) for p in pngs] and len(pngs) == 2
    for png in pngs:
        image = np.asarray(Image.open(png))
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert "10-shot fine-tune + PCB" in result.stdout and "total" in result.stdout


def test_refuses_a_folder_it_does_not_own(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = _run("--quick", "--output-dir", tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert str(tmp_path) in lines[0] and "not from the demo" in lines[0]
    assert (tmp_path / "notes.txt").read_text() == "mine"

