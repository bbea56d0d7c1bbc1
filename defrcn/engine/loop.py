"""Iteration-based training on `mindspore.train.Model.train`.

Mapping (exact step counts): the trainer builds a finite dataset of exactly
`(max_iter - start_iter) * grad_accumulation` batches starting at sample position
`start_iter` (the infinite stream cut with `.take`), and runs ONE epoch with
`dataset_sink_mode=False`. Model's `cur_step_num` then counts micro-steps of this run, and
`IterationClock` (inserted first) turns it into the absolute iteration
`start_iter + cur_step_num // grad_accumulation` for the other callbacks (see
`IterationClock`). Resume: build the TrainStep, `restore_training_state` ->
start_iter, rebuild the dataset at start_iter, call `run_training` again.

Data sink (`sink_size` N > 1, GPU/Ascend in graph mode): the same dataset runs as
`(max_iter - start_iter) / N` sinks of N iterations (`dataset_sink_mode=True`,
`sink_size=N * grad_accumulation` micro-steps). Model calls the step callbacks once per
sink, after it, with `cur_step_num` advanced by the whole sink and `net_outputs` of its
last step; so when N divides start_iter, max_iter and every period the callbacks fire at
exactly the iterations they fire at without a sink (`dataset_sink_size` picks such an N),
with that iteration's losses. MindSpore has no sink on CPU (Model.train then feeds from the
host and runs every "epoch" over the whole dataset) nor in PyNative mode: there the run
goes without a sink, saying so in one line.
"""
import logging
import math

import mindspore as ms
from mindspore.train import Callback, Model

logger = logging.getLogger(__name__)
SINK_FALLBACK = "solver.dataset_sink: %s; training without it (same iterations, same results)"


class IterationClock(Callback):
    """Publishes the absolute iteration on cb_params for the callbacks that follow it."""

    def __init__(self, start_iter=0, grad_accumulation=1):
        super().__init__()
        self.start_iter = int(start_iter)
        self.grad_accumulation = int(grad_accumulation)

    def _publish(self, cb_params):
        micro = int(cb_params.cur_step_num)
        cb_params.start_iter = self.start_iter
        cb_params.iteration = self.start_iter + micro // self.grad_accumulation
        cb_params.is_update_step = micro % self.grad_accumulation == 0

    def on_train_begin(self, run_context):
        cb_params = run_context.original_args()
        cb_params.start_iter = self.start_iter
        cb_params.iteration = self.start_iter
        cb_params.is_update_step = True

    def on_train_step_begin(self, run_context):
        cb_params = run_context.original_args()
        # iteration in progress (1-based), for callbacks that report during a step
        cb_params.iteration_in_progress = (
            self.start_iter + (int(cb_params.cur_step_num) - 1) // self.grad_accumulation + 1)

    def on_train_step_end(self, run_context):
        self._publish(run_context.original_args())


def dataset_sink_size(wanted, *, periods, start_iter, max_iter):
    """Iterations per sink: the largest N <= `wanted` dividing every positive period,
    start_iter and max_iter, so that a sink ends at every iteration a callback acts on.
    0 when that is 1 (no point in sinking)."""
    size = max(int(wanted), 0)
    for value in (*periods, start_iter, max_iter):
        if int(value) > 0:
            size = math.gcd(size, int(value))
    return size if size > 1 else 0


def sink_unsupported_reason():
    """Why this process cannot sink (None if it can): CPU device or PyNative mode."""
    if ms.get_context("device_target") == "CPU":
        return "MindSpore's CPU backend has no data sink mode"
    if ms.get_context("mode") == ms.PYNATIVE_MODE:
        return "data sink mode needs graph mode"
    return None


def run_training(train_step, dataset, callbacks, start_iter, max_iter, *, sink_size=0):
    """Run `max_iter - start_iter` iterations of `train_step` (a TrainStep) over `dataset`.

    Args:
        train_step: `defrcn.engine.train_step.TrainStep` (network + optimizer inside).
        dataset: a mindspore.dataset with at least the needed number of batches; longer
            (or repeated) datasets are cut with `.take`.
        callbacks: ordered list; put NanGuard before Checkpointer so a non-finite state is
            never saved. An IterationClock is inserted first (any clock in the list is
            replaced, so start_iter and accumulation always come from here).
        sink_size: iterations per data sink (0: no sink; see the module docstring). It must
            divide start_iter and max_iter (ValueError otherwise). On CPU or in PyNative mode
            the run goes without a sink, with one logged line.
    Returns:
        the Model used (for tests and drivers that want `model.train_network`).
    """
    accumulation = int(getattr(train_step, "grad_accumulation", 1))
    steps = (int(max_iter) - int(start_iter)) * accumulation
    if steps <= 0:
        raise ValueError(f"nothing to train: start_iter={start_iter} >= max_iter={max_iter}")
    sink_size = int(sink_size or 0)
    if sink_size > 1 and (int(start_iter) % sink_size or int(max_iter) % sink_size):
        raise ValueError(f"sink_size {sink_size} must divide start_iter {start_iter} and max_iter {max_iter}")
    size = dataset.get_dataset_size()
    if size is not None and 0 <= size < steps:
        raise ValueError(f"dataset has {size} batches but {steps} are needed "
                         f"(iterations {start_iter}..{max_iter}, accumulation {accumulation})")
    if size != steps:
        dataset = dataset.take(steps)
    if sink_size > 1:
        reason = sink_unsupported_reason()
        if reason:
            logger.info(SINK_FALLBACK, reason)
            sink_size = 0
    model = Model(train_step)
    clock = IterationClock(start_iter=start_iter, grad_accumulation=accumulation)
    callbacks = [clock] + [cb for cb in callbacks if not isinstance(cb, IterationClock)]
    if sink_size > 1:
        micro_steps = sink_size * accumulation
        model.train(steps // micro_steps, dataset, callbacks=callbacks, dataset_sink_mode=True,
                    sink_size=micro_steps)
    else:
        model.train(1, dataset, callbacks=callbacks, dataset_sink_mode=False)
    return model
