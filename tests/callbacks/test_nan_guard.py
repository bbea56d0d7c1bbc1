"""NanGuard stops at the first non-finite part and names iteration, part, last checkpoint;
the last good checkpoint stays untouched."""
import os
import re

import pytest
from mindspore.train import Callback

from defrcn.callbacks.checkpointer import Checkpointer
from defrcn.callbacks.nan_guard import NanGuard
from defrcn.checkpoint import io

LOSS_NAMES = ("loss_mse", "loss_l1")


def test_stops_and_names_step_part_and_checkpoint(tmp_path, tiny_training):
    output_dir = str(tmp_path)
    seen = []

    def callbacks(optimizer):
        return [NanGuard(loss_names=LOSS_NAMES, output_dir=output_dir),
                Checkpointer(output_dir=output_dir, period=2, keep=0, optimizer=optimizer, max_iter=10, is_main=True)]

    with pytest.raises(FloatingPointError) as raised:
        tiny_training(callbacks, max_iter=10, bad_steps=(5,))
    message = str(raised.value)
    good = os.path.join(output_dir, "checkpoints", "model_0000004.ckpt")
    assert message.startswith("loss became inf at iteration 5 (total_loss=inf, loss_mse=inf, "
                              "loss_l1=inf); last good checkpoint: ")
    assert message.endswith(good)
    assert "\n" not in message
    assert sorted(os.listdir(os.path.join(output_dir, "checkpoints"))) == [
        "model_0000002.ckpt", "model_0000002.ckpt.sha256",
        "model_0000004.ckpt", "model_0000004.ckpt.sha256"]
    assert io.find_resume_checkpoint(output_dir) == good
    assert not os.path.exists(os.path.join(output_dir, io.FINAL_NAME))


def test_nan_is_named_nan():
    import numpy as np

    class Params(dict):  # Model's cb_params is a dict with attribute access
        __getattr__ = dict.__getitem__

    class Context:
        stopped = False

        def original_args(self):
            return Params(net_outputs=(np.float32("nan"), np.float32(1.0), np.float32("nan")),
                          cur_step_num=3)

        def request_stop(self):
            Context.stopped = True

    with pytest.raises(FloatingPointError, match=re.escape(
            "loss became nan at iteration 3 (total_loss=nan, loss_l1=nan); last good checkpoint: none")):
        NanGuard(loss_names=LOSS_NAMES).on_train_step_end(Context())
    assert Context.stopped


class _StepRecorder(Callback):
    """Runs after the guard: the iterations that reached the end of their callbacks, and
    whether a stop had been requested by then."""

    def __init__(self):
        super().__init__()
        self.iterations, self.stop_requested = [], []

    def on_train_step_end(self, run_context):
        self.iterations.append(int(run_context.original_args().iteration))
        self.stop_requested.append(bool(run_context.get_stop_requested()))


def test_finite_run_is_untouched(tmp_path, tiny_training, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a stray relative write would land here
    recorder = _StepRecorder()
    step = tiny_training(lambda optimizer: [NanGuard(loss_names=LOSS_NAMES), recorder], max_iter=3)
    assert recorder.iterations == [1, 2, 3]
    assert recorder.stop_requested == [False, False, False]
    assert int(step.optimizer.global_step.asnumpy().reshape(-1)[0]) == 3
    # with an output folder the guard still writes nothing on a finite run
    out = tmp_path / "run"
    out.mkdir()
    recorder = _StepRecorder()
    tiny_training(lambda optimizer: [NanGuard(loss_names=LOSS_NAMES, output_dir=str(out)), recorder], max_iter=3)
    assert recorder.iterations == [1, 2, 3]
    assert sorted(os.listdir(tmp_path)) == ["run"] and os.listdir(out) == []
