"""PeriodicEval runs eval_fn every period and once at the end, and forwards metrics."""
import logging

from defrcn.callbacks.eval_hook import PeriodicEval


class RecordingWriter:
    def __init__(self):
        self.calls = []

    def add_metrics(self, metrics, step):
        self.calls.append((step, metrics))


def test_every_period_and_at_end(tiny_training, caplog):
    writer = RecordingWriter()
    made = []

    def callbacks(optimizer):
        made.append(PeriodicEval(period=3, eval_fn=lambda it: {"AP": float(it)}, max_iter=7, writer=writer))
        return made

    with caplog.at_level(logging.INFO, logger="defrcn.callbacks.eval_hook"):
        tiny_training(callbacks, max_iter=7)
    assert [it for it, _ in made[0].history] == [3, 6, 7]
    assert writer.calls == [(3, {"AP": 3.0}), (6, {"AP": 6.0}), (7, {"AP": 7.0})]
    assert "eval at iteration 7: AP: 7" in caplog.text


def test_end_on_period_runs_once(tiny_training):
    made = []
    tiny_training(lambda optimizer: made.append(PeriodicEval(period=2, eval_fn=lambda it: {}, max_iter=4)) or made,
                  max_iter=4)
    assert [it for it, _ in made[0].history] == [2, 4]
