"""Training N steps in one go and N/2 + restart + N/2 gives bit-identical parameters
(SGD momentum, per-step LR list, Model.train, Checkpointer, graph mode)."""
import numpy as np
import pytest

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn

from defrcn.callbacks.checkpointer import Checkpointer
from defrcn.callbacks.nan_guard import NanGuard
from defrcn.checkpoint.io import find_resume_checkpoint
from defrcn.checkpoint.training_state import restore_training_state
from defrcn.engine.loop import run_training
from defrcn.engine.train_step import TrainStep
from defrcn.testing import TinyRegression

TOTAL_STEPS = 8
LOSS_NAMES = ("loss_mse", "loss_l1")
LR_PER_STEP = [0.05, 0.05, 0.04, 0.04, 0.03, 0.02, 0.02, 0.01]


pytestmark = pytest.mark.usefixtures("graph_mode")


class BatchSource:
    """Batch i is a pure function of (seed, i): the stream restarts at any iteration."""

    def __init__(self, start, stop, seed=7, batch=4):
        self.start, self.stop, self.seed, self.batch = start, stop, seed, batch

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, self.start + index])
        x = rng.normal(size=(self.batch, 3)).astype(np.float32)
        y = (x.sum(axis=1, keepdims=True) * 0.3 + 0.1).astype(np.float32)
        return x, y


def dataset(start_iter, stop_iter, accumulation=1):
    """Micro-batches of iterations start_iter..stop_iter (accumulation per iteration)."""
    source = BatchSource(start_iter * accumulation, stop_iter * accumulation)
    return ds.GeneratorDataset(source, ["x", "y"], shuffle=False)


def build(accumulation=1, seed=0):
    ms.set_seed(seed)
    network = TinyRegression()
    optimizer = nn.Momentum(network.trainable_params(), learning_rate=LR_PER_STEP, momentum=0.9)
    return TrainStep(network, optimizer, grad_accumulation=accumulation), optimizer


def state_of(train_step):
    return {p.name: p.asnumpy().copy() for p in train_step.get_parameters()}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_is_bit_identical(tmp_path, accumulation):
    straight_dir, resumed_dir = str(tmp_path / "straight"), str(tmp_path / "resumed")
    step, optimizer = build(accumulation)
    callbacks = [NanGuard(loss_names=LOSS_NAMES, output_dir=straight_dir),
                 Checkpointer(output_dir=straight_dir, period=4, keep=2, optimizer=optimizer,
                              max_iter=TOTAL_STEPS, is_main=True)]
    run_training(step, dataset(0, TOTAL_STEPS, accumulation), callbacks, 0, TOTAL_STEPS)
    expected = state_of(step)

    half = TOTAL_STEPS // 2
    step, optimizer = build(accumulation)
    callbacks = [Checkpointer(output_dir=resumed_dir, period=4, keep=2, optimizer=optimizer, max_iter=TOTAL_STEPS,
                              is_main=True)]
    run_training(step, dataset(0, half, accumulation), callbacks, 0, half)  # "crash" after N/2

    step, optimizer = build(accumulation, seed=1)  # "new process": other objects, other init
    path = find_resume_checkpoint(resumed_dir)
    assert path.endswith("model_0000004.ckpt")
    start_iter = restore_training_state(step, optimizer, path)
    assert start_iter == half
    callbacks = [Checkpointer(output_dir=resumed_dir, period=4, keep=2, optimizer=optimizer, max_iter=TOTAL_STEPS,
                              is_main=True)]
    run_training(step, dataset(start_iter, TOTAL_STEPS, accumulation), callbacks, start_iter,
                 TOTAL_STEPS)
    resumed = state_of(step)

    assert sorted(resumed) == sorted(expected)
    assert int(resumed["global_step"].item()) == TOTAL_STEPS
    for name in expected:
        assert np.array_equal(resumed[name], expected[name]), name
    # the training actually moved the weights
    fresh, _ = build()
    assert not np.array_equal(state_of(fresh)["hidden.weight"], expected["hidden.weight"])
