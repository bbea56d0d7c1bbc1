"""Training that cannot go on: a full disk, a checkpoint folder that turns read-only, a
loss that blows up. Each ends with one `error:` line (exit 1: the input was fine, the run
failed), no traceback, no half-written file, and `last_checkpoint` naming an intact,
finite state.

Disk full: the run folder is a tmpfs sized for one checkpoint (~142 MB for the toy R-18 with
AdamW state), so the second periodic checkpoint hits ENOSPC. Unwritable: `checkpoints/` is
bind-mounted read-only after the first checkpoint (as root, chmod does not stop writes).
Both need `mount` (root in this sandbox); they are skipped where it is not allowed.
"""
import subprocess
import uuid

import numpy as np
import pytest

pytestmark = pytest.mark.slow
ONE_CHECKPOINT_MB = 200  # tmpfs size: one toy checkpoint (~142 MB) + logs, not two


def _mount(*args):
    return subprocess.run(["mount", *args], capture_output=True, text=True).returncode == 0


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _assert_stopped_cleanly(tools, result, out, *fragments):
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert (out / "last_checkpoint").read_text().strip() == "checkpoints/model_0000002.ckpt"
    finals = tools.assert_all_checkpoints_readable(out)
    assert [p.name for p in finals] == ["model_0000002.ckpt"]
    assert not [p for p in tools.checkpoint_files(out) if p.name.startswith(".")], "temp file left"


def test_disk_full_stops_with_one_line_and_keeps_the_previous_checkpoint(tools, tmp_path):
    out = tmp_path / "small_disk"
    out.mkdir()
    if not _mount("-t", "tmpfs", "-o", f"size={ONE_CHECKPOINT_MB}m", f"reliability-{uuid.uuid4().hex[:6]}",
                  str(out)):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        result = tools.train(out, "--no-eval")
        _assert_stopped_cleanly(tools, result, out, "model_0000004.ckpt: cannot write",
                                "No space left on device", "CheckpointWriteError")
    finally:
        _umount(out)


def test_checkpoint_folder_turning_read_only_stops_with_one_line(tools, tmp_path):
    out = tmp_path / "read_only"
    checkpoints = out / "checkpoints"
    run = tools.start_train(out, "--no-eval")
    mounted = False
    try:
        tools.wait_for(lambda: (out / "last_checkpoint").exists(), 240, "the first checkpoint", run)
        mounted = _mount("--bind", str(checkpoints), str(checkpoints)) and _mount(
            "-o", "remount,bind,ro", str(checkpoints))
        if not mounted:
            pytest.skip("cannot bind-mount read-only here (needs root)")
        run.wait(timeout=240)
    finally:
        if run.poll() is None:
            tools.kill_group(run)
        if mounted:
            _umount(checkpoints)
    result = subprocess.CompletedProcess(run.args, run.returncode, "", run.stderr_path.read_text())
    _assert_stopped_cleanly(tools, result, out, "model_0000004.ckpt: cannot write", "Read-only file system")


def test_absurd_learning_rate_stops_at_the_first_non_finite_loss(tools, tmp_path):
    out = tmp_path / "nan"
    result = tools.train(out, "--no-eval", "--set", "solver.base_lr=1e6", "--set", "solver.warmup_iters=0",
                         "--set", "solver.checkpoint_period=1")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = _error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    message = errors[0]
    print(message)
    assert "FloatingPointError" in message and "at iteration" in message, message
    step = int(message.split("at iteration ")[1].split()[0])
    logged = tools.logged_iterations(out)
    if "refusing to save a non-finite state" in message:
        # the step's losses were finite, its update was not: the checkpoint of that step is refused
        assert step == max(logged) and "parameter " in message, (message, logged)
    else:  # the NaN guard: a non-finite loss, never logged
        assert step == (max(logged) if logged else 0) + 1, (message, logged)  # within one period (1 here)
        assert any(name in message for name in ("total_loss", "loss_rpn_cls", "loss_rpn_loc", "loss_cls",
                                                "loss_box_reg")), message
    pointer = (out / "last_checkpoint").read_text().strip() if (out / "last_checkpoint").exists() else None
    if step > 1:
        assert pointer == f"checkpoints/model_{step - 1:07d}.ckpt" and pointer in message, message
        values = tools.parameters(out / pointer)
        floats = [n for n, v in values.items() if not n.startswith("extra.")
                  and np.issubdtype(v.dtype, np.floating)]
        assert floats and all(np.isfinite(values[n]).all() for n in floats)
    else:
        assert pointer is None and "last good checkpoint: none" in message
