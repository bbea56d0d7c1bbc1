"""Iteration-based training on `mindspore.train.Model.train`.

Mapping (exact step counts): the trainer builds a finite dataset of exactly
`(max_iter - start_iter) * grad_accumulation` batches starting at sample position
`start_iter` (the infinite stream cut with `.take`), and runs ONE epoch with
`dataset_sink_mode=False`. Model's `cur_step_num` then counts micro-steps of this run, and
`IterationClock` (inserted first) turns it into the absolute iteration
`start_iter + cur_step_num // grad_accumulation` for the other callbacks (see
`defrcn.callbacks.period`). Resume: build the TrainStep, `restore_training_state` ->
start_iter, rebuild the dataset at start_iter, call `run_training` again.
"""
from mindspore.train import Model

from defrcn.callbacks.period import IterationClock


def run_training(train_step, dataset, callbacks, start_iter, max_iter):
    """Run `max_iter - start_iter` iterations of `train_step` (a TrainStep) over `dataset`.

    Args:
        train_step: `defrcn.engine.train_step.TrainStep` (network + optimizer inside).
        dataset: a mindspore.dataset with at least the needed number of batches; longer
            (or repeated) datasets are cut with `.take`.
        callbacks: ordered list; put NanGuard before Checkpointer so a non-finite state is
            never saved. An IterationClock is inserted first (any clock in the list is
            replaced, so start_iter and accumulation always come from here).
    Returns:
        the Model used (for tests and drivers that want `model.train_network`).
    """
    accumulation = int(getattr(train_step, "grad_accumulation", 1))
    steps = (int(max_iter) - int(start_iter)) * accumulation
    if steps <= 0:
        raise ValueError(f"nothing to train: start_iter={start_iter} >= max_iter={max_iter}")
    size = dataset.get_dataset_size()
    if size is not None and 0 <= size < steps:
        raise ValueError(f"dataset has {size} batches but {steps} are needed "
                         f"(iterations {start_iter}..{max_iter}, accumulation {accumulation})")
    if size != steps:
        dataset = dataset.take(steps)
    model = Model(train_step)
    clock = IterationClock(start_iter=start_iter, grad_accumulation=accumulation)
    others = [cb for cb in callbacks if not isinstance(cb, IterationClock)]
    model.train(1, dataset, callbacks=[clock] + others, dataset_sink_mode=False)
    return model
