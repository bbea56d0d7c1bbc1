"""Data sink (solver.dataset_sink): the sink size, the CPU fallback, and the callbacks under
MindSpore's sink loop. MindSpore 2.8.0 has no sink on CPU, so the loop of
`Model._train_dataset_sink_process` (mindspore/train/model.py: the step callbacks run once per
sink, after `cur_step_num` has advanced by the sink size, with the `net_outputs` of the sink's
last step) is replayed around the real callbacks."""
import json
import logging
import os

import numpy as np
import pytest

import mindspore as ms
import mindspore.dataset as ds
from mindspore import Tensor, nn
from mindspore.train import RunContext

from defrcn.callbacks.checkpointer import Checkpointer
from defrcn.callbacks.eval_hook import PeriodicEval
from defrcn.callbacks.metrics_logger import MetricsLogger
from defrcn.callbacks.period import current_iteration
from defrcn.engine.loop import IterationClock
from defrcn.engine.loop import dataset_sink_size, run_training
from defrcn.engine.train_step import TrainStep
from defrcn.testing import TinyRegression

LOSS_NAMES = ("loss_mse", "loss_l1")


@pytest.mark.parametrize("wanted, periods, start, stop, expected", [
    (20, (5000, 0), 0, 110000, 20),  # COCO base: log 20, checkpoint 5000, eval at the end
    (10, (100, 25), 0, 300, 5),  # an eval period of 25 lowers it
    (20, (5000, 0), 30, 110000, 10),  # resumed from an iteration 20 does not divide
    (10, (100, 0), 0, 7, 0),  # nothing > 1 divides 7: no sink
    (1, (100, 0), 0, 300, 0),
])
def test_sink_size(wanted, periods, start, stop, expected):
    assert dataset_sink_size(wanted, periods=periods, start_iter=start, max_iter=stop) == expected


class Recorder(ms.train.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_train_step_end(self, run_context):
        self.seen.append(current_iteration(run_context))


def _train(sink_size, accumulation=1):
    ms.set_seed(0)
    network = TinyRegression()
    optimizer = nn.SGD(network.trainable_params(), learning_rate=0.05)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8 * accumulation, 2, 3)).astype(np.float32)
    data = ds.NumpySlicesDataset({"x": x, "y": x.sum(axis=2, keepdims=True)}, shuffle=False)
    recorder = Recorder()
    run_training(TrainStep(network, optimizer, grad_accumulation=accumulation), data, [recorder], 0, 8,
                 sink_size=sink_size)
    return recorder.seen, {p.name: p.asnumpy() for p in network.trainable_params()}


def test_cpu_falls_back_in_one_line_and_trains_the_same(caplog):
    caplog.set_level(logging.INFO, logger="defrcn.engine.loop")
    seen, weights = _train(0)
    assert not caplog.records
    sunk_seen, sunk_weights = _train(4)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["solver.dataset_sink: MindSpore's CPU backend has no data sink mode; "
                     "training without it (same iterations, same results)"]
    assert sunk_seen == seen == [(i, True) for i in range(1, 9)]
    for name in weights:
        assert np.array_equal(sunk_weights[name], weights[name]), name


def test_sink_size_must_divide_the_run():
    with pytest.raises(ValueError, match="sink_size 3 must divide"):
        _train(3)


class Params(dict):
    """Model's callback parameters: a dict read and written as attributes."""

    __getattr__ = dict.__getitem__
    __setattr__ = dict.__setitem__


def _replay(callbacks, micro_steps, sink_micro_steps, train_network):
    """Model.train's callback calls, `sink_micro_steps` micro-steps per step-callback call (1 =
    no sink). The losses of micro-step m are a function of m."""
    params = Params(cur_step_num=0, train_network=train_network, net_outputs=None)
    context = RunContext(params)
    for callback in callbacks:
        callback.on_train_begin(context)
    while params.cur_step_num < micro_steps:
        params.cur_step_num += sink_micro_steps
        for callback in callbacks:
            callback.on_train_step_begin(context)
        m = params.cur_step_num
        params.net_outputs = tuple(Tensor(np.float32(v)) for v in (3.0 / m, 1.0 / m, 2.0 / m))
        for callback in callbacks:
            callback.on_train_step_end(context)
    for callback in callbacks:
        callback.on_train_end(context)


def _run(out, sink, accumulation, start_iter, max_iter):
    network = TinyRegression()
    optimizer = nn.SGD(network.trainable_params(), learning_rate=0.05)
    step = TrainStep(network, optimizer, grad_accumulation=accumulation)
    evaluated = []
    callbacks = [
        IterationClock(start_iter=start_iter, grad_accumulation=accumulation),
        MetricsLogger(output_dir=str(out), loss_names=LOSS_NAMES, period=4, lr_fn=lambda it: 0.01,
                      max_iter=max_iter, is_main=True, progress_bar=False),
        Checkpointer(output_dir=str(out), period=8, keep=0, optimizer=optimizer, max_iter=max_iter, is_main=True),
        PeriodicEval(period=8, eval_fn=lambda it: evaluated.append(it) or {"AP": 1.0}, max_iter=max_iter),
    ]
    _replay(callbacks, (max_iter - start_iter) * accumulation, sink * accumulation, step)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    checkpoints = sorted(name for folder in (out / "checkpoints", out) for name in os.listdir(folder)
                         if name.endswith(".ckpt"))
    return [{k: r[k] for k in ("iter", "total_loss", *LOSS_NAMES)} for r in records], checkpoints, evaluated


@pytest.mark.parametrize("accumulation", [1, 2])
@pytest.mark.parametrize("start_iter", [0, 8])
def test_callbacks_act_at_the_same_iterations_in_sinks(tmp_path, accumulation, start_iter):
    """Sinks of 4 iterations (log period 4, checkpoint and eval period 8, max_iter 24): the same
    log records (iterations and losses of those iterations), checkpoints and evaluations as
    one iteration at a time."""
    per_step = _run(tmp_path / "steps", 1, accumulation, start_iter, 24)
    sunk = _run(tmp_path / "sinks", 4, accumulation, start_iter, 24)
    assert sunk == per_step
    records, checkpoints, evaluated = sunk
    assert [r["iter"] for r in records] == list(range(start_iter + 4, 25, 4))
    assert checkpoints == [f"model_{i:07d}.ckpt" for i in range(start_iter + 8, 24, 8)] + ["model_final.ckpt"]
    assert evaluated == list(range(start_iter + 8, 25, 8))
