"""The LR schedule is configuration, not state: `--resume` with a longer or re-stepped schedule
continues on the recipe's schedule and says in one log line what changed; a checkpoint of
another model is refused in one line that points to `--init`.

Each schedule length gets its own MindSpore compile cache: the cache (MS_COMPILER_CACHE_*)
reuses a graph compiled for another length of the optimizer's LR list (measured with
MindSpore 2.8.0: a 12-iteration run then fails with "Gather ... range [0, 10)").
"""
import pytest

pytestmark = pytest.mark.slow

def _train(tools, out, max_iter, *options):
    """tools/train.py with --set solver.max_iter=max_iter, with a compile cache of that length."""
    env = tools.env(MS_COMPILER_CACHE_PATH=f"{tools.cache_dir}_lr{max_iter}")
    return tools.run("train", *tools.train_args(out, "--set", f"solver.max_iter={max_iter}", "--no-eval",
                                                *options), env=env)


@pytest.fixture(scope="module")
def runs(tools, tmp_path_factory):
    root = tmp_path_factory.mktemp("schedule_resume")
    rec = {"root": root}
    rec["straight"] = _train(tools, root / "straight", 10)
    rec["first"] = _train(tools, root / "extended", 6)  # the tiny schedule: LR step at 5
    rec["extended"] = _train(tools, root / "extended", 10, "--resume")
    return rec


def test_extending_a_finished_run_resumes_and_equals_the_longer_run(runs, tools):
    for key in ("straight", "first", "extended"):
        assert runs[key].returncode == 0, (key, runs[key].stderr[-2000:])
    log = runs["extended"].stderr
    assert "at iteration 6; the schedule follows the recipe, changed since that checkpoint: max_iter 6 -> 10" in log, log
    assert tools.logged_iterations(runs["root"] / "extended")[-1] == 10
    worst, differing = tools.largest_difference(runs["root"] / "straight" / "model_final.ckpt",
                                                runs["root"] / "extended" / "model_final.ckpt")
    assert differing == [] and worst == 0.0


def test_moving_an_lr_step_is_said_in_one_line(runs, tools, tmp_path):
    out = runs["root"] / "extended"
    result = _train(tools, out, 12, "--set", "solver.steps=[8,11]", "--set", "solver.base_lr=0.0005",
                    "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "resumed from" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith("changed since that checkpoint: base_lr 0.001 -> 0.0005; max_iter 10 -> 12; "
                             "steps [5] -> [8, 11]"), lines[0]
    again = _train(tools, out, 12, "--set", "solver.steps=[8,11]", "--set", "solver.base_lr=0.0005",
                   "--resume")
    assert again.returncode == 0 and "already trained to iteration 12" in again.stdout, again.stderr[-2000:]


def test_a_checkpoint_of_another_model_is_refused_with_the_way_out(runs, tools):
    out = runs["root"] / "extended"
    result = _train(tools, out, 20, "--set", "model.depth=34", "--resume")
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith(f"error: {out / 'model_final.ckpt'}: checkpoint does not match the model"), errors[0]
    assert f"pass --init {out / 'model_final.ckpt'} instead of --resume" in errors[0], errors[0]
