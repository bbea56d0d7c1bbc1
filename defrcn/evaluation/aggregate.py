"""Mean and spread of the metrics of repeated runs (seeds), as `tools/aggregate.py` prints them.

    result = aggregate_runs(["output/toy_10shot/seed0", "output/toy_10shot/seed1"])
    print(format_markdown(result))

For each metrics file (`metrics.json`, `metrics_pcb.json`, separately) and every numeric
entry in it (`per_class` flattened to `per_class/<name>`): mean, std (numpy, ddof 0) and
the 95% half-width 1.96 * std / sqrt(n) over the runs that have a finite value, as
DeFRCN's `tools/extract_results.py` computes them, and n. Runs without the
file, with a broken file or still unfinished are listed with the reason, not fatal.
"""
import json
import math
import os

import numpy as np

from defrcn.errors import InputError

__all__ = ["METRIC_FILES", "CI_Z", "expand_run_dirs", "read_metrics", "summarize", "aggregate_runs",
           "format_markdown", "default_output", "write_aggregate"]

METRIC_FILES = ("metrics.json", "metrics_pcb.json")  # written by tools/eval.py and train
CI_Z = 1.96  # extract_results.py: mean +- 1.96 * std / sqrt(n)
PER_CLASS = "per_class"
FINAL_CHECKPOINT = "model_final.ckpt"


def expand_run_dirs(paths):
    """The run folders in `paths`; a folder with no metrics of its own but `seed<S>/`
    subfolders (a `--seeds` sweep) stands for those, in seed order."""
    runs = []
    for path in map(str, paths):
        seeds = []
        if os.path.isdir(path) and not any(os.path.exists(os.path.join(path, f)) for f in METRIC_FILES):
            for name in os.listdir(path):
                if name.startswith("seed") and name[4:].isdigit() and os.path.isdir(os.path.join(path, name)):
                    seeds.append((int(name[4:]), os.path.join(path, name)))
        runs.extend([p for _, p in sorted(seeds)] or [path])
    return runs


def _flatten(metrics, prefix=""):
    """{key: float} of the numeric leaves (nested dicts as `outer/inner`); null -> NaN."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}/"))
        elif value is None:
            flat[name] = float("nan")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def read_metrics(run_dir, file_name):
    """({key: float}, None) of RUN/file_name, or (None, reason) when it is missing or broken."""
    path = os.path.join(str(run_dir), file_name)
    if not os.path.isdir(str(run_dir)):
        return None, "not a folder"
    if not os.path.isfile(path):
        if not os.path.exists(os.path.join(str(run_dir), FINAL_CHECKPOINT)):
            return None, f"no {file_name} (unfinished: no {FINAL_CHECKPOINT})"
        return None, f"no {file_name}"
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except json.JSONDecodeError as e:
        return None, f"{file_name}: not valid JSON (line {e.lineno})"
    except OSError as e:
        return None, f"{file_name}: {e.strerror}"
    if not isinstance(content, dict):
        return None, f"{file_name}: not a JSON object"
    return _flatten(content), None


def summarize(values):
    """{"mean", "std", "ci95", "n"} of the finite numbers in `values` (NaN for n = 0)."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=np.float64)
    n = int(finite.size)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": float("nan"), "n": 0}
    std = float(finite.std())  # ddof 0, as extract_results.py
    return {"mean": float(finite.mean()), "std": std, "ci95": CI_Z * std / math.sqrt(n), "n": n}


def aggregate_runs(run_dirs):
    """Aggregate the metrics files of `run_dirs` (see `expand_run_dirs`).

    Returns {"runs": [run folders], "files": {file_name: {"runs": [used runs],
    "missing": [{"run", "reason"}], "metrics": {key: summarize(...)}}}} with key order as in
    the first run's file. InputError when no run has any metrics file.
    """
    runs = expand_run_dirs(run_dirs)
    if not runs:
        raise InputError("no run folders given")
    files = {}
    for file_name in METRIC_FILES:
        used, missing, per_run = [], [], []
        for run in runs:
            flat, reason = read_metrics(run, file_name)
            if flat is None:
                missing.append({"run": run, "reason": reason})
                continue
            used.append(run)
            per_run.append(flat)
        keys = []
        for flat in per_run:
            keys += [k for k in flat if k not in keys]
        metrics = {k: summarize([flat[k] for flat in per_run if k in flat]) for k in keys}
        files[file_name] = {"runs": used, "missing": missing, "metrics": metrics}
    if not any(entry["runs"] for entry in files.values()):
        raise InputError(f"none of the {len(runs)} run folder(s) has {' or '.join(METRIC_FILES)} "
                         f"(e.g. {runs[0]}: {files[METRIC_FILES[0]]['missing'][0]['reason']})")
    return {"runs": runs, "files": files}


def _number(value):
    return "nan" if not math.isfinite(value) else f"{value:.2f}"


def format_markdown(result, *, per_class=False):
    """Markdown: per metrics file that any run has, a table `metric | mean | std | 95% CI | n`
    (per-class rows only with per_class=True) and the runs left out with the reason."""
    blocks = []
    total = len(result["runs"])
    for file_name, entry in result["files"].items():
        if not entry["runs"]:
            continue
        lines = [f"### {file_name} ({len(entry['runs'])} of {total} runs)", "",
                 "| metric | mean | std | 95% CI | n |", "|---|---:|---:|---:|---:|"]
        for key, s in entry["metrics"].items():
            if key.startswith(PER_CLASS + "/") and not per_class:
                continue
            lines.append(f"| {key} | {_number(s['mean'])} | {_number(s['std'])} | "
                         f"±{_number(s['ci95'])} | {s['n']} |")
        if entry["missing"]:
            lines += ["", "left out:"] + [f"- {m['run']}: {m['reason']}" for m in entry["missing"]]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def default_output(run_dirs):
    """`aggregate.json` in the common parent folder of the runs."""
    parents = [os.path.dirname(os.path.abspath(str(d))) for d in run_dirs]
    return os.path.join(os.path.commonpath(parents), "aggregate.json")


def _write_json(path, data):
    """Atomic JSON write (NaN as null); a folder that cannot be written is bad input here."""
    from defrcn.utils.atomic import OutputWriteError, write_json_atomic

    try:
        write_json_atomic(path, data)
    except OutputWriteError as e:
        raise InputError(str(e)) from None


def write_aggregate(run_dirs, out=None, *, per_class=False):
    """Aggregate, print-ready: returns (result, markdown, path written). `out` defaults to
    `default_output` of the expanded run folders."""
    result = aggregate_runs(run_dirs)
    path = str(out) if out else default_output(result["runs"])
    _write_json(path, result)
    return result, format_markdown(result, per_class=per_class), path
