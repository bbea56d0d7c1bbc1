"""Training schedules: the device-independent batch rule and the per-step learning rate.

The recipe's numbers (LR, iterations, LR steps, warmup, periods) are written for the
reference total batch `solver.reference_batch` (16 in DeFRCN: 8 GPUs x 2 images).
A run with another number of devices keeps them meaningful in one of two ways:

* scaling (default): the effective batch E = devices x images per device; the LR is
  scaled linearly (lr x E/R) and every iteration count by R/E (rounded), so the run sees
  the same number of images and drops the LR at the same point of training (the
  original author's advice in er-muyue/DeFRCN GitHub issue #19; the linear LR rule of Goyal et al. 2017,
  as torchvision's detection reference documents it).
* accumulation (`solver.accumulate=true`): gradients of `ims_per_batch / (devices x
  images per device)` micro-batches are summed into one step; the effective batch is
  `solver.ims_per_batch` (normally = R), so the LR and iterations stay as written
  (scaled only if ims_per_batch != R).
"""
import json
from bisect import bisect_right

import numpy as np

from defrcn.errors import InputError

__all__ = ["effective_schedule", "lr_per_step", "scale_iterations", "schedule_extras",
           "describe_schedule_change"]

# What defines the learning rate of every step; stored with each checkpoint as `schedule.<key>`.
SCHEDULE_KEYS = ("base_lr", "max_iter", "steps", "warmup_iters", "gamma", "warmup_factor")
_FLOAT_KEYS = ("base_lr", "gamma", "warmup_factor")


def scale_iterations(count, factor, *, minimum=1):
    """round(count x factor), keeping 0 as 0 ("never"/"off") and others >= minimum."""
    if count <= 0:
        return int(count)
    return max(minimum, int(round(count * factor)))


def effective_schedule(solver_cfg, num_devices, per_device_batch, eval_period=0):
    """The schedule a run with this many devices uses, as a dict.

    Args:
        solver_cfg: mapping with `reference_batch`, `ims_per_batch`, `accumulate`,
            `base_lr`, `max_iter`, `steps`, `warmup_iters`, `checkpoint_period`.
        num_devices: data-parallel world size (>= 1).
        per_device_batch: images per device per forward pass (>= 1).
        eval_period: `test.eval_period` in reference iterations (0 = only at the end).
    Returns:
        dict with `base_lr` (float), `max_iter`, `steps` (list), `warmup_iters`,
        `checkpoint_period`, `eval_period` (ints, in optimizer steps),
        `accumulate_steps` (micro-batches per optimizer step), `micro_batch`
        (devices x per_device_batch), `total_batch` (images per optimizer step),
        `reference_batch`, `scale` (total_batch / reference_batch), `gamma` and
        `warmup_factor` (as written) and `summary` (one human-readable line).
    Raises:
        InputError: accumulation asked but ims_per_batch is not a multiple of the
            micro-batch, or a non-positive batch.
    """
    if num_devices < 1 or per_device_batch < 1:
        raise InputError(
            f"solver: need at least 1 device and 1 image per device, got {num_devices} x {per_device_batch}"
        )
    reference = int(solver_cfg["reference_batch"])
    wanted = int(solver_cfg.get("ims_per_batch", reference))
    if reference < 1 or wanted < 1:
        raise InputError(f"solver: reference_batch ({reference}) and ims_per_batch ({wanted}) must be >= 1")
    micro = num_devices * per_device_batch
    if solver_cfg.get("accumulate", False):
        if wanted % micro:
            raise InputError(
                f"solver.accumulate: ims_per_batch {wanted} is not a multiple of "
                f"{num_devices} device(s) x {per_device_batch} image(s) = {micro}"
            )
        accumulate_steps = wanted // micro
    else:
        accumulate_steps = 1
    total = micro * accumulate_steps
    scale = total / reference
    iters = 1.0 / scale
    max_iter = scale_iterations(int(solver_cfg["max_iter"]), iters)
    schedule = {
        "base_lr": float(solver_cfg["base_lr"]) * scale,
        "max_iter": max_iter,
        "steps": [scale_iterations(int(s), iters) for s in solver_cfg["steps"]],
        "warmup_iters": scale_iterations(int(solver_cfg["warmup_iters"]), iters, minimum=0),
        "checkpoint_period": scale_iterations(int(solver_cfg["checkpoint_period"]), iters),
        "eval_period": scale_iterations(int(eval_period), iters),
        "accumulate_steps": accumulate_steps,
        "micro_batch": micro,
        "total_batch": total,
        "reference_batch": reference,
        "scale": scale,
        "gamma": float(solver_cfg.get("gamma", 0.1)),  # detectron2's SOLVER.GAMMA default
        "warmup_factor": float(solver_cfg.get("warmup_factor", 0.001)),
    }
    schedule["summary"] = _summary(solver_cfg, schedule, num_devices, per_device_batch)
    return schedule


def _summary(solver_cfg, s, num_devices, per_device_batch):
    batch = f"{num_devices} device(s) x {per_device_batch} image(s)"
    if s["accumulate_steps"] > 1:
        batch += f" x {s['accumulate_steps']} accumulated"
    head = f"batch {s['total_batch']} = {batch} (reference {s['reference_batch']})"
    if s["scale"] == 1:
        return f"{head}: LR {s['base_lr']:g}, {s['max_iter']} iterations, steps {s['steps']} as written"
    return (
        f"{head}: LR {float(solver_cfg['base_lr']):g} -> {s['base_lr']:g}, "
        f"iterations {int(solver_cfg['max_iter'])} -> {s['max_iter']}, "
        f"steps {list(solver_cfg['steps'])} -> {s['steps']}, "
        f"warmup {int(solver_cfg['warmup_iters'])} -> {s['warmup_iters']}"
    )


def lr_per_step(base_lr, max_iter, steps, gamma, warmup_iters, warmup_factor, warmup_method="linear"):
    """The learning rate of every iteration, float32 array of length max_iter.

    detectron2's WarmupMultiStepLR: lr(t) = base_lr x w(t) x gamma^(number of steps <= t),
    with w(t) = warmup_factor x (1 - t/warmup_iters) + t/warmup_iters for t < warmup_iters
    ("linear"), warmup_factor for t < warmup_iters ("constant"), 1 afterwards.
    """
    if warmup_method not in ("linear", "constant"):
        raise ValueError(f"warmup_method must be 'linear' or 'constant', got {warmup_method!r}")
    milestones = sorted(int(s) for s in steps)
    rates = np.empty(int(max_iter), dtype=np.float64)
    for t in range(int(max_iter)):
        if t < warmup_iters:
            if warmup_method == "linear":
                alpha = t / warmup_iters
                warm = warmup_factor * (1.0 - alpha) + alpha
            else:
                warm = warmup_factor
        else:
            warm = 1.0
        rates[t] = base_lr * warm * gamma ** bisect_right(milestones, t)
    return rates.astype(np.float32)


def schedule_extras(plan):
    """The plan's LR-defining values as checkpoint extras `schedule.<key>` (steps as JSON)."""
    extras = {}
    for key in SCHEDULE_KEYS:
        if key in plan:
            value = plan[key]
            extras[f"schedule.{key}"] = json.dumps([int(s) for s in value]) if key == "steps" else value
    return extras


def describe_schedule_change(stored, plan, rates):
    """How `plan` (LR list `rates`) differs from the schedule stored with a checkpoint, as
    "max_iter 20 -> 30; steps [15] -> [25]", or None if it is the same.

    `stored`: the checkpoint's extras (`schedule.<key>` values and/or its LR list
    `schedule.learning_rate`, which older checkpoints have alone)."""
    changes = []
    if any(f"schedule.{key}" in stored for key in SCHEDULE_KEYS):
        for key in SCHEDULE_KEYS:
            if f"schedule.{key}" not in stored or key not in plan:
                continue
            old, new = stored[f"schedule.{key}"], plan[key]
            if key == "steps":
                old, new = json.loads(old), [int(s) for s in new]
                same = old == new
            elif key in _FLOAT_KEYS:
                old, new = float(old), float(new)
                same = np.isclose(old, new, rtol=1e-6, atol=0.0)
            else:
                old, new = int(old), int(new)
                same = old == new
            if not same:
                changes.append(f"{key} {old:g} -> {new:g}" if key in _FLOAT_KEYS else f"{key} {old} -> {new}")
    elif "schedule.learning_rate" in stored:
        old, new = np.asarray(stored["schedule.learning_rate"], np.float32).reshape(-1), np.asarray(rates, np.float32)
        if old.size != new.size:
            changes.append(f"max_iter {old.size} -> {new.size}")
        common = min(old.size, new.size)
        differ = np.flatnonzero(old[:common] != new[:common])
        if differ.size:
            first = int(differ[0])
            changes.append(f"learning rate of iteration {first + 1} {old[first]:g} -> {new[first]:g}")
    return "; ".join(changes) or None
