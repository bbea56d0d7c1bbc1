"""TensorBoard scalars (loss parts, total, lr) and images, written with tensorboardX.

MindSpore's SummaryCollector writes MindInsight files, not TensorBoard events.
Build it on rank 0 only. Tags: `loss/<name>`, `lr`; `add_metrics` writes `eval/<name>`.
"""
import numpy as np

from mindspore.train import Callback

from defrcn.callbacks.period import current_iteration, every_n, loss_parts


class TensorBoardWriter(Callback):
    """Args: logdir; loss_names (parts after the total); period (iterations);
    lr_fn(iteration) -> float; start_iter (a resumed run's first iteration - 1: TensorBoard
    then drops the events a killed run wrote past it, tensorboardX's `purge_step`)."""

    def __init__(self, *, logdir, loss_names, period, lr_fn, start_iter=0):
        super().__init__()
        from tensorboardX import SummaryWriter

        self.loss_names = tuple(loss_names)
        self.period = int(period)
        self.lr_fn = lr_fn
        self.writer = SummaryWriter(logdir=logdir, purge_step=start_iter + 1 if start_iter > 0 else None)

    def on_train_step_end(self, run_context):
        iteration, is_update_step = current_iteration(run_context)
        if not is_update_step or not every_n(iteration, self.period):
            return
        parts = loss_parts(run_context.original_args().net_outputs, self.loss_names)
        for name, value in parts.items():
            self.writer.add_scalar(f"loss/{name}", value, iteration)
        self.writer.add_scalar("lr", float(self.lr_fn(iteration)), iteration)

    def add_metrics(self, metrics, step, prefix="eval"):
        """Scalars `prefix/<name>` for every finite number of a flat metrics dict (an AP
        with no ground truth of its kind is NaN/None and is left out)."""
        for name, value in metrics.items():
            if isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)
        self.writer.flush()

    def add_images(self, tag, images_hwc_uint8_list, step):
        """One image per `tag/<index>` (H, W, 3) uint8 RGB, e.g. boxes drawn at eval time."""
        for index, image in enumerate(images_hwc_uint8_list):
            array = np.asarray(image)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(f"{tag}: image {index} must be (H, W, 3) uint8, "
                                 f"got {array.shape} {array.dtype}")
            self.writer.add_image(f"{tag}/{index}", array, step, dataformats="HWC")
        self.writer.flush()

    def on_train_end(self, run_context):
        self.writer.flush()

    def __exit__(self, *err):
        self.writer.flush()

    def close(self):
        self.writer.close()
