"""A tiny regression trained through Model.train, shared by the callback tests (PyNative:
the callbacks do not depend on the mode and PyNative has no compile cost)."""
import numpy as np
import pytest

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn

from defrcn.engine.loop import run_training
from defrcn.engine.train_step import TrainStep
from defrcn.testing import TinyRegression

LOSS_NAMES = ("loss_mse", "loss_l1")


class BatchSource:
    """Batch i is a function of i; `bad_steps` (1-based iterations) get an inf target."""

    def __init__(self, start, stop, bad_steps=()):
        self.start, self.stop, self.bad_steps = start, stop, set(bad_steps)

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, index):
        rng = np.random.default_rng([5, self.start + index])
        x = rng.normal(size=(4, 3)).astype(np.float32)
        y = (x.sum(axis=1, keepdims=True) * 0.3).astype(np.float32)
        if self.start + index + 1 in self.bad_steps:
            y[0, 0] = np.inf
        return x, y


@pytest.fixture
def tiny_training(pynative_mode):
    """`train(make_callbacks, max_iter, start_iter=0, bad_steps=(), lr=0.05)`: builds the
    TrainStep and optimizer, calls make_callbacks(optimizer) and runs Model.train."""

    def train(make_callbacks, max_iter, start_iter=0, bad_steps=(), lr=0.05):
        ms.set_seed(0)
        network = TinyRegression()
        optimizer = nn.Momentum(network.trainable_params(), learning_rate=lr, momentum=0.9)
        step = TrainStep(network, optimizer)
        data = ds.GeneratorDataset(BatchSource(start_iter, max_iter, bad_steps), ["x", "y"],
                                   shuffle=False)
        run_training(step, data, make_callbacks(optimizer), start_iter, max_iter)
        return step

    return train
