"""tools/train.py through the real CLI: a toy training whose loss falls, its TensorBoard
events, kill -9 and --resume ending bit-identical, and one-line errors for bad input.
(msrun with 2 CPU workers: tests/reliability/test_msrun_kill_resume.py; the effective
schedule per device count: tests/engine/test_schedule.py.)"""
import json
import time
from pathlib import Path

import numpy as np
import pytest

from defrcn.utils.tb_events import read_events, scalars

LOSS_NAMES = ("total_loss", "loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
BASE_ITERS, HALF = 12, 6  # tests/conftest.py TOY_BASE: 12 steps, a checkpoint at 6


def _logged(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _checkpoint_arrays(path):
    import mindspore as ms

    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()
            if not isinstance(value, str)}


def test_toy_training_from_the_cli_writes_the_run_folder_and_its_loss_falls(toy_base_run):
    run = toy_base_run
    for name in ("config.json", "log.txt", "metrics.jsonl", "model_final.ckpt", "last_checkpoint",
                 f"checkpoints/model_{HALF:07d}.ckpt"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["solver"]["max_iter"] == BASE_ITERS and config["schedule"]["max_iter"] == BASE_ITERS
    rows = _logged(run)
    assert [r["iter"] for r in rows] == list(range(1, BASE_ITERS + 1))
    losses = [r["total_loss"] for r in rows]
    assert all(np.isfinite(losses))
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.8 * first, losses


def test_tensorboard_events_hold_the_logged_losses(toy_base_run):
    found = scalars(read_events(toy_base_run))
    rows = _logged(toy_base_run)
    for name in LOSS_NAMES:
        tag = f"loss/{name}"
        assert [step for step, _ in found[tag]] == [r["iter"] for r in rows], tag
        np.testing.assert_allclose([v for _, v in found[tag]], [r[name] for r in rows], rtol=1e-5)
    assert [step for step, _ in found["lr"]] == [r["iter"] for r in rows]


@pytest.mark.slow
def test_kill_minus_9_then_resume_ends_bit_identical(toy_tools, toy_base_run, tmp_path):
    out = tmp_path / "run"
    process = toy_tools.start("train", *toy_tools.base_train_args(out), log=tmp_path / "killed.log",
                              cache="toy_base")
    pointer = out / "last_checkpoint"
    try:
        deadline = time.monotonic() + 600
        while not (pointer.exists() and pointer.read_text().strip().endswith(f"model_{HALF:07d}.ckpt")):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint at the half-way iteration"
            time.sleep(0.05)
    finally:
        toy_tools.kill(process)
    assert not (out / "model_final.ckpt").exists(), "the run ended before it was killed"

    resumed = toy_tools.run("train", *toy_tools.base_train_args(out, "--resume"), cache="toy_base")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at iteration {HALF}" in resumed.stderr + resumed.stdout
    assert [r["iter"] for r in _logged(out)][-1] == BASE_ITERS
    reference = _checkpoint_arrays(toy_base_run / "model_final.ckpt")
    result = _checkpoint_arrays(out / "model_final.ckpt")
    assert sorted(result) == sorted(reference)
    differing = {name: float(np.nanmax(np.abs(result[name].astype(np.float64) - reference[name])))
                 for name in reference if not _identical(result[name], reference[name])}
    assert not differing, f"{len(differing)} entries differ, max |diff| {max(differing.values())}: " \
                          f"{sorted(differing)[:5]}"


def test_training_at_mindspores_default_memory_setting_ends_bit_identical(toy_tools, toy_base_run, tmp_path):
    """tools/train.py plans the graph's memory at compile time (O1); with MindSpore's default
    (O0) set before it runs, the same run ends in the same weights and the same losses."""
    out = tmp_path / "run"
    result = toy_tools.run("train", *toy_tools.base_train_args(out), memory_level="O0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "memory_optimize_level 0"
    assert [r["total_loss"] for r in _logged(out)] == [r["total_loss"] for r in _logged(toy_base_run)]
    reference = _checkpoint_arrays(toy_base_run / "model_final.ckpt")
    result = _checkpoint_arrays(out / "model_final.ckpt")
    assert sorted(result) == sorted(reference)
    assert all(_identical(result[name], reference[name]) for name in reference)


def test_training_plans_the_graph_memory(toy_base_run):
    """Through tools/train.py as a user runs it (the session's toy base run, no memory setting
    made before the tool): the memory optimize level in force is O1."""
    stdout = (toy_base_run.parent / "train.stdout").read_text()
    assert stdout.strip().splitlines()[-1] == "memory_optimize_level 1"


def _identical(a, b):
    """Bit-identical values; NaN equals NaN (e.g. the stored python `random` gauss slot when empty)."""
    floating = np.issubdtype(a.dtype, np.floating)
    return a.dtype == b.dtype and np.array_equal(a, b, equal_nan=floating)


def _train(toy_tools, *args, timeout=300):
    return toy_tools.run("train", *map(str, args), timeout=timeout)


def test_missing_recipe_is_one_line(toy_tools, tmp_path, one_line_error):
    result = _train(toy_tools, tmp_path / "nope.py", "--output-dir", tmp_path / "out")
    one_line_error(result, "nope.py")


def test_recipe_with_a_syntax_error_is_one_line(toy_tools, tmp_path, one_line_error):
    recipe = tmp_path / "broken.py"
    recipe.write_text("from defrcn.recipes.common.base import base_cfg\ncfg = base_cfg('toy'\n")
    result = _train(toy_tools, recipe, "--output-dir", tmp_path / "out")
    one_line_error(result, "broken.py")


def test_unknown_set_key_is_one_line(toy_tools, tmp_path, one_line_error):
    result = _train(toy_tools, "recipes/toy_base.py", "--output-dir", tmp_path / "out",
                    "--set", "solver.max_iters=3")
    one_line_error(result, "solver.max_iters", "solver.max_iter")


def test_wrongly_typed_value_is_one_line(toy_tools, tmp_path, one_line_error):
    result = _train(toy_tools, "recipes/toy_base.py", "--output-dir", tmp_path / "out",
                    "--set", "solver.max_iter=many")
    one_line_error(result, "solver.max_iter", "many")
    assert not (tmp_path / "out").exists()


def test_second_run_into_a_folder_with_checkpoints_is_refused(toy_tools, toy_base_run, one_line_error):
    before = sorted(p.name for p in toy_base_run.rglob("*"))
    result = _train(toy_tools, *toy_tools.base_train_args(toy_base_run))
    one_line_error(result, str(toy_base_run), "--resume")
    assert sorted(p.name for p in toy_base_run.rglob("*")) == before
