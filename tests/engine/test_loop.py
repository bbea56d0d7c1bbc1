"""run_training: exact step counts from start_iter to max_iter, absolute iterations."""
import numpy as np
import pytest

import mindspore as ms
import mindspore.dataset as ds
from mindspore import nn, ops
from mindspore.train import Callback

from defrcn.callbacks.period import current_iteration
from defrcn.engine.loop import IterationClock
from defrcn.engine.loop import run_training
from defrcn.engine.train_step import TrainStep


pytestmark = pytest.mark.usefixtures("pynative_mode")


class Square(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.ones(2, np.float32)), name="w")

    def construct(self, x):
        loss = ops.reduce_sum(self.w * x * self.w)
        return loss, loss


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_step_end(self, run_context):
        self.seen.append(current_iteration(run_context))


def data(batches):
    return ds.NumpySlicesDataset({"x": np.ones((batches, 2), np.float32)}, shuffle=False)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_counts_absolute_iterations(accumulation):
    network = Square()
    optimizer = nn.SGD(network.trainable_params(), learning_rate=0.01)
    recorder = Recorder()
    # a longer dataset is cut; a stale clock in the list is replaced
    run_training(TrainStep(network, optimizer, grad_accumulation=accumulation), data(20),
                 [IterationClock(start_iter=99), recorder], start_iter=5, max_iter=8)
    updates = [it for it, is_update in recorder.seen if is_update]
    assert updates == [6, 7, 8]
    assert len(recorder.seen) == 3 * accumulation
    assert int(optimizer.global_step.asnumpy().item()) == 3


def test_short_dataset_is_an_error():
    network = Square()
    optimizer = nn.SGD(network.trainable_params(), learning_rate=0.01)
    with pytest.raises(ValueError, match="dataset has 2 batches but 3 are needed"):
        run_training(TrainStep(network, optimizer), data(2), [], start_iter=0, max_iter=3)
    with pytest.raises(ValueError, match="nothing to train"):
        run_training(TrainStep(network, optimizer), data(2), [], start_iter=3, max_iter=3)
