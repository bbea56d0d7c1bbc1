"""Stop training at the first non-finite loss part, naming the step, the part and the last
good checkpoint. Put it before the Checkpointer: the raise ends the step's callbacks, so no
non-finite state is saved (the Checkpointer also refuses non-finite parameters)."""
import math

from mindspore.train import Callback

from defrcn.callbacks.period import iteration_in_progress, loss_parts, non_finite
from defrcn.checkpoint.io import read_last_checkpoint


class NanGuard(Callback):
    """Checks every step's `(total, *parts)`; raises FloatingPointError on nan/inf."""

    def __init__(self, *, loss_names, output_dir=None):
        super().__init__()
        self.loss_names = tuple(loss_names)
        self.output_dir = output_dir

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        bad = non_finite(loss_parts(cb_params.net_outputs, self.loss_names))
        if not bad:
            return
        run_context.request_stop()
        kind = "nan" if any(math.isnan(value) for _, value in bad) else "inf"
        parts = ", ".join(f"{name}={value}" for name, value in bad)
        last = read_last_checkpoint(self.output_dir) if self.output_dir else None
        raise FloatingPointError(
            f"loss became {kind} at iteration {iteration_in_progress(run_context)} ({parts}); "
            f"last good checkpoint: {last or 'none'}")
