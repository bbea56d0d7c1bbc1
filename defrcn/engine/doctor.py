"""Checks of a recipe before heavy work (`tools/doctor.py`; also run by train and eval).

    findings = run_checks(load_recipe("recipes/toy_10shot.py").cfg)
    for f in findings: print(f.level, f.message)

Each check gives one-line findings, level "ok", "warning" or "error" (an error stops a
training or an evaluation before anything is built):
- classes: the data set's categories vs `data.base_classes` / `data.novel_classes` vs
  `model.num_classes` (for the setting);
- few-shot split (training, fine-tune settings): every class of the fine-tune set has
  instances in the split files of (`data.shots`, `data.split_seed`) — none is an error,
  other than K a warning (TFA's published seed-0 COCO files hold more than K for a few classes);
- test set: every class, novel ones above all, has at least one instance (a warning: its
  AP is undefined; tiny demo test sets may lack one);
- weights: the initial checkpoint fits the surgery method and the class counts, read from
  its predictor shapes without building the model;
- frozen parts: a part the recipe's setting trains is frozen (e.g. `model.freeze_at` 4 in
  a fine-tune), BatchNorm or stages frozen at a random initialisation.
"""
import os
from collections import Counter
from typing import NamedTuple

from defrcn.errors import InputError
from defrcn.modeling.param_names import CLS_WEIGHT

__all__ = ["Finding", "LEVELS", "run_checks", "errors_of", "check_or_raise", "format_finding"]

LEVELS = ("ok", "warning", "error")
DEFRCN_FINETUNE_FREEZE_AT = 3  # configs/*/defrcn_*_novel*.yaml BACKBONE.FREEZE_AT: stem, res2, res3
LAST_BACKBONE_STAGE = 4  # C4: the backbone ends at res4 (res5 is the RoI head)


class Finding(NamedTuple):
    """One line of the doctor: level "ok" | "warning" | "error" and the message."""

    level: str
    message: str


def format_finding(finding):
    return f"{finding.level + ':':<8} {finding.message}"


def errors_of(findings):
    return [f for f in findings if f.level == "error"]


def _guard(findings, check, *args):
    """Run one check; an InputError it raises becomes an error finding."""
    try:
        findings.extend(check(*args))
    except InputError as e:
        findings.append(Finding("error", str(e).splitlines()[0]))


def run_checks(cfg, *, init=None, purpose="train", spec=None):
    """Findings for a resolved or unresolved recipe cfg (not modified).

    Args:
        init: the checkpoint the run starts from instead of the recipe's weights
            (`--init`), or, for purpose "eval", the checkpoint evaluated.
        purpose: "train" (all checks) or "eval" (classes, test set, the checkpoint).
        spec: cfg's `DataSpec` when the caller has resolved it already (not read again).
    Returns:
        list of Finding, in check order.
    """
    from defrcn.data.spec import resolve_data_spec

    findings = []
    try:
        spec = spec or resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)
    except InputError as e:
        return [Finding("error", str(e).splitlines()[0])]
    findings.append(Finding("ok", f"classes: {len(spec.base_classes)} base + {len(spec.novel_classes)} novel; "
                                  f"setting '{spec.setting}' -> model.num_classes {spec.num_classes}"))
    if purpose == "train" and spec.setting != "base":
        _guard(findings, _check_split, spec)
    _guard(findings, _check_test_set, spec)
    if purpose == "train":
        _guard(findings, _check_weights, cfg, spec, init)
        findings.extend(_check_frozen(cfg, init))
    elif init:
        _guard(findings, _check_eval_checkpoint, spec, init)
    return findings


def check_or_raise(cfg, *, init=None, purpose="train", spec=None):
    """run_checks; InputError with the first error (one line, the count of the others);
    returns the warnings otherwise."""
    findings = run_checks(cfg, init=init, purpose=purpose, spec=spec)
    errors = errors_of(findings)
    if errors:
        more = f" (and {len(errors) - 1} more problem(s): run tools/doctor.py)" if len(errors) > 1 else ""
        raise InputError(f"doctor: {errors[0].message}{more}")
    return [f for f in findings if f.level == "warning"]


def _check_split(spec):
    from defrcn.data.spec import fewshot_records_of_class

    d = spec
    names = spec.model_classes
    where = f"{d.shots}-shot split, seed {d.split_seed}"
    findings = []
    for name in names:
        count = sum(len(r["annotations"]) for r in fewshot_records_of_class(spec, name))
        if count == 0:
            findings.append(Finding("error", f"data: class '{name}' has no instance in the {where} "
                                             f"(its split file holds no usable box)"))
        elif count != d.shots:
            findings.append(Finding("warning", f"data: class '{name}' has {count} instances in the "
                                               f"{where}, not {d.shots}"))
    if not findings:
        findings.append(Finding("ok", f"split: each of the {len(names)} classes has {d.shots} instance(s) "
                                      f"in the {where}"))
    return findings


def _check_test_set(spec):
    from defrcn.data.spec import load_split

    records, meta = load_split(spec, "test")
    counts = Counter(meta.class_names[a["category_id"]] for r in records for a in r["annotations"])
    findings = []
    for name in meta.class_names:
        if counts[name]:
            continue
        kind = "novel class" if name in meta.novel_classes else "class"
        findings.append(Finding("warning", f"data: {kind} '{name}' has no instance in the test set "
                                           f"(no AP for it)"))
    if not findings:
        findings.append(Finding("ok", f"test set: {len(records)} images, every one of the "
                                      f"{len(meta.class_names)} classes present"))
    return findings


def _predictor_classes(path, what):
    """Classes of a checkpoint's box predictor (rows - 1), or None if it has none."""
    from defrcn.checkpoint.io import load_checkpoint

    if not os.path.isfile(str(path)):
        raise InputError(f"{what}: checkpoint not found", path=str(path))
    weight = load_checkpoint(str(path)).get(CLS_WEIGHT)
    return None if weight is None else int(weight.shape[0]) - 1


def _check_weights(cfg, spec, init):
    m = cfg.model
    if init:
        found = _predictor_classes(init, "--init")
        if found is not None and found != spec.num_classes:
            return [Finding("error", f"--init {init}: its predictor has {found} classes, "
                                     f"model.num_classes is {spec.num_classes}")]
        return [Finding("ok", f"weights: --init {init}")]
    base_weights = m.get("base_weights", "")
    if not base_weights:
        weights = m.get("weights", "")
        if weights and not os.path.isfile(weights):
            return [Finding("error", f"model.weights: {weights} not found; make it with tools/convert.py "
                                     f"or set model.weights=''")]
        return [Finding("ok", f"weights: {'ImageNet ' + weights if weights else 'random initialisation'}")]
    if not os.path.isfile(base_weights):
        return [Finding("error", f"model.base_weights: {base_weights} not found; make it with "
                                 f"tools/surgery.py from the base run's model_final.ckpt")]
    found = _predictor_classes(base_weights, "model.base_weights")
    num_base, target = len(spec.base_classes), spec.num_classes
    method = m.get("surgery", "none")
    has = "no predictor" if found is None else f"a predictor for {found} classes"
    if method == "randinit":
        if found not in (num_base, target):
            return [Finding("error", f"model.base_weights {base_weights}: {has}; surgery randinit needs "
                                     f"a base checkpoint of the {num_base} base classes (or its surgery "
                                     f"output for {target})")]
    elif method == "remove":
        if found is not None and found != num_base:
            return [Finding("warning", f"model.base_weights {base_weights}: {has}, not the {num_base} "
                                       f"base classes (dropped by surgery remove): another base run?")]
    elif found != target:
        return [Finding("error", f"model.base_weights {base_weights}: {has}, but model.num_classes is "
                                 f"{target} and model.surgery is 'none'")]
    return [Finding("ok", f"weights: {base_weights} ({has}; surgery {method} -> {target} classes)")]


def _check_eval_checkpoint(spec, checkpoint):
    found = _predictor_classes(checkpoint, "--checkpoint")
    if found is not None and found != spec.num_classes:
        return [Finding("error", f"{checkpoint}: its {CLS_WEIGHT} has {found + 1} rows — trained for "
                                 f"{found} classes, this recipe has {spec.num_classes}")]
    return [Finding("ok", f"checkpoint: {checkpoint} fits {spec.num_classes} classes")]


def _check_frozen(cfg, init):
    m = cfg.model
    findings = []
    pretrained = bool(init or m.get("base_weights", "") or m.get("weights", ""))
    if cfg.data.setting != "base" and m.freeze_at > DEFRCN_FINETUNE_FREEZE_AT:
        trunk = "; with model.freeze_res5 only the RPN, the two GDL affines and the box predictor train" \
            if m.get("freeze_res5") else ""
        findings.append(Finding("warning", f"model.freeze_at={m.freeze_at} freezes res4, which DeFRCN "
                                           f"fine-tunes (freeze_at {DEFRCN_FINETUNE_FREEZE_AT}){trunk}"))
    if not pretrained and m.freeze_at > 0:
        findings.append(Finding("warning", f"model.freeze_at={m.freeze_at}: stages frozen at their random "
                                           f"initial values (no model.weights)"))
    if not pretrained and m.norm == "frozen_bn":
        findings.append(Finding("warning", "model.norm=frozen_bn with random initialisation: BatchNorm "
                                           "statistics never learnt (set model.norm=bn or model.weights)"))
    if m.freeze_at > LAST_BACKBONE_STAGE:
        findings.append(Finding("warning", f"model.freeze_at={m.freeze_at}: above {LAST_BACKBONE_STAGE}, "
                                           f"the last backbone stage (res4)"))
    if not findings:
        findings.append(Finding("ok", f"frozen: stem..res{m.freeze_at}" if m.freeze_at > 1 else
                                "frozen: " + ("stem" if m.freeze_at == 1 else "nothing")))
    return findings
