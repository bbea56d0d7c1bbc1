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
import subprocess
import sys
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


class Sweep:
    """Starts `tools/train.py RECIPE --seeds 0-2` into a folder, alone or under msrun."""

    def __init__(self, tools, toy_tools, base_weights, workers):
        self.tools, self.toy_tools, self.workers = tools, toy_tools, workers
        self.sets = toy_tools.sets(*SCHEDULE[workers], f"model.base_weights={base_weights}")
        self.cache = f"seeds_resume_{workers}"  # one compile cache per graph (tests/conftest.py)

    def command(self, out):
        train = ["tools/train.py", RECIPE, "--seeds", "0-2", "--output-dir", str(out), "--no-eval",
                 *self.sets]
        if self.workers == 1:
            return [sys.executable, *train]
        return ["msrun", f"--worker_num={self.workers}", f"--local_worker_num={self.workers}",
                f"--master_port={self.tools.free_port()}", "--join=True", f"--log_dir={out}.msrun_logs", *train]

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
            self.tools.kill_job(process, out)
        return process.returncode, log.read_text()


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
def sweep(request, tools, toy_tools, toy_base_run, tmp_path_factory):
    """Runs the reference sweep, the killed one and its restart; returns what they left."""
    workers = request.param
    runner = Sweep(tools, toy_tools, toy_base_run / "model_final.ckpt", workers)
    root = tmp_path_factory.mktemp(f"seeds_resume_{workers}")
    rec = {"reference": root / "A", "out": root / "B"}
    rec["reference_run"] = runner.run(rec["reference"], root / "A.log")
    assert rec["reference_run"][0] == 0, rec["reference_run"][1][-3000:]

    out = rec["out"]
    job = runner.start(out, root / "B_killed.log")
    try:
        tools.wait_for(lambda: 3 in tools.logged_iterations(out / "seed1"), TIMEOUT, "seed 1's iteration 3",
                       job)
    finally:
        tools.kill_job(job, out)
    rec["left_running"] = tools.worker_pids(out)
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
