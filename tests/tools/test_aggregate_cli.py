"""tools/aggregate.py: mean, std (ddof 0), 95% CI and n over runs, metrics.json and
metrics_pcb.json separately; missing or broken runs listed, not fatal."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from defrcn.evaluation.aggregate import expand_run_dirs


def test_cli_prints_the_table_writes_json_and_lists_left_out_runs(metrics_sweep, run_tool):
    sweep = metrics_sweep
    runs = [sweep / f"seed{s}" for s in range(5)]
    result = run_tool("aggregate", *runs)
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


def test_a_sweep_folder_stands_for_its_seeds_and_output_and_per_class_options(metrics_sweep, run_tool, tmp_path):
    sweep = metrics_sweep
    assert expand_run_dirs([sweep]) == [str(sweep / f"seed{s}") for s in range(5)]
    out = tmp_path / "elsewhere" / "summary.json"
    result = run_tool("aggregate", sweep, "--output", out, "--per-class")
    assert result.returncode == 0, result.stderr
    assert "| per_class/red_circle | 34.00 |" in result.stdout
    assert json.loads(out.read_text())["files"]["metrics.json"]["metrics"]["nAP50"]["n"] == 3
    assert not (sweep / "aggregate.json").exists()


def test_no_metrics_anywhere_is_one_line_exit_2(tmp_path, run_tool, one_line_error):
    (tmp_path / "seed0").mkdir()
    result = run_tool("aggregate", tmp_path / "seed0", tmp_path / "missing")
    one_line_error(result, "none of the 2 run folder(s)", "metrics.json")
    usage = run_tool("aggregate", )
    one_line_error(usage, "RUN_DIRS")
