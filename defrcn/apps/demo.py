"""The whole DeFRCN pipeline on the synthetic shapes, on a CPU (`make demo`, tools/demo.py).

    summary = run_demo("output/demo")

Stages, each timed, everything under OUT:

    data        OUT/data: the synthetic set (defrcn.data.synthetic), custom layout
    splits      OUT/data/fewshot: K-shot split files, seed 0 (the code of tools/split.py)
    base_train  OUT/toy_base: recipes/toy_base.py from scratch
    base_eval   OUT/toy_base/metrics.json: bAP, bAP50 on the test set
    surgery     OUT/toy_base/model_reset_surgery.ckpt: randinit (predictor grown to all classes)
    finetune    OUT/toy_10shot: recipes/toy_10shot.py from the surgery output
    eval        OUT/toy_10shot/metrics.json (no PCB)
    eval_pcb    OUT/toy_10shot/metrics_pcb.json (PCB with the detector's own features): the
                detections of `eval`, rescored
    predictions OUT/predictions/*.png: predicted boxes on a few test images

and OUT/summary.json: the metrics, seconds per stage and training seconds per step.
`quick=True` shrinks data and schedules to seconds of work (for the CLI test).
"""
import json
import os
import shutil
import time
from dataclasses import dataclass, field

import click

from defrcn.errors import InputError

__all__ = ["DemoPlan", "FULL", "QUICK", "run_demo", "seconds_per_step", "format_summary",
           "STAGES", "TABLE_KEYS"]

STAGES = ("data", "splits", "base_train", "base_eval", "surgery", "finetune", "eval", "eval_pcb",
          "predictions")
TABLE_KEYS = ("bAP", "bAP50", "nAP", "nAP50")  # the columns of the final table
MARKER = ".defrcn-demo"  # marks a folder the demo owns (it may clear its stage folders)
OWNED = ("data", "toy_base", "toy_{shots}shot", "predictions", "summary.json")


@dataclass(frozen=True)
class DemoPlan:
    """Data sizes and recipe overrides of one demo run."""

    train_images: int
    test_images: int
    image_size: int
    shots: int
    preview_images: int  # test images drawn with their predicted boxes
    base_overrides: tuple = field(default=())  # `key=value` on top of recipes/toy_base.py
    finetune_overrides: tuple = field(default=())  # on top of recipes/toy_{shots}shot.py


# The demo as shipped: the recipes as they are, the generator's default sizes.
FULL = DemoPlan(train_images=400, test_images=100, image_size=256, shots=10, preview_images=6)

_QUICK_COMMON = (  # 128 px canvas, few proposals, a handful of steps: seconds, not minutes
    "input.canvases=[[128,128]]", "input.min_size_train=[128]", "input.max_size_train=128",
    "input.min_size_test=128", "input.max_size_test=128",
    "model.rpn.pre_nms_topk_train=200", "model.rpn.post_nms_topk_train=32",
    "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=32",
    "solver.warmup_iters=1", "solver.checkpoint_period=100", "log.period=1",
    "data.num_workers=1",
)
QUICK = DemoPlan(
    train_images=120, test_images=4, image_size=128, shots=10, preview_images=2,
    base_overrides=_QUICK_COMMON + ("solver.max_iter=3", "solver.steps=[2]"),
    finetune_overrides=_QUICK_COMMON + ("solver.max_iter=3", "solver.steps=[2]"),
)


def _recipe(name):
    from defrcn.config.recipe import shipped_recipe

    return str(shipped_recipe(name))


def _prepare_output(out, plan):
    """Create OUT; clear the stage folders of an earlier demo; refuse a folder of other files."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError("exists and is not a directory; pick another --output-dir", path=out)
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MARKER)):
        raise InputError("holds files that are not from the demo; pick another --output-dir", path=out)
    os.makedirs(out, exist_ok=True)
    for name in OWNED:
        path = os.path.join(out, name.format(shots=plan.shots))
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    with open(os.path.join(out, MARKER), "w") as handle:
        handle.write("written by tools/demo.py; its stage folders are replaced on the next run\n")


def seconds_per_step(run_dir):
    """Mean training s/step of a run from its metrics.jsonl, the first logged period left out
    (it holds graph compilation) when there is more than one; None without records."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    steady = records[1:] if len(records) > 1 else records
    if not steady:
        return None
    previous = records[0]["iter"] if len(records) > 1 else 0
    seconds = steps = 0.0
    for record in steady:  # weight each period's mean time by its length
        period = record["iter"] - previous
        seconds += record["time"] * period
        steps += period
        previous = record["iter"]
    return seconds / steps if steps else None


def _make_splits(root, shots):
    from defrcn.data.split_making import write_coco_splits

    annotations = os.path.join(root, "annotations", "train.json")
    images = os.path.join(root, "images")
    return write_coco_splits(annotations, [shots], [0], os.path.join(root, "fewshot"), strict=True,
                             image_dirs=[os.path.join(images, "train"), images])


def _surgery(base_checkpoint, finetune_recipe, overrides, output):
    """randinit: the base predictor grown to all classes, written to `output`."""
    from defrcn.checkpoint import io
    from defrcn.checkpoint.surgery import surgery, surgery_classes, to_save_list
    from defrcn.config.recipe import load_recipe
    from defrcn.data.spec import resolve_data_spec

    cfg = load_recipe(finetune_recipe, overrides).cfg
    base, target = surgery_classes(resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes))
    params = io.load_checkpoint(base_checkpoint)
    grown = surgery(params, method=cfg.model.surgery, base_class_names=base,
                    target_class_names=target, seed=cfg.seed, source=base_checkpoint)
    io.save_checkpoint(to_save_list(grown), output)
    click.echo(f"{cfg.model.surgery}: predictor grown from {len(base)} to {len(target)} classes; "
               f"wrote {output}")


def _pick(metrics, keys=TABLE_KEYS):
    return {key: (round(float(metrics[key]), 2) if key in metrics else None) for key in keys}


def run_demo(out="output/demo", *, quick=False, progress=True, plan=None):
    """Run every stage (module docstring) into `out`; return the summary dict (also
    OUT/summary.json): {"results": {"base", "fewshot", "fewshot_pcb": {bAP, bAP50, nAP, nAP50}},
    "seconds": {stage: s}, "total_seconds", "seconds_per_step": {"base", "finetune"},
    "iterations": {"base", "finetune"}, "quick", "out", "predictions": [png paths]}."""
    from defrcn.data.synthetic import write_synthetic_dataset
    from defrcn.engine.evaluate import Evaluation, evaluate_recipe
    from defrcn.inference.infer import infer_to_folder
    from defrcn.config.recipe import load_recipe
    from defrcn.engine.train import train_recipe

    plan = plan or (QUICK if quick else FULL)
    out = os.path.abspath(out)
    _prepare_output(out, plan)
    root = os.path.join(out, "data")
    base_recipe, fewshot_recipe = _recipe("toy_base"), _recipe(f"toy_{plan.shots}shot")
    base_dir = os.path.join(out, "toy_base")
    fewshot_dir = os.path.join(out, f"toy_{plan.shots}shot")
    surgery_ckpt = os.path.join(base_dir, "model_reset_surgery.ckpt")
    base_over = [f"data.root={root}", f"output_dir={base_dir}", *plan.base_overrides]
    fewshot_over = [f"data.root={root}", f"output_dir={fewshot_dir}",
                    f"model.base_weights={surgery_ckpt}", *plan.finetune_overrides]
    base_iters = load_recipe(base_recipe, base_over).cfg.solver.max_iter
    fewshot_iters = load_recipe(fewshot_recipe, fewshot_over).cfg.solver.max_iter
    seconds, results = {}, {}
    total = len(STAGES)

    def stage(name, title, fn, *args, **kwargs):
        click.secho(f"\n[{STAGES.index(name) + 1}/{total}] {title}", bold=True)
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - start, 1)
        click.echo(f"[{name}] {seconds[name]:.1f} s")
        return value

    stage("data", f"synthetic data set: {plan.train_images} train / {plan.test_images} test images "
          f"of {plan.image_size} px -> {root}", write_synthetic_dataset, root, seed=0,
          train_images=plan.train_images, test_images=plan.test_images, size=plan.image_size)
    stage("splits", f"{plan.shots}-shot split files, seed 0 -> {root}/fewshot",
          _make_splits, root, plan.shots)
    stage("base_train", f"base training: toy_base, {base_iters} iterations -> {base_dir}",
          train_recipe, base_recipe, overrides=base_over, output_dir=base_dir, evaluate=False)
    base_ckpt = os.path.join(base_dir, "model_final.ckpt")
    results["base"] = _pick(stage("base_eval", "evaluate the base model (base classes)",
                                  evaluate_recipe, base_recipe, checkpoint=base_ckpt,
                                  overrides=base_over, pcb=False, progress=progress),
                            ("bAP", "bAP50"))
    stage("surgery", "surgery randinit: the predictor grown to base + novel classes",
          _surgery, base_ckpt, fewshot_recipe, fewshot_over, surgery_ckpt)
    stage("finetune", f"{plan.shots}-shot fine-tuning: toy_{plan.shots}shot, {fewshot_iters} "
          f"iterations -> {fewshot_dir}", train_recipe, fewshot_recipe, overrides=fewshot_over,
          output_dir=fewshot_dir, evaluate=False)
    fewshot_ckpt = os.path.join(fewshot_dir, "model_final.ckpt")
    evaluations = []

    def evaluate_fewshot(pcb):
        # one model and one detection pass of the test set for both tables; PCB rescores those
        if not evaluations:
            evaluations.append(Evaluation(fewshot_recipe, checkpoint=fewshot_ckpt, overrides=fewshot_over))
        return evaluations[0].evaluate(pcb=pcb, progress=progress)

    for name, pcb, key in (("eval", False, "fewshot"), ("eval_pcb", True, "fewshot_pcb")):
        metrics = stage(name, f"evaluate the {plan.shots}-shot model ({'with' if pcb else 'without'} "
                        f"PCB)", evaluate_fewshot, pcb)
        results[key] = _pick(metrics)
    evaluations.clear()
    test_images = os.path.join(root, "images", "test")
    previews = sorted(os.listdir(test_images))[:plan.preview_images]
    preview_dir = os.path.join(out, "predictions")
    stage("predictions", f"predicted boxes on {len(previews)} test images -> {preview_dir}",
          infer_to_folder, fewshot_recipe, fewshot_ckpt,
          [os.path.join(test_images, name) for name in previews], preview_dir,
          overrides=fewshot_over, progress=progress)
    summary = {
        "results": results,
        "seconds": seconds,
        "total_seconds": round(sum(seconds.values()), 1),
        "seconds_per_step": {"base": _round(seconds_per_step(base_dir)),
                             "finetune": _round(seconds_per_step(fewshot_dir))},
        "iterations": {"base": _trained_iterations(base_dir, base_iters),
                       "finetune": _trained_iterations(fewshot_dir, fewshot_iters)},
        "shots": plan.shots,
        "quick": bool(quick),
        "out": out,
        "predictions": sorted(os.path.join(preview_dir, name) for name in os.listdir(preview_dir)
                              if name.endswith(".png")),
    }
    with open(os.path.join(out, "summary.json"), "w") as handle:
        json.dump(summary, handle, indent=2)
    click.echo("\n" + format_summary(summary))
    click.echo(f"\nwrote {os.path.join(out, 'summary.json')}; predicted boxes in {preview_dir}")
    return summary


def _trained_iterations(run_dir, default):
    """max_iter of the schedule the trainer used (OUT/<run>/config.json), else `default`."""
    try:
        with open(os.path.join(run_dir, "config.json")) as handle:
            return int(json.load(handle)["schedule"]["max_iter"])
    except (OSError, KeyError, TypeError, ValueError):
        return default


def _round(value, digits=3):
    return None if value is None else round(value, digits)


def _cell(value):
    return "-" if value is None else f"{value:.1f}"


def format_summary(summary):
    """The final table (AP on a 0-100 scale) and seconds per stage, as plain text."""
    shots = summary.get("shots", 10)
    rows = (("base training", "base"), (f"{shots}-shot fine-tune", "fewshot"),
            (f"{shots}-shot fine-tune + PCB", "fewshot_pcb"))
    lines = [f"{'model':<26}" + "".join(f"{key:>8}" for key in TABLE_KEYS)]
    for title, key in rows:
        values = summary["results"].get(key, {})
        lines.append(f"{title:<26}" + "".join(f"{_cell(values.get(k)):>8}" for k in TABLE_KEYS))
    lines.append("")
    lines.append(f"{'stage':<26}{'seconds':>8}")
    for name, value in summary["seconds"].items():
        lines.append(f"{name:<26}{value:>8.1f}")
    lines.append(f"{'total':<26}{summary['total_seconds']:>8.1f}")
    per_step = summary["seconds_per_step"]
    iters = summary["iterations"]
    lines.append(f"training: base {iters['base']} iterations at {_cell_s(per_step['base'])} s/step, "
                 f"fine-tune {iters['finetune']} at {_cell_s(per_step['finetune'])} s/step")
    return "\n".join(lines)


def _cell_s(value):
    return "?" if value is None else f"{value:.2f}"
