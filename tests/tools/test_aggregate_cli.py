"""tools/aggregate.py: mean, std (ddof 0), 95% CI and n over runs, metrics.json and
metrics_pcb.json separately; missing or broken runs listed, not fatal."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defrcn.evaluation.aggregate import aggregate_runs, default_output, expand_run_dirs, summarize

REPO = Path(__file__).resolve().parents[2]
PLAIN = [  # per seed: AP, nAP50, per_class/red_circle
    {"AP": 10.0, "nAP50": 20.0, "per_class": {"red_circle": 30.0, "cyan_ring": None}},
    {"AP": 14.0, "nAP50": 26.0, "per_class": {"red_circle": 34.0, "cyan_ring": 5.0}},
    {"AP": 15.0, "nAP50": 17.0, "per_class": {"red_circle": 38.0, "cyan_ring": 7.0}},
]


def run_aggregate(*args):
    return subprocess.run([sys.executable, "tools/aggregate.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def sweep(tmp_path):
    """OUT/seed0..seed4: three evaluated runs (seed1 also with PCB), a broken and an unfinished one."""
    out = tmp_path / "toy_10shot"
    for seed, metrics in enumerate(PLAIN):
        run = out / f"seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "model_final.ckpt").write_bytes(b"")
    (out / "seed1" / "metrics_pcb.json").write_text(json.dumps({"AP": 16.5, "nAP50": 30.0}))
    (out / "seed3").mkdir()
    (out / "seed3" / "metrics.json").write_text('{"AP": 1')
    (out / "seed4").mkdir()  # killed before it finished
    return out


def test_summary_is_numpy_ddof_0_with_a_1_96_interval():
    values = [10.0, 14.0, 15.0, float("nan")]
    s = summarize(values)
    finite = np.array(values[:3])
    assert s["n"] == 3 and s["mean"] == pytest.approx(finite.mean())
    assert s["std"] == pytest.approx(finite.std(ddof=0)) and s["std"] != pytest.approx(finite.std(ddof=1))
    assert s["ci95"] == pytest.approx(1.96 * finite.std() / math.sqrt(3))
    assert summarize([])["n"] == 0 and math.isnan(summarize([])["mean"])


def test_cli_prints_the_table_writes_json_and_lists_left_out_runs(sweep):
    runs = [sweep / f"seed{s}" for s in range(5)]
    result = run_aggregate(*runs)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    written = sweep / "aggregate.json"  # default: the runs' common parent
    assert written.is_file() and str(written) in result.stdout
    data = json.loads(written.read_text())
    plain = data["files"]["metrics.json"]
    assert plain["runs"] == [str(r) for r in runs[:3]]
    ap = plain["metrics"]["AP"]
    assert ap["n"] == 3 and ap["mean"] == pytest.approx(13.0)
    assert ap["std"] == pytest.approx(np.std([10, 14, 15])) and ap["ci95"] == pytest.approx(
        1.96 * np.std([10, 14, 15]) / math.sqrt(3))
    assert plain["metrics"]["per_class/cyan_ring"]["n"] == 2  # a null (no ground truth) is skipped
    reasons = {Path(m["run"]).name: m["reason"] for m in plain["missing"]}
    assert set(reasons) == {"seed3", "seed4"}
    assert "not valid JSON" in reasons["seed3"] and "unfinished" in reasons["seed4"]
    pcb = data["files"]["metrics_pcb.json"]
    assert pcb["runs"] == [str(runs[1])] and pcb["metrics"]["AP"] == pytest.approx(
        {"mean": 16.5, "std": 0.0, "ci95": 0.0, "n": 1})

    table = result.stdout
    assert "### metrics.json (3 of 5 runs)" in table and "### metrics_pcb.json (1 of 5 runs)" in table
    assert "| metric | mean | std | 95% CI | n |" in table
    assert f"| AP | 13.00 | {np.std([10, 14, 15]):.2f} | ±{1.96 * np.std([10, 14, 15]) / math.sqrt(3):.2f} | 3 |" \
        in table
    assert "per_class/red_circle" not in table  # per-class rows only with --per-class
    assert f"- {runs[3]}: metrics.json: not valid JSON" in table and f"- {runs[4]}:" in table


def test_a_sweep_folder_stands_for_its_seeds_and_output_and_per_class_options(sweep, tmp_path):
    assert expand_run_dirs([sweep]) == [str(sweep / f"seed{s}") for s in range(5)]
    out = tmp_path / "elsewhere" / "summary.json"
    result = run_aggregate(sweep, "--output", out, "--per-class")
    assert result.returncode == 0, result.stderr
    assert "| per_class/red_circle | 34.00 |" in result.stdout
    assert json.loads(out.read_text())["files"]["metrics.json"]["metrics"]["nAP50"]["n"] == 3
    assert not (sweep / "aggregate.json").exists()


def test_no_metrics_anywhere_is_one_line_exit_2(tmp_path, one_line_error):
    (tmp_path / "seed0").mkdir()
    result = run_aggregate(tmp_path / "seed0", tmp_path / "missing")
    one_line_error(result, "none of the 2 run folder(s)", "metrics.json")
    usage = run_aggregate()
    one_line_error(usage, "RUN_DIRS")


def test_library_result_and_default_output(sweep):
    result = aggregate_runs([sweep / "seed0", sweep / "seed2"])
    assert result["files"]["metrics.json"]["metrics"]["AP"]["mean"] == pytest.approx(12.5)
    assert result["files"]["metrics_pcb.json"]["runs"] == []
    assert default_output([sweep / "seed0"]) == str(sweep / "aggregate.json")
