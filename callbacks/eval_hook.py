"""Periodic evaluation during training: `eval_fn(iteration) -> {name: value}` every
`period` iterations and once at `max_iter`; metrics go to the log and, if given, to a
TensorBoardWriter (`eval/<name>`), with the pictures an eval_fn may attach to its
metrics (`.images`, see defrcn/inference/eval_images.py) as `eval/boxes/<index>`. The evaluator
itself is passed in by the recipe."""
import logging

from mindspore.train import Callback

from defrcn.callbacks.period import current_iteration, every_n
from defrcn.utils.faults import fault_point

logger = logging.getLogger(__name__)
IMAGES_TAG = "eval/boxes"  # TensorBoard tag of the pictures: eval/boxes/0, eval/boxes/1, ...


class PeriodicEval(Callback):
    """Args: period (<= 0: only at the end); eval_fn; max_iter; writer (optional, with
    `add_metrics(metrics, step)`). `history` keeps [(iteration, metrics)]."""

    def __init__(self, *, period, eval_fn, max_iter, writer=None):
        super().__init__()
        self.period = int(period)
        self.eval_fn = eval_fn
        self.max_iter = int(max_iter)
        self.writer = writer
        self.history = []

    def on_train_step_end(self, run_context):
        iteration, is_update_step = current_iteration(run_context)
        if not is_update_step:
            return
        if every_n(iteration, self.period) or iteration >= self.max_iter:
            self.evaluate(iteration)

    def evaluate(self, iteration):
        fault_point("eval:start")  # test hook (defrcn.engine.runtime)
        result = self.eval_fn(iteration)
        images = getattr(result, "images", None)
        metrics = dict(result)
        self.history.append((iteration, metrics))
        shown = "  ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                          for k, v in metrics.items() if not isinstance(v, dict))
        logger.info("eval at iteration %d: %s", iteration, shown)
        if self.writer is not None:
            self.writer.add_metrics(metrics, iteration)
            if images and hasattr(self.writer, "add_images"):
                self.writer.add_images(IMAGES_TAG, images, iteration)
        return metrics
