"""A `--seeds 0-2` fine-tune sweep killed in the middle of seed 1 and started again with the
same command: seed 0 is skipped (its model_final.ckpt untouched), seed 1 resumes from its
newest checkpoint, seed 2 trains, and every seed's model_final.ckpt is bit-identical to an
uninterrupted sweep's; in one process and under `msrun` with 2 CPU workers.

The recipe is the toy 1-shot fine-tune with its classifier dropout (0.8) on, from the
session's toy base run (model.base_weights: the trainer applies the randinit surgery).
Each seed trains 6 iterations with a checkpoint every 2; the sweep is killed (SIGKILL of
its process group, and under msrun of each worker's too) once seed 1 has logged iteration 3,
during step 4: seed 1's model_0000002 is on disk, its model_final is not. A worker's death
alone stopping msrun is tests/reliability/test_msrun_kill_resume.py's subject (it costs ~30 s).
"""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RECIPE = "recipes/toy_1shot.py"
SEEDS = (0, 1, 2)
# 6 iterations, a checkpoint every 2, on one device at 2 images per step; msrun's 2 workers
# see 4 images per step, so the written schedule is doubled there (rescaled back to 6 / 2).
SCHEDULE = {1: ("solver.max_iter=6", "solver.steps=[5]", "solver.checkpoint_period=2"),
            2: ("solver.max_iter=12", "solver.steps=[10]", "solver.checkpoint_period=4")}
TIMEOUT = 900  # s for one whole sweep (three compiles at most, the rest from the cache)
pytestmark = pytest.mark.slow


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Sweep:
    """Starts `tools/train.py RECIPE --seeds 0-2` into a folder, alone or under msrun."""

    def __init__(self, toy_tools, base_weights, workers):
        self.toy_tools, self.workers = toy_tools, workers
        self.sets = toy_tools.sets(*SCHEDULE[workers], f"model.base_weights={base_weights}")
        self.cache = f"seeds_resume_{workers}"  # one compile cache per graph (tests/conftest.py)

    def command(self, out):
        train = ["tools/train.py", RECIPE, "--seeds", "0-2", "--output-dir", str(out), "--no-eval",
                 *self.sets]
        if self.workers == 1:
            return [sys.executable, *train]
        return ["msrun", f"--worker_num={self.workers}", f"--local_worker_num={self.workers}",
                f"--master_port={_free_port()}", "--join=True", f"--log_dir={out}.msrun_logs", *train]

    def start(self, out, log):
        """Popen in its own session, stdout and stderr together into the file `log`."""
        with open(log, "w") as handle:
            return subprocess.Popen(self.command(out), cwd=REPO, env=self.toy_tools.env(self.cache),
                                    stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def run(self, out, log):
        """The whole sweep: (return code, output)."""
        process = self.start(out, log)
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sweep into {out} still running after {TIMEOUT} s:\n{log.read_text()[-3000:]}")
        finally:
            kill_job(process, out)
        return process.returncode, log.read_text()


def worker_pids(output_dir):
    """pids of the msrun workers training into output_dir (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read().split(b"\0")
        except OSError:
            continue
        if str(output_dir).encode() in cmdline and b"MS_ROLE=MS_WORKER" in environ:
            found.append(int(entry))
    return found


def kill_job(process, output_dir):
    """SIGKILL the sweep's process group and, under msrun, each worker's (msrun starts every
    worker in a session of its own, so killing the launcher's group alone leaves them)."""
    for group in [process.pid, *worker_pids(output_dir)]:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if process.poll() is None:
        process.wait(timeout=60)


def logged_iterations(run_dir):
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line)["iter"])
        except (ValueError, KeyError):
            pass  # a line cut by the kill
    return found


def wait_for(predicate, timeout, what, process):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process.poll() is not None:
            pytest.fail(f"the sweep ended (rc {process.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def differing_entries(path_a, path_b):
    """Names of the numeric checkpoint entries (network, optimizer, extras) not bit-equal."""
    from defrcn.checkpoint.io import load_checkpoint

    a, b = load_checkpoint(str(path_a)), load_checkpoint(str(path_b))
    assert sorted(a) == sorted(b)
    return [name for name in sorted(a) if not isinstance(a[name], str)
            and not np.array_equal(a[name].asnumpy(), b[name].asnumpy(), equal_nan=True)]


@pytest.fixture(scope="module", params=[1, pytest.param(2, marks=pytest.mark.msrun)],
                ids=["one_process", "msrun"])
def sweep(request, toy_tools, toy_base_run, tmp_path_factory):
    """Runs the reference sweep, the killed one and its restart; returns what they left."""
    workers = request.param
    runner = Sweep(toy_tools, toy_base_run / "model_final.ckpt", workers)
    root = tmp_path_factory.mktemp(f"seeds_resume_{workers}")
    rec = {"reference": root / "A", "out": root / "B"}
    rec["reference_run"] = runner.run(rec["reference"], root / "A.log")
    assert rec["reference_run"][0] == 0, rec["reference_run"][1][-3000:]

    out = rec["out"]
    job = runner.start(out, root / "B_killed.log")
    try:
        wait_for(lambda: 3 in logged_iterations(out / "seed1"), TIMEOUT, "seed 1's iteration 3", job)
    finally:
        kill_job(job, out)
    rec["left_running"] = worker_pids(out)
    rec["after_kill"] = {
        "seed1_pointer": (out / "seed1" / "last_checkpoint").read_text().strip(),
        "seed1_final": (out / "seed1" / "model_final.ckpt").exists(),
        "seed2": (out / "seed2").exists(),
    }
    final0 = out / "seed0" / "model_final.ckpt"
    rec["seed0_before"] = (final0.stat().st_mtime_ns, sha256(final0))
    rec["restart"] = runner.run(out, root / "B_restart.log")
    rec["seed0_after"] = (final0.stat().st_mtime_ns, sha256(final0))
    return rec


def test_the_sweep_is_killed_between_seed_1s_first_checkpoint_and_its_end(sweep):
    state = sweep["after_kill"]
    assert state["seed1_pointer"] in ("checkpoints/model_0000002.ckpt", "checkpoints/model_0000004.ckpt")
    assert not state["seed1_final"] and not state["seed2"]
    assert sweep["left_running"] == []


def test_the_restart_skips_seed_0_resumes_seed_1_and_trains_seed_2(sweep):
    code, output = sweep["restart"]
    assert code == 0, output[-3000:]
    out = sweep["out"]
    assert output.count(f"seed 0: finished earlier ({out / 'seed0'}), skipped") == 1, output[-3000:]
    assert output.count(f"seed 1: resuming into {out / 'seed1'}") == 1, output[-3000:]
    assert output.count(f"seed 2: training into {out / 'seed2'}") == 1, output[-3000:]
    start = int(sweep["after_kill"]["seed1_pointer"][-12:-5])
    assert f"{out / 'seed1' / sweep['after_kill']['seed1_pointer']} at iteration {start}" in output


def test_the_restart_leaves_seed_0s_final_checkpoint_untouched(sweep):
    assert sweep["seed0_after"] == sweep["seed0_before"]


@pytest.mark.parametrize("seed", SEEDS)
def test_every_seed_ends_bit_identical_to_the_uninterrupted_sweep(sweep, seed):
    assert sweep["restart"][0] == 0, sweep["restart"][1][-3000:]
    name = f"seed{seed}/model_final.ckpt"
    differing = differing_entries(sweep["reference"] / name, sweep["out"] / name)
    assert not differing, f"{len(differing)} entries differ: {differing}"
