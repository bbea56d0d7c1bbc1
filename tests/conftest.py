"""Suite-wide set-up.

MindSpore 2.8.0 prints `Exception ignored in: <function Cell.__del__>` for Cells alive at
interpreter exit; after pytest has reported, leave the process
directly with pytest's own exit status so that noise never reaches the log.
"""
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings (graph compile notes)


def pytest_unconfigure(config):
    from defrcn.utils.device import remove_akg_files

    remove_akg_files()  # what in-process inference's kernel fusion wrote: os._exit runs no atexit
    status = getattr(config, "_defrcn_exitstatus", None)
    if status is None or hasattr(config, "workerinput"):
        return  # an xdist worker ends through its channel to the controller
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def pytest_sessionfinish(session, exitstatus):
    session.config._defrcn_exitstatus = exitstatus


def pytest_collection_modifyitems(items):
    """Tests marked slow first (in collection order otherwise): under `pytest -n` (make test)
    the workers then finish on short tests instead of one waiting for the other's long one."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


# --- MindSpore's execution mode: set for one test (or one block), the previous mode restored ---
@contextlib.contextmanager
def execution_mode(name):
    """MindSpore's mode for the block: "graph" or "pynative"; yields the mode's number."""
    import mindspore as ms

    mode = {"graph": ms.GRAPH_MODE, "pynative": ms.PYNATIVE_MODE}[name]
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        yield mode
    finally:
        ms.set_context(mode=previous)


@pytest.fixture(autouse=True)
def _context_restored():
    """MindSpore's execution mode and kernel fusion as they were before each test: inference
    loaders set graph mode and possibly fusion (`defrcn.utils.device.set_kernel_fusion`)
    for the whole process, and a later test in the same worker must not compile under them."""
    ms = sys.modules.get("mindspore")
    before = (ms.get_context("mode"), ms.get_context("enable_graph_kernel")) if ms else None
    yield
    ms = sys.modules.get("mindspore")
    if ms is None:
        return
    mode, fusion = before or (ms.PYNATIVE_MODE, False)
    if ms.get_context("mode") != mode:
        ms.set_context(mode=mode)
    if ms.get_context("enable_graph_kernel") != fusion:
        ms.set_context(enable_graph_kernel=fusion)


@pytest.fixture
def graph_mode():
    """The test runs in GRAPH_MODE (a module asks for it with
    `pytestmark = pytest.mark.usefixtures("graph_mode")`)."""
    with execution_mode("graph") as mode:
        yield mode


@pytest.fixture
def pynative_mode():
    """The test runs in PYNATIVE_MODE."""
    with execution_mode("pynative") as mode:
        yield mode


@pytest.fixture(params=["graph", "pynative"])
def each_mode(request):
    """The test runs twice, in GRAPH_MODE and in PYNATIVE_MODE; the value is the mode."""
    with execution_mode(request.param) as mode:
        yield mode


@pytest.fixture(scope="session")
def in_mode():
    """`with in_mode("graph"):` runs a block of a test in another mode."""
    return execution_mode


# --- shared toy data and real-CLI runs (tests/tools/test_train_cli.py, test_fewshot_pipeline.py,
# --- test_doctor_cli.py): made once per session, kept small --------------------------------------
REPO = Path(__file__).resolve().parents[1]
TOY_SHOTS, TOY_SPLIT_SEEDS = (1, 2, 3, 5, 10), (0, 1, 2)
# 200 train images: enough novel-only images for 10 instances of each novel class.
TOY_TRAIN_IMAGES, TOY_TEST_IMAGES, TOY_SIZE = 200, 12, 128
# Seconds-long toy training (keys: recipes/common/base.py): a 128 px canvas, 2 images per step
# (the reference batch, so the schedule stays as written on one device), few proposals and RoIs.
TOY_FAST = (
    "input.canvases=[[128,128]]", "input.min_size_train=[128]", "input.max_size_train=128",
    "input.min_size_test=128", "input.max_size_test=128",
    "solver.ims_per_batch=2", "solver.ims_per_device=2", "solver.reference_batch=2",
    "model.rpn.pre_nms_topk_train=300", "model.rpn.post_nms_topk_train=64",
    "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=32",
    "model.rpn.batch_size_per_image=64", "model.roi.batch_size_per_image=16",
    "log.period=1", "data.num_workers=1", "test.ims_per_device=4",
)
# The base run every CLI test starts from: 12 steps (loss visibly falls), a checkpoint at 6.
TOY_BASE = ("solver.max_iter=12", "solver.steps=[10]", "solver.warmup_iters=2",
            "solver.checkpoint_period=6")


def kill_group(process):
    """kill -9 a process started in its own session (start_new_session=True) and its group."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=60)


@pytest.fixture(scope="session", name="kill_group")
def kill_group_fixture():
    """`kill_group(process)` for tests that start tools in their own process group."""
    return kill_group


# Runs a tool as `__main__` after an optional MindSpore memory setting (argv[1]: "O0", "O1" or
# "-"), and prints the memory optimize level in force when the process exits (the tools leave
# through os._exit: defrcn.engine.cli).
# sys.argv is the tool's before mindspore is imported: with a compile cache, MindSpore reads
# the entry script named by sys.argv[0] at import (mindspore/common/api.py, entry_script_path)
MEMORY_LEVEL_LAUNCHER = """
import os, runpy, sys
level, sys.argv = sys.argv[1], sys.argv[2:]
import mindspore as ms
if level != "-":
    ms.runtime.set_memory(optimize_level=level)
leave = os._exit
def report_and_leave(code):
    print("memory_optimize_level", int(ms.get_context("memory_optimize_level")), flush=True)
    leave(code)
os._exit = report_and_leave
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_tool(tool, *args, sets=(), timeout=600, env=None, memory_level=None):
    """`python tools/<tool>.py args` (then `--set item` for each of `sets`) from the repo root,
    to its end: the CompletedProcess (text output). `env` None: this process's environment.

    `memory_level` "O0" / "O1" / "-": run the tool through MEMORY_LEVEL_LAUNCHER, with that
    memory setting made first ("-": none); the last stdout line is then
    `memory_optimize_level N`, the level the process ran at."""
    command = [sys.executable, f"tools/{tool}.py", *map(str, args)]
    if memory_level is not None:
        command[1:1] = ["-c", MEMORY_LEVEL_LAUNCHER, memory_level]
    for item in sets:
        command += ["--set", str(item)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="session", name="run_tool")
def run_tool_fixture():
    """`run_tool(tool, *args, sets=(), timeout=600, env=None, memory_level=None)` for CLI tests."""
    return run_tool


class ToyTools:
    """Runs `python tools/<tool>.py` from the repo root as a user would (GLOG_v=3), with
    `data.root` set to the session's toy data and the TOY_FAST overrides on request."""

    def __init__(self, root, cache_root):
        self.root = Path(root)
        self.cache_root = Path(cache_root)

    def sets(self, *items, fast=True, root=None):
        """['--set', 'data.root=...', '--set', item, ...] for TOY_FAST (if fast) and items."""
        args = []
        for item in (f"data.root={root or self.root}", *(TOY_FAST if fast else ()), *items):
            args += ["--set", str(item)]
        return args

    def base_train_args(self, out, *options):
        """Arguments of tools/train.py for the session's toy base run (TOY_FAST + TOY_BASE,
        no eval) into `out`; the same arguments give the same run."""
        return ["recipes/toy_base.py", "--output-dir", str(out), "--no-eval", *self.sets(*TOY_BASE),
                *map(str, options)]

    def env(self, cache=None, **extra):
        """The tools' environment; `cache` names a MindSpore compile cache shared by runs of
        one identical graph (never share one between different graphs)."""
        env = dict(os.environ, GLOG_v="3")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # msrun, python
        if cache:
            env.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=str(self.cache_root / cache))
        env.update(extra)
        return env

    def command(self, tool, *args):
        return [sys.executable, f"tools/{tool}.py", *map(str, args)]

    def run(self, tool, *args, cache=None, timeout=900, memory_level=None):
        return run_tool(tool, *args, timeout=timeout, env=self.env(cache), memory_level=memory_level)

    def start(self, tool, *args, log, cache=None):
        """Popen in its own process group, stdout+stderr to the file `log`."""
        handle = open(log, "w")
        return subprocess.Popen(self.command(tool, *args), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT,
                                env=self.env(cache), start_new_session=True)

    kill = staticmethod(kill_group)  # for a process from `start`


def assert_one_line_error(result, *fragments, code=2):
    """A tool's bad-input exit: `code`, exactly one stderr line, no traceback, holding `fragments`."""
    assert result.returncode == code, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def one_line_error():
    """`assert_one_line_error(result, *fragments, code=2)` for CLI tests."""
    return assert_one_line_error


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """The synthetic data set (200 train, 12 test images at 128 px) with K-shot split files
    for K in 1,2,3,5,10 and split seeds 0-2 in ROOT/fewshot (the custom layout)."""
    from defrcn.data.custom import image_dirs
    from defrcn.data.split_making import write_coco_splits
    from defrcn.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("toy_data")
    train_json, _ = write_synthetic_dataset(str(root), train_images=TOY_TRAIN_IMAGES,
                                            test_images=TOY_TEST_IMAGES, size=TOY_SIZE)
    write_coco_splits(train_json, list(TOY_SHOTS), list(TOY_SPLIT_SEEDS), str(root / "fewshot"),
                      strict=True, image_dirs=image_dirs(str(root), "train"))
    return root


@pytest.fixture(scope="session")
def toy_tools(toy_root, tmp_path_factory):
    return ToyTools(toy_root, tmp_path_factory.mktemp("compile_cache"))


@pytest.fixture(scope="session")
def toy_base_run(toy_tools, tmp_path_factory):
    """A finished toy base training through tools/train.py (TOY_FAST + TOY_BASE, no eval):
    the run folder. Its graph's compile cache is "toy_base" (for reruns of the same graph).
    It runs through MEMORY_LEVEL_LAUNCHER with no memory setting made first; its stdout is
    kept next to the run folder, as `train.stdout`."""
    out = tmp_path_factory.mktemp("toy_base") / "run"
    result = toy_tools.run("train", *toy_tools.base_train_args(out), cache="toy_base", memory_level="-")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model_final.ckpt").is_file(), result.stdout[-3000:]
    (out.parent / "train.stdout").write_text(result.stdout)
    return out


# --- random-weight toy detectors for the inference tools (export, infer, eval, doctor) ---------
# ResNet-18, one 128 px canvas, few proposals: seconds to build and to run.
TOY_DETECTOR = ("model.depth=18", "input.canvases=[[128,128]]", "input.min_size_test=128",
                "input.max_size_test=128", "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50")


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory):
    """`make(recipe, *overrides, name="model.ckpt")`: the path of a checkpoint of the recipe's
    model (recipe relative to the repo root) with random weights (seed 0); written once per
    session for each set of arguments."""
    made = {}

    def make(recipe, *overrides, name="model.ckpt"):
        key = (recipe, tuple(map(str, overrides)), name)
        if key not in made:
            import mindspore as ms

            from defrcn.checkpoint.io import save_checkpoint
            from defrcn.config.recipe import load_recipe

            ms.set_seed(0)
            loaded = load_recipe(REPO / recipe, list(key[1]))
            path = tmp_path_factory.mktemp("toy_checkpoint") / name
            save_checkpoint(loaded.model(loaded.cfg), str(path))
            made[key] = path
        return made[key]

    return make


@pytest.fixture(scope="session")
def toy_detector(toy_checkpoint, tmp_path_factory):
    """A random toy_base detector: `.overrides` (data.root + TOY_DETECTOR), `.checkpoint` (str)
    and `.root`, a 12 + 4 image synthetic data set at 128 px."""
    from types import SimpleNamespace

    from defrcn.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("toy_detector") / "data"
    write_synthetic_dataset(str(root), train_images=12, test_images=4, size=128)
    overrides = [f"data.root={root}", *TOY_DETECTOR]
    return SimpleNamespace(overrides=overrides, root=root,
                           checkpoint=str(toy_checkpoint("recipes/toy_base.py", *overrides)))


# --- evaluated runs of a seed sweep (tools/aggregate.py and defrcn.evaluation.aggregate) --------
SWEEP_METRICS = [  # per seed: AP, nAP50, per_class/red_circle, per_class/cyan_ring
    {"AP": 10.0, "nAP50": 20.0, "per_class": {"red_circle": 30.0, "cyan_ring": None}},
    {"AP": 14.0, "nAP50": 26.0, "per_class": {"red_circle": 34.0, "cyan_ring": 5.0}},
    {"AP": 15.0, "nAP50": 17.0, "per_class": {"red_circle": 38.0, "cyan_ring": 7.0}},
]


@pytest.fixture
def metrics_sweep(tmp_path):
    """OUT/seed0..seed4 of SWEEP_METRICS: three evaluated runs (seed1 also with PCB, AP 16.5),
    a broken metrics.json (seed3) and an unfinished run (seed4)."""
    import json

    out = tmp_path / "toy_10shot"
    for seed, metrics in enumerate(SWEEP_METRICS):
        run = out / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "model_final.ckpt").write_bytes(b"")
    (out / "seed1" / "metrics_pcb.json").write_text(json.dumps({"AP": 16.5, "nAP50": 30.0}))
    (out / "seed3").mkdir()
    (out / "seed3" / "metrics.json").write_text('{"AP": 1')
    (out / "seed4").mkdir()  # killed before it finished
    return out
