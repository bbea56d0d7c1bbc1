"""tools/train.py with solver.amp_level / loss_scale and solver.dataset_sink on CPU: mixed
precision trains the toy recipe with finite losses and checkpoints the loss scale; the sink
falls back in one line and trains exactly as without it; bad settings are one line (exit 2)."""
import json
from pathlib import Path

import numpy as np
import pytest

AMP_ITERS = 4


def _arrays(path):
    import mindspore as ms

    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()
            if not isinstance(value, str)}


@pytest.mark.slow
def test_amp_o2_trains_the_toy_recipe_and_checkpoints_the_scale(toy_tools, tmp_path):
    out = tmp_path / "run"
    result = toy_tools.run("train", "recipes/toy_base.py", "--output-dir", out, "--no-eval",
                           *toy_tools.sets(f"solver.max_iter={AMP_ITERS}", "solver.steps=[3]",
                                           "solver.warmup_iters=1", "solver.checkpoint_period=2",
                                           "solver.amp_level=O2"))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows] == list(range(1, AMP_ITERS + 1))
    assert all(np.isfinite(r[name]) for r in rows for name in r)
    final = _arrays(out / "model_final.ckpt")
    scale = float(final["train_step.loss_scale"])
    assert scale >= 1.0 and np.log2(scale) == int(np.log2(scale))  # 2**16 halved per overflow
    assert "train_step.loss_scale_counter" in final
    assert final["backbone.conv1.weight"].dtype == np.float32  # float32 master weights
    assert "solver.amp_level=O2 on CPU" in result.stderr


@pytest.mark.slow
def test_dataset_sink_on_cpu_falls_back_and_trains_the_same(toy_tools, toy_base_run, tmp_path):
    out = tmp_path / "run"
    result = toy_tools.run("train", *toy_tools.base_train_args(out), "--set", "solver.dataset_sink=true",
                           cache="toy_base")  # the same graph as the base run
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if "solver.dataset_sink" in line]
    assert len(lines) == 1 and "MindSpore's CPU backend has no data sink mode; training without it" in lines[0]
    expected, got = _arrays(toy_base_run / "model_final.ckpt"), _arrays(out / "model_final.ckpt")
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert np.array_equal(got[name], value, equal_nan=np.issubdtype(value.dtype, np.floating)), name
    logged = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 13))


@pytest.mark.parametrize("setting, fragment", [
    ("solver.amp_level=O5", "solver.amp_level: expected one of O0, O1, O2, O3, got 'O5'"),
    ("solver.loss_scale=huge", "solver.loss_scale: expected 'dynamic' or a number >= 1"),
])
def test_bad_amp_settings_are_one_line(toy_tools, tmp_path, one_line_error, setting, fragment):
    extra = ["solver.amp_level=O2"] if setting.startswith("solver.loss_scale") else []
    result = toy_tools.run("train", "recipes/toy_base.py", "--output-dir", tmp_path / "run",
                           *toy_tools.sets(*extra, setting))
    one_line_error(result, fragment)
    assert not (tmp_path / "run").exists()


def test_sink_with_two_canvases_is_one_line(toy_tools, tmp_path, one_line_error):
    result = toy_tools.run("train", "recipes/toy_base.py", "--output-dir", tmp_path / "run",
                           *toy_tools.sets("solver.dataset_sink=true", "input.canvases=[[128,160],[160,128]]"))
    one_line_error(result, "solver.dataset_sink: a sink carries one input shape", "[[160,160]]")
    assert not Path(tmp_path / "run").exists()
