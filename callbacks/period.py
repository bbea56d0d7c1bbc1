"""The shared period helper, the absolute iteration clock and loss-part naming.

Iteration convention: `iteration` counts completed optimizer steps. After the step that
brings the count to k, callbacks see `iteration == k` (checkpoint `model_{k:07d}.ckpt` holds
the state after k steps; resuming it starts the data at `start_iter = k`).
`IterationClock` (inserted first by `defrcn.engine.loop.run_training`) writes
`cb_params.iteration = start_iter + cur_step_num // grad_accumulation` and
`cb_params.is_update_step` (False on the micro-steps between two optimizer updates).
"""
import math

from mindspore.train import Callback

TOTAL_LOSS = "total_loss"  # name of the first network output (the differentiated sum)


def every_n(step, n):
    """True when a period of `n` ends at `step` (1-based count); n <= 0 means never."""
    return n is not None and n > 0 and step > 0 and step % n == 0


class IterationClock(Callback):
    """Publishes the absolute iteration on cb_params for the callbacks that follow it."""

    def __init__(self, start_iter=0, grad_accumulation=1):
        super().__init__()
        self.start_iter = int(start_iter)
        self.grad_accumulation = int(grad_accumulation)

    def _publish(self, cb_params):
        micro = int(cb_params.cur_step_num)
        cb_params.start_iter = self.start_iter
        cb_params.iteration = self.start_iter + micro // self.grad_accumulation
        cb_params.is_update_step = micro % self.grad_accumulation == 0

    def on_train_begin(self, run_context):
        cb_params = run_context.original_args()
        cb_params.start_iter = self.start_iter
        cb_params.iteration = self.start_iter
        cb_params.is_update_step = True

    def on_train_step_begin(self, run_context):
        cb_params = run_context.original_args()
        # iteration in progress (1-based), for callbacks that report during a step
        cb_params.iteration_in_progress = (
            self.start_iter + (int(cb_params.cur_step_num) - 1) // self.grad_accumulation + 1)

    def on_train_step_end(self, run_context):
        self._publish(run_context.original_args())


def current_iteration(run_context):
    """(iteration, is_update_step) after a step; falls back to Model's own step counter when
    no IterationClock runs (plain Model.train)."""
    cb_params = run_context.original_args()
    if "iteration" in cb_params:
        return int(cb_params.iteration), bool(cb_params.is_update_step)
    return int(cb_params.cur_step_num), True


def iteration_in_progress(run_context):
    """The 1-based iteration being executed (differs from `current_iteration` only while
    accumulating gradients)."""
    cb_params = run_context.original_args()
    if "iteration_in_progress" in cb_params:
        return int(cb_params.iteration_in_progress)
    return int(cb_params.cur_step_num)


def loss_parts(net_outputs, loss_names):
    """{name: float} from the network outputs `(total, *parts)`.

    `loss_names` names the parts (outputs[1:]); outputs[0] is reported as `total_loss`.
    A bare scalar output gives only `total_loss`.
    """
    outputs = net_outputs if isinstance(net_outputs, (tuple, list)) else (net_outputs,)
    values = [float(out.asnumpy()) if hasattr(out, "asnumpy") else float(out) for out in outputs]
    names = [TOTAL_LOSS] + list(loss_names)
    if len(values) != len(names):
        raise ValueError(f"network returned {len(values)} outputs but {len(names)} names were "
                         f"given ({names}); the first output is the total loss")
    return dict(zip(names, values))


def non_finite(parts):
    """[(name, value)] of the parts that are nan or inf."""
    return [(name, value) for name, value in parts.items() if not math.isfinite(value)]
