"""defrcn.evaluation.aggregate: mean, std (ddof 0), 95% CI and n per metric over runs; runs
without usable metrics listed with the reason; the markdown table and the JSON file."""
import json
import math

import numpy as np
import pytest

from defrcn.errors import InputError
from defrcn.evaluation.aggregate import (aggregate_runs, default_output, expand_run_dirs, format_markdown,
                                         read_metrics, summarize, write_aggregate)


def test_summary_is_numpy_ddof_0_with_a_1_96_interval():
    values = [10.0, 14.0, 15.0, float("nan")]
    s = summarize(values)
    finite = np.array(values[:3])
    assert s["n"] == 3 and s["mean"] == pytest.approx(finite.mean())
    assert s["std"] == pytest.approx(finite.std(ddof=0)) and s["std"] != pytest.approx(finite.std(ddof=1))
    assert s["ci95"] == pytest.approx(1.96 * finite.std() / math.sqrt(3))
    assert summarize([])["n"] == 0 and math.isnan(summarize([])["mean"])
    assert summarize([float("inf"), 2.0]) == {"mean": 2.0, "std": 0.0, "ci95": 0.0, "n": 1}


def test_a_sweep_folder_stands_for_its_seeds_in_seed_order(tmp_path):
    for name in ("seed10", "seed2", "seedX", "notes"):
        (tmp_path / "sweep" / name).mkdir(parents=True)
    (tmp_path / "sweep" / "seed7").write_text("a file, not a run")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics_pcb.json").write_text("{}")
    (tmp_path / "run" / "seed0").mkdir()  # a run with metrics of its own is not a sweep
    got = expand_run_dirs([tmp_path / "sweep", tmp_path / "run", tmp_path / "missing"])
    assert got == [str(tmp_path / "sweep" / "seed2"), str(tmp_path / "sweep" / "seed10"),
                   str(tmp_path / "run"), str(tmp_path / "missing")]


def test_metrics_are_flattened_numbers_with_null_as_nan(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"AP": 40, "name": "toy", "final": True, "per_class": {"a": 1.5, "b": None, "c": {"d": 2}}}))
    flat, reason = read_metrics(tmp_path, "metrics.json")
    assert reason is None
    assert list(flat) == ["AP", "per_class/a", "per_class/b", "per_class/c/d"]
    assert flat["AP"] == 40.0 and flat["per_class/c/d"] == 2.0 and math.isnan(flat["per_class/b"])


@pytest.mark.parametrize("setup, reason", [
    (lambda run: None, "not a folder"),
    (lambda run: run.mkdir(), "no metrics.json (unfinished: no model_final.ckpt)"),
    (lambda run: (run.mkdir(), (run / "model_final.ckpt").write_bytes(b"")), "no metrics.json"),
    (lambda run: (run.mkdir(), (run / "metrics.json").write_text('{\n"AP": ')),
     "metrics.json: not valid JSON (line 2)"),
    (lambda run: (run.mkdir(), (run / "metrics.json").write_text("[1, 2]")), "metrics.json: not a JSON object"),
])
def test_unusable_runs_give_the_reason(tmp_path, setup, reason):
    setup(tmp_path / "run")
    assert read_metrics(tmp_path / "run", "metrics.json") == (None, reason)


def test_each_metrics_file_is_aggregated_over_the_runs_that_have_it(metrics_sweep):
    runs = [metrics_sweep / f"seed{s}" for s in range(5)]
    result = aggregate_runs(runs)
    assert result["runs"] == [str(r) for r in runs]
    plain, pcb = result["files"]["metrics.json"], result["files"]["metrics_pcb.json"]
    assert plain["runs"] == [str(r) for r in runs[:3]]
    assert list(plain["metrics"]) == ["AP", "nAP50", "per_class/red_circle", "per_class/cyan_ring"]
    assert plain["metrics"]["AP"] == summarize([10.0, 14.0, 15.0])
    assert plain["metrics"]["per_class/cyan_ring"] == summarize([5.0, 7.0])  # the null is left out
    assert [m["run"] for m in plain["missing"]] == [str(runs[3]), str(runs[4])]
    assert pcb["runs"] == [str(runs[1])] and pcb["metrics"]["AP"]["mean"] == 16.5
    two = aggregate_runs([metrics_sweep / "seed0", metrics_sweep / "seed2"])
    assert two["files"]["metrics.json"]["metrics"]["AP"]["mean"] == pytest.approx(12.5)
    assert two["files"]["metrics_pcb.json"]["runs"] == []


def test_no_usable_run_is_an_input_error(tmp_path):
    (tmp_path / "seed0").mkdir()
    with pytest.raises(InputError, match=r"none of the 2 run folder\(s\) has metrics.json or metrics_pcb.json "
                                         r"\(e.g. .*seed0: no metrics.json \(unfinished"):
        aggregate_runs([tmp_path / "seed0", tmp_path / "seed1"])
    with pytest.raises(InputError, match="no run folders given"):
        aggregate_runs([])


def test_markdown_has_a_table_per_file_and_the_runs_left_out(metrics_sweep):
    result = aggregate_runs([metrics_sweep / f"seed{s}" for s in (0, 1, 3)])
    text = format_markdown(result)
    plain, pcb = text.split("\n\n### ")
    std = np.std([10.0, 14.0])
    assert plain.splitlines() == [
        "### metrics.json (2 of 3 runs)", "", "| metric | mean | std | 95% CI | n |", "|---|---:|---:|---:|---:|",
        f"| AP | 12.00 | {std:.2f} | ±{1.96 * std / math.sqrt(2):.2f} | 2 |",
        f"| nAP50 | 23.00 | 3.00 | ±{1.96 * 3 / math.sqrt(2):.2f} | 2 |",
        "", "left out:", f"- {metrics_sweep / 'seed3'}: metrics.json: not valid JSON (line 1)"]
    assert pcb.startswith("metrics_pcb.json (1 of 3 runs)")
    with_classes = format_markdown(result, per_class=True)
    assert "| per_class/red_circle | 32.00 |" in with_classes
    assert "| per_class/cyan_ring | 5.00 | 0.00 | ±0.00 | 1 |" in with_classes
    result["files"]["metrics.json"]["metrics"]["AP"] = summarize([])
    assert "| AP | nan | nan | ±nan | 0 |" in format_markdown(result)


def test_default_output_is_in_the_common_parent(tmp_path):
    assert default_output([tmp_path / "a" / "seed0"]) == str(tmp_path / "a" / "aggregate.json")
    assert default_output([tmp_path / "a" / "seed0", tmp_path / "b" / "seed0"]) == str(tmp_path / "aggregate.json")


def test_write_aggregate_writes_strict_json(metrics_sweep, tmp_path):
    result, markdown, path = write_aggregate([metrics_sweep], per_class=True)
    assert path == str(metrics_sweep / "aggregate.json")
    assert "per_class/red_circle" in markdown
    assert json.loads((metrics_sweep / "aggregate.json").read_text())["runs"] == result["runs"]
    # seed0 alone: cyan_ring has no finite value, its NaN mean is written as null
    write_aggregate([metrics_sweep / "seed0"])
    text = (metrics_sweep / "aggregate.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["files"]["metrics.json"]["metrics"]["per_class/cyan_ring"]["mean"] is None
    out = tmp_path / "elsewhere" / "summary.json"
    assert write_aggregate([metrics_sweep / "seed0"], out)[2] == str(out) and out.is_file()


def test_an_unwritable_output_is_an_input_error(metrics_sweep, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="summary.json: cannot write"):
        write_aggregate([metrics_sweep], tmp_path / "file" / "summary.json")
