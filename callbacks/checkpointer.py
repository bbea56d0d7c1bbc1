"""Periodic and final checkpoints with the `last_checkpoint` pointer (the README's
"Output folder").

Every `period` iterations: `OUTPUT/checkpoints/model_{iter:07d}.ckpt` (atomic, with hash),
then the pointer moves, then old periodic files beyond `keep` are pruned. At `max_iter`:
`OUTPUT/model_final.ckpt` (never pruned). A file holds the full training state
(`defrcn.checkpoint.training_state`), so any of them resumes exactly. A failed write (disk
full, unwritable folder) raises `io.CheckpointWriteError` (one line naming the file) and
leaves the previous checkpoint and the pointer as they were.
"""
import logging
import os

import numpy as np

from mindspore.train import Callback

from defrcn.callbacks.period import current_iteration, every_n, loss_parts, non_finite
from defrcn.checkpoint import io
from defrcn.checkpoint.training_state import save_training_state
from defrcn.solver.schedule import schedule_extras
from defrcn.utils.atomic import remove_stale_temp_files
from defrcn.utils.faults import fault_point

logger = logging.getLogger(__name__)


def _first_non_finite_parameter(cell):
    for param in cell.get_parameters():
        value = param.asnumpy()
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return param.name
    return None


class Checkpointer(Callback):
    """Saves the TrainStep's state (network, optimizer, accumulators, RNG, iteration).

    Args:
        output_dir: run folder; periodic files go to `output_dir/checkpoints/`.
        period: iterations between periodic checkpoints (<= 0: final only).
        keep: periodic checkpoints kept (<= 0: all); the final one is never deleted.
        optimizer: the optimizer inside the TrainStep (its state is saved).
        max_iter: the last iteration; reaching it writes `model_final.ckpt`.
        is_main: False on ranks other than 0: the callback does nothing.
        extra_state_fn: optional `() -> dict` of extra values (e.g. callback state) stored
            with each checkpoint (read back with `restore_training_state(..., with_extras=True)`).
        schedule: optional `effective_schedule` dict; its LR-defining values are stored as
            `schedule.*` extras, so that a resume can say what changed.
    """

    def __init__(self, *, output_dir, period, keep, optimizer, max_iter, is_main=True,
                 extra_state_fn=None, schedule=None):
        super().__init__()
        self.output_dir = output_dir
        self.period = int(period)
        self.keep = int(keep)
        self.optimizer = optimizer
        self.max_iter = int(max_iter)
        self.is_main = bool(is_main)
        self.extra_state_fn = extra_state_fn
        self.schedule_extras = schedule_extras(schedule) if schedule else {}
        self.saved = []  # paths written by this run, in order

    def on_train_begin(self, run_context):
        if not self.is_main:
            return
        for folder in (self.output_dir, os.path.join(self.output_dir, io.CHECKPOINT_SUBDIR)):
            for path in remove_stale_temp_files(folder):
                logger.info("removed %s, left by an interrupted checkpoint write", path)

    def on_train_step_end(self, run_context):
        if not self.is_main:
            return
        iteration, is_update_step = current_iteration(run_context)
        if not is_update_step:
            return
        final = iteration >= self.max_iter
        if not final and not every_n(iteration, self.period):
            return
        cb_params = run_context.original_args()
        self._check_finite(cb_params, iteration, self.output_dir)
        if final:
            path = os.path.join(self.output_dir, io.FINAL_NAME)
        else:
            path = os.path.join(self.output_dir, io.CHECKPOINT_SUBDIR, io.periodic_name(iteration))
        extra = dict(self.schedule_extras, **(self.extra_state_fn() if self.extra_state_fn else {}))
        save_training_state(path, cb_params.train_network, self.optimizer, iteration, extra=extra)
        fault_point("checkpoint_write:before_pointer")  # test hook (defrcn.engine.runtime)
        io.write_last_checkpoint(self.output_dir, os.path.relpath(path, self.output_dir))
        self.saved.append(path)
        logger.info("saved checkpoint %s", path)
        if not final:
            io.prune_checkpoints(os.path.dirname(path), self.keep)

    @staticmethod
    def _check_finite(cb_params, iteration, output_dir):
        outputs = cb_params.net_outputs
        count = len(outputs) if isinstance(outputs, (tuple, list)) else 1
        names = [f"output{i}" for i in range(1, count)]
        bad = non_finite(loss_parts(outputs, names))
        bad_param = _first_non_finite_parameter(cb_params.train_network)
        if bad or bad_param:
            what = f"parameter {bad_param}" if bad_param else ", ".join(n for n, _ in bad)
            last = io.read_last_checkpoint(output_dir)
            raise FloatingPointError(f"refusing to save a non-finite state at iteration "
                                     f"{iteration} ({what} is not finite); last good checkpoint: {last or 'none'}")
