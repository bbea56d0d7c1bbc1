"""Shared set-up of the reliability tests: a tiny synthetic data set, the tiny training
overrides, and a runner for the real tools (subprocess, GLOG_v=3).

Training runs share one MindSpore compile cache (`MS_COMPILER_CACHE_*`) for the session, so
only the first run of a given graph pays the ~30 s compile; the rest start in seconds.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
TOY_IMAGE_SIZE = 128  # the brief's 128 px canvas
# Tiny toy training: 128 px, 2 images per step, few proposals and RoIs, 6 iterations with a
# checkpoint every 2 (keys: recipes/common/base.py).
TINY = [
    "input.canvases=[[128,128]]", "input.min_size_train=[128]", "input.max_size_train=128",
    "input.min_size_test=128", "input.max_size_test=128",
    "solver.max_iter=6", "solver.steps=[5]", "solver.checkpoint_period=2",
    "solver.ims_per_device=2", "solver.ims_per_batch=2", "solver.reference_batch=2",
    "model.rpn.pre_nms_topk_train=100", "model.rpn.post_nms_topk_train=32",
    "model.rpn.pre_nms_topk_test=100", "model.rpn.post_nms_topk_test=32",
    "model.roi.batch_size_per_image=16", "log.period=1", "data.num_workers=1",
    "test.ims_per_device=2",
]


class Tools:
    """Runs tools/*.py as a user would, with the session's data root and compile cache."""

    tiny = TINY
    msrun_schedule = None  # MSRUN_SCHEDULE, set below

    def __init__(self, data_root, cache_dir):
        self.data_root = Path(data_root)
        self.cache_dir = Path(cache_dir)

    def env(self, fault=None, **extra):
        env = {k: v for k, v in os.environ.items() if k != "DEFRCN_FAULT"}
        env.update(GLOG_v="3", MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=str(self.cache_dir))
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # msrun
        if fault:
            env["DEFRCN_FAULT"] = fault
        env.update(extra)
        return env

    def train_args(self, output_dir, *options, recipe="recipes/toy_base.py", tiny=True):
        sets = [f"data.root={self.data_root}", *(TINY if tiny else [])]
        args = [recipe, "--output-dir", str(output_dir)]
        for item in sets:
            args += ["--set", item]
        return args + [str(o) for o in options]

    def run(self, tool, *args, fault=None, timeout=300, env=None):
        """Run `python tools/<tool>.py args...` to its end; returns CompletedProcess."""
        return subprocess.run([sys.executable, f"tools/{tool}.py", *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout,
                              env=env or self.env(fault))

    def train(self, output_dir, *options, fault=None, timeout=300, **kw):
        return self.run("train", *self.train_args(output_dir, *options, **kw), fault=fault,
                        timeout=timeout)

    def start_train(self, output_dir, *options, fault=None, **kw):
        """Popen of a training run in its own process group (stdout/stderr to files)."""
        out = Path(output_dir)
        log_dir = out.parent / f"{out.name}.console"
        log_dir.mkdir(parents=True, exist_ok=True)
        count = len(list(log_dir.glob("stderr*")))
        stdout = open(log_dir / f"stdout{count}", "w")
        stderr = open(log_dir / f"stderr{count}", "w")
        process = subprocess.Popen(
            [sys.executable, "tools/train.py", *self.train_args(out, *options, **kw)], cwd=REPO,
            stdout=stdout, stderr=stderr, env=self.env(fault), start_new_session=True)
        process.stderr_path = log_dir / f"stderr{count}"
        return process


def wait_for(predicate, timeout, what, process=None):
    """Poll `predicate()` every 0.1 s; fail after `timeout` s (or if `process` ended first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"process ended (rc {process.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def logged_iterations(output_dir):
    """Iterations present in OUTPUT/metrics.jsonl (complete lines only)."""
    path = Path(output_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            found.append(json.loads(line)["iter"])
        except (ValueError, KeyError):
            pass
    return found


def checkpoint_files(output_dir):
    """Every file under OUTPUT with a `.ckpt` name (temp files of an interrupted write too)."""
    return sorted(p for p in Path(output_dir).rglob("*") if p.is_file() and ".ckpt" in p.name
                  and not p.name.endswith(".sha256"))


def assert_all_checkpoints_readable(output_dir):
    """Every file under its final `*.ckpt` name verifies (hash) and parses."""
    from defrcn.checkpoint import io

    finals = [p for p in checkpoint_files(output_dir) if p.name.endswith(".ckpt")
              and not p.name.startswith(".")]
    for path in finals:
        assert io.verify_checkpoint(str(path)) is None, path
        io.load_checkpoint(str(path))
    return finals


def parameters(path):
    """{name: numpy array} of every numeric entry of a checkpoint (network, optimizer, extras)."""
    import mindspore as ms

    return {name: value.asnumpy() for name, value in ms.load_checkpoint(str(path)).items()
            if not isinstance(value, str)}


def largest_difference(path_a, path_b):
    """(max |a - b| over all entries, names that differ); the two files must hold the same names."""
    a, b = parameters(path_a), parameters(path_b)
    assert sorted(a) == sorted(b)
    worst, differing = 0.0, []
    for name in a:
        if a[name].shape != b[name].shape:
            differing.append(name)
            continue
        if not np.array_equal(a[name], b[name], equal_nan=True):
            differing.append(name)
            diff = np.abs(a[name].astype(np.float64) - b[name].astype(np.float64))
            worst = max(worst, float(np.nanmax(diff)))
    return worst, differing


def free_port():
    """A TCP port free on 127.0.0.1 now (for msrun's --master_port)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker_pids(output_dir, rank=None):
    """pids of the msrun workers training into output_dir (all, or the one of `rank`), from /proc."""
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
        if str(output_dir).encode() not in cmdline or b"MS_ROLE=MS_WORKER" not in environ:
            continue
        if rank is None or f"RANK_ID={rank}".encode() in environ:
            found.append(int(entry))
    return found


def kill_job(processes, output_dir):
    """SIGKILL launched processes' groups and the groups of the msrun workers training into
    output_dir (msrun starts each worker in a session of its own: killing the launcher's
    group alone leaves them running)."""
    processes = processes if isinstance(processes, (list, tuple)) else [processes]
    for group in [p.pid for p in processes if p.poll() is None] + worker_pids(output_dir):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for process in processes:
        if process.poll() is None:
            process.wait(timeout=60)
    # A killed worker stays in /proc, with its command line, until it has finished exiting
    # (tearing down a GiB address space takes a moment).
    wait_for(lambda: not worker_pids(output_dir), 60, f"the killed msrun workers of {output_dir} to exit")


for _helper in (wait_for, logged_iterations, checkpoint_files,
                assert_all_checkpoints_readable, parameters, largest_difference, free_port, worker_pids,
                kill_job):
    setattr(Tools, _helper.__name__, staticmethod(_helper))  # tests reach them as tools.<name>


@pytest.fixture(scope="session")
def tools(tmp_path_factory, kill_group):
    """The session's Tools: a 16 + 4 image synthetic data set at 128 px and a compile cache;
    `tools.kill_group(process)` ends a process from `start_train` and its group."""
    root = tmp_path_factory.mktemp("reliability")
    data = root / "toy"
    result = subprocess.run(
        [sys.executable, "tools/synthetic.py", str(data), "--train-images", "16", "--test-images", "4",
         "--size", str(TOY_IMAGE_SIZE)], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, GLOG_v="3"))
    assert result.returncode == 0, result.stderr
    session_tools = Tools(data, root / "compile_cache")
    session_tools.kill_group = kill_group
    return session_tools


# msrun with 2 CPU workers (test_msrun_kill_resume.py, test_multinode_msrun.py): 12 written
# iterations at batch 2 -> 6 iterations at 2 workers x 2 images; checkpoints every 2.
MSRUN_SCHEDULE = ["--set", "solver.max_iter=12", "--set", "solver.steps=[10]",
                  "--set", "solver.checkpoint_period=4", "--no-eval"]
MSRUN_TIMEOUT = 400  # s for a whole training under msrun
Tools.msrun_schedule = MSRUN_SCHEDULE


@pytest.fixture(scope="session")
def msrun_reference(tools, tmp_path_factory):
    """The output folder of an uninterrupted msrun training (one launcher, two local workers,
    MSRUN_SCHEDULE; the workers' logs in OUT.msrun_logs): its model_final.ckpt is what every
    interrupted and resumed msrun run must equal bit for bit."""
    out = tmp_path_factory.mktemp("msrun_reference") / "run"
    command = ["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={free_port()}",
               "--join=True", f"--log_dir={out}.msrun_logs", "tools/train.py",
               *tools.train_args(out, *MSRUN_SCHEDULE)]
    process = subprocess.Popen(command, cwd=REPO, env=tools.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=MSRUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_job(process, out)
        output, _ = process.communicate()
        pytest.fail(f"msrun still running after {MSRUN_TIMEOUT} s:\n{output[-3000:]}")
    finally:
        kill_job(process, out)
    assert process.returncode == 0, output[-3000:]
    return out
