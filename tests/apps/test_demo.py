"""defrcn.apps.demo without running it: training seconds per step from a run's metrics log,
the final table, the output folder it owns, and plans whose overrides a recipe accepts
(tests/tools/test_demo_cli.py runs the quick demo)."""
import json

import pytest

from defrcn.apps.demo import (FULL, MARKER, QUICK, TABLE_KEYS, _prepare_output, format_summary, run_demo,
                              seconds_per_step)
from defrcn.config.recipe import load_recipe, shipped_recipe
from defrcn.errors import InputError


def write_log(folder, records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")


def test_seconds_per_step_leaves_out_the_compile_period(tmp_path):
    write_log(tmp_path, [{"iter": 10, "time": 5.0}, {"iter": 20, "time": 1.0}, {"iter": 25, "time": 4.0}])
    assert seconds_per_step(tmp_path) == pytest.approx((10 * 1.0 + 5 * 4.0) / 15)  # weighted by period
    write_log(tmp_path / "one", [{"iter": 4, "time": 2.5}])  # one period: it is all there is
    assert seconds_per_step(tmp_path / "one") == pytest.approx(2.5)
    write_log(tmp_path / "empty", [])
    assert seconds_per_step(tmp_path / "empty") is None
    assert seconds_per_step(tmp_path / "nothing") is None


def summary(**changes):
    values = {"results": {"base": {"bAP": 30.0, "bAP50": 55.5},
                          "fewshot": dict.fromkeys(TABLE_KEYS, 1.0),
                          "fewshot_pcb": dict.fromkeys(TABLE_KEYS, 2.25)},
              "seconds": {"data": 1.0, "base_train": 12.34}, "total_seconds": 13.3, "shots": 10,
              "seconds_per_step": {"base": 0.8, "finetune": None},
              "iterations": {"base": 600, "finetune": 300}}
    values.update(changes)
    return values


def test_table_lines():
    assert format_summary(summary()).splitlines() == [
        "model                          bAP   bAP50     nAP   nAP50",
        "base training                 30.0    55.5       -       -",
        "10-shot fine-tune              1.0     1.0     1.0     1.0",
        "10-shot fine-tune + PCB        2.2     2.2     2.2     2.2",
        "",
        "stage                      seconds",
        "data                           1.0",
        "base_train                    12.3",
        "total                         13.3",
        "training: base 600 iterations at 0.80 s/step, fine-tune 300 at ? s/step",
    ]


def test_table_names_the_shots_and_dashes_a_missing_model():
    results = {"base": {"bAP": 1.0, "bAP50": 2.0}}
    lines = format_summary(summary(shots=5, results=results)).splitlines()
    assert lines[2] == "5-shot fine-tune                 -       -       -       -"
    assert lines[3].startswith("5-shot fine-tune + PCB")


def test_a_folder_of_other_files_or_a_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="holds files that are not from the demo; pick another --output-dir"):
        run_demo(str(tmp_path), quick=True)
    with pytest.raises(InputError, match="exists and is not a directory"):
        run_demo(str(tmp_path / "notes.txt"), quick=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_earlier_demo_has_only_its_stage_outputs_cleared(tmp_path):
    out = tmp_path / "demo"
    _prepare_output(str(out), QUICK)
    assert (out / MARKER).is_file()
    for name in ("data/images", "toy_base", "toy_10shot", "predictions", "toy_5shot"):
        (out / name).mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    (out / "my_notes.txt").write_text("kept")
    _prepare_output(str(out), QUICK)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "my_notes.txt", "toy_5shot"]


def test_the_quick_plan_is_small_and_its_overrides_are_recipe_keys():
    base = load_recipe(shipped_recipe("toy_base"), list(QUICK.base_overrides)).cfg
    fewshot = load_recipe(shipped_recipe(f"toy_{QUICK.shots}shot"), list(QUICK.finetune_overrides)).cfg
    assert base.solver.max_iter == fewshot.solver.max_iter == 3
    assert base.input.canvases == [[128, 128]] == fewshot.input.canvases


def test_the_full_plan_runs_the_shipped_recipes_as_they_are():
    assert FULL.base_overrides == FULL.finetune_overrides == ()
    assert shipped_recipe(f"toy_{FULL.shots}shot").is_file()
