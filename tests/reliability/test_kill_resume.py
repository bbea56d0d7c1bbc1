"""kill -9 the trainer at three points and --resume: the run ends bit-identical to an
uninterrupted one, no checkpoint on disk is ever unreadable, a damaged newest checkpoint
is reported in one line and the previous good one is used; two runs never share a folder.

One chain of real `tools/train.py` runs (toy recipe, 6 iterations, checkpoint every 2,
evaluation at 4 and at the end), recorded once by the `chain` fixture:
  1. started; a second run on the same folder is refused; kill -9 from outside once
     iteration 3 is logged (lands in step 4);
  2. --resume (takes over the dead run's lock), DEFRCN_FAULT=checkpoint_write:after_temp:
     dies while writing model_0000004 (bytes in temp files, nothing renamed);
  3. --resume, DEFRCN_FAULT=eval:start: saves model_0000004, dies as evaluation starts;
  4. model_0000004.ckpt truncated to half, --resume: one warning line, resumes from
     model_0000002 and finishes.
"""
import signal

import pytest

pytestmark = pytest.mark.slow
EVAL = ["--set", "test.eval_period=4"]


def _pointer(out):
    return (out / "last_checkpoint").read_text().strip()


@pytest.fixture(scope="module")
def chain(tools, tmp_path_factory):
    root = tmp_path_factory.mktemp("kill_resume")
    rec = {}
    reference = root / "reference"
    result = tools.train(reference, *EVAL)
    assert result.returncode == 0, result.stderr
    rec["reference"] = reference

    out = root / "run"
    first = tools.start_train(out, *EVAL)
    try:
        tools.wait_for(lambda: (out / ".lock").exists(), 120, "the lock file", first)
        rec["second"] = tools.train(out, *EVAL, timeout=120)
        tools.wait_for(lambda: 3 in tools.logged_iterations(out), 240, "iteration 3 in metrics.jsonl", first)
        rec["mid_step_alive"] = first.poll() is None
        first.send_signal(signal.SIGKILL)  # kill -9 the trainer itself
    finally:
        tools.kill_group(first)
    rec["after_mid_step"] = dict(pointer=_pointer(out), files=tools.checkpoint_files(out),
                                 readable=tools.assert_all_checkpoints_readable(out),
                                 lock=(out / ".lock").exists())

    rec["write"] = tools.train(out, "--resume", *EVAL, fault="checkpoint_write:after_temp")
    rec["after_write"] = dict(pointer=_pointer(out), files=tools.checkpoint_files(out),
                              readable=tools.assert_all_checkpoints_readable(out))

    rec["eval"] = tools.train(out, "--resume", *EVAL, fault="eval:start")
    rec["after_eval"] = dict(pointer=_pointer(out), readable=tools.assert_all_checkpoints_readable(out))

    newest = out / "checkpoints" / "model_0000004.ckpt"
    data = newest.read_bytes()
    newest.chmod(0o644)
    newest.write_bytes(data[: len(data) // 2])
    rec["corrupt"] = tools.train(out, "--resume", *EVAL)
    rec["out"] = out
    return rec


def test_second_run_on_the_same_folder_is_refused_in_one_line(chain):
    result = chain["second"]
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "another run (pid" in lines[0] and str(chain["out"]) in lines[0]


def test_kill_mid_step_leaves_only_readable_checkpoints(chain):
    assert chain["mid_step_alive"], "the trainer had ended before the kill"
    state = chain["after_mid_step"]
    assert state["pointer"] == "checkpoints/model_0000002.ckpt"
    assert [p.name for p in state["readable"]] == ["model_0000002.ckpt"]
    assert state["lock"], "a killed run leaves its lock behind (taken over below)"


def test_stale_lock_of_the_killed_run_is_taken_over(chain):
    assert "removing stale lock" in chain["write"].stderr


def test_kill_during_checkpoint_write_keeps_the_previous_state(chain):
    result = chain["write"]
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "resumed from" in result.stderr and "model_0000002.ckpt at iteration 2" in result.stderr
    state = chain["after_write"]
    assert state["pointer"] == "checkpoints/model_0000002.ckpt"
    assert [p.name for p in state["readable"]] == ["model_0000002.ckpt"]
    temps = [p.name for p in state["files"] if p.name.startswith(".")]
    assert temps and all(".tmp-" in name for name in temps), state["files"]  # died before rename


def test_kill_at_eval_start_after_the_checkpoint(chain):
    result = chain["eval"]
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert chain["after_eval"]["pointer"] == "checkpoints/model_0000004.ckpt"
    assert "model_0000004.ckpt" in [p.name for p in chain["after_eval"]["readable"]]


def test_truncated_newest_checkpoint_is_reported_once_and_skipped(chain, tools):
    result = chain["corrupt"]
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    reports = [line for line in result.stderr.splitlines() if "unusable" in line]
    assert len(reports) == 1, result.stderr
    assert "model_0000004.ckpt" in reports[0] and "sha256 mismatch" in reports[0]
    assert "resuming from" in reports[0] and "model_0000002.ckpt" in reports[0]
    assert "at iteration 2" in result.stderr
    assert _pointer(chain["out"]) == "model_final.ckpt"
    tools.assert_all_checkpoints_readable(chain["out"])
    assert not [p for p in tools.checkpoint_files(chain["out"]) if p.name.startswith(".")]


def test_resumed_run_is_bit_identical_to_the_uninterrupted_one(chain, tools):
    worst, differing = tools.largest_difference(chain["reference"] / "model_final.ckpt",
                                          chain["out"] / "model_final.ckpt")
    print(f"largest parameter difference after 4 interruptions: {worst}")
    assert differing == [] and worst == 0.0


def test_resumed_run_logs_each_iteration_once_as_the_uninterrupted_one(chain, tools):
    # the killed runs' records past their resume point are dropped when the next run resumes
    assert tools.logged_iterations(chain["out"]) == tools.logged_iterations(chain["reference"])
