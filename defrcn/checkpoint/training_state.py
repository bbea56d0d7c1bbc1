"""Everything an exact resume needs, as checkpoint entries, and its restore.

A training checkpoint holds:
  - the network's parameters under their own names (BN statistics and frozen ones too);
  - the optimizer's own parameters (momenta/moments, `global_step`, the LR list) as
    `optimizer.<name>`; the LR list is configuration, not state: a resume takes it from the
    recipe (as detectron2 rebuilds its scheduler), so a run can be extended or its LR steps
    moved; the file's list and `schedule.*` extras say what the run was trained with;
  - the train step's own parameters (gradient accumulators, the loss scaler's scale and
    counter) as `train_step.<name>`;
  - extras: `iteration` (completed steps; the data pipeline resumes at `start_iter =
    iteration`), MindSpore's default generator state, numpy's and python's global RNG state.
MindSpore's global seed is set once at start by the trainer; data randomness must be a
function of (seed, sample index) so that starting the pipeline at `start_iter` replays it.
"""
import random

import numpy as np

import mindspore as ms
from mindspore import Tensor

from defrcn.checkpoint import io
from defrcn.errors import InputError

OPTIMIZER_PREFIX = "optimizer."
TRAIN_STEP_PREFIX = "train_step."
# optimizer entries that hold the schedule, not the training state: never restored
SCHEDULE_ENTRIES = (OPTIMIZER_PREFIX + "learning_rate",)
# train-step entries a checkpoint may lack: the mixed-precision loss scaler's state (a float32
# run resumed with solver.amp_level on starts the scale afresh; see defrcn/engine/train_step.py)
OPTIONAL_ENTRIES = (TRAIN_STEP_PREFIX + "loss_scale", TRAIN_STEP_PREFIX + "loss_scale_counter")
STORED_LR = "schedule.learning_rate"
RESTART_ADVICE = ("to start a new schedule from its weights pass --init {path} instead of --resume, "
                  "or train into another --output-dir")


def _network_of(cell):
    """The network inside a TrainStep/TrainOneStepCell, or the cell itself."""
    return getattr(cell, "network", cell)


def training_state_entries(cell, optimizer):
    """[{"name", "data"}] of network + optimizer + train-step parameters (see module doc)."""
    network = _network_of(cell)
    network_params = list(network.get_parameters())
    seen = {id(p) for p in network_params}
    entries = [{"name": p.name, "data": p} for p in network_params]
    for param in optimizer.get_parameters():
        if id(param) not in seen:
            seen.add(id(param))
            entries.append({"name": OPTIMIZER_PREFIX + param.name, "data": param})
    if cell is not network:
        for param in cell.get_parameters():
            if id(param) not in seen:
                seen.add(id(param))
                entries.append({"name": TRAIN_STEP_PREFIX + param.name, "data": param})
    return entries


def rng_state_extras():
    """Global RNG states as checkpoint extras (MindSpore default generator, numpy, python)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "rng.mindspore": ms.get_rng_state().asnumpy(),
        "rng.numpy_keys": np.asarray(np_keys, dtype=np.int64),
        "rng.numpy_pos": int(np_pos),
        "rng.numpy_has_gauss": int(np_has_gauss),
        "rng.numpy_gauss": float(np_gauss),
        "rng.python_state": np.asarray(py_state, dtype=np.int64),
        "rng.python_gauss": float("nan") if py_gauss is None else float(py_gauss),
        "rng.python_version": int(py_version),
    }


def restore_rng_state(extras):
    """Inverse of `rng_state_extras` (missing keys are left alone)."""
    if "rng.mindspore" in extras:
        ms.set_rng_state(ms.Tensor(np.asarray(extras["rng.mindspore"], dtype=np.uint8)))
    if "rng.numpy_keys" in extras:
        np.random.set_state(("MT19937", np.asarray(extras["rng.numpy_keys"], dtype=np.uint32),
                             int(extras["rng.numpy_pos"]), int(extras["rng.numpy_has_gauss"]),
                             float(extras["rng.numpy_gauss"])))
    if "rng.python_state" in extras:
        gauss = float(extras["rng.python_gauss"])
        random.setstate((int(extras["rng.python_version"]),
                         tuple(int(v) for v in extras["rng.python_state"]),
                         None if np.isnan(gauss) else gauss))


def save_training_state(path, cell, optimizer, iteration, *, extra=None):
    """Atomically write a resumable checkpoint after `iteration` completed steps."""
    extras = {"iteration": int(iteration), **rng_state_extras(), **(extra or {})}
    return io.save_checkpoint(training_state_entries(cell, optimizer), path, extra=extras)


def restore_training_state(cell, optimizer, path, *, with_extras=False):
    """Load network, optimizer and train-step state and the RNG states from `path`.

    Args:
        cell: the TrainStep (or the bare network when no accumulators exist).
        optimizer: the optimizer the TrainStep applies.
    The learning-rate list is not restored: the optimizer keeps the recipe's.

    Returns:
        iteration: completed steps stored in the file (start the data pipeline at it);
        with `with_extras`, (iteration, other extras such as callback state; the stored
        schedule as `schedule.*`, its LR list as `schedule.learning_rate`).
    Raises:
        InputError naming the file if it is missing, damaged, or does not fit the model.
    """
    params = io.load_checkpoint(path)
    extras = io.split_extras(params)
    advice = RESTART_ADVICE.format(path=path)
    if "iteration" not in extras:
        raise InputError(f"not a training checkpoint (no iteration stored): {advice}", path=path)
    network = _network_of(cell)
    try:
        io.load_into(network, params, strict=True)
    except InputError as error:
        raise InputError(f"{error}: it is a checkpoint of another model or class count; {advice}",
                         path=path)
    targets = {}
    for entry in training_state_entries(cell, optimizer):
        if entry["name"].startswith((OPTIMIZER_PREFIX, TRAIN_STEP_PREFIX)) and entry["name"] not in SCHEDULE_ENTRIES:
            targets[entry["name"]] = entry["data"]
    absent = sorted(set(targets) - set(params) - set(OPTIONAL_ENTRIES))
    if absent:
        raise InputError(f"training state incomplete: {len(absent)} missing (e.g. {absent[:3]}): the "
                         f"trained parameters or the optimizer differ from the run that wrote it; {advice}",
                         path=path)
    for name, param in targets.items():
        if name not in params:  # an optional entry
            continue
        value = params[name]
        if tuple(value.shape) != tuple(param.shape):
            raise InputError(f"{name}: checkpoint {tuple(value.shape)} vs optimizer {tuple(param.shape)}; "
                             f"{advice}", path=path)
        param.set_data(Tensor(value.asnumpy(), dtype=param.dtype))
    restore_rng_state(extras)
    for name in SCHEDULE_ENTRIES:
        if name in params:
            extras.setdefault(STORED_LR, params[name].asnumpy())
    iteration = int(extras.pop("iteration"))
    if with_extras:
        return iteration, {k: v for k, v in extras.items() if not k.startswith("rng.")}
    return iteration
