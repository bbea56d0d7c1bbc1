"""The callbacks' shared helpers: the period test, the absolute iteration, loss-part naming.

Iteration convention: `iteration` counts completed optimizer steps. After the step that
brings the count to k, callbacks see `iteration == k` (checkpoint `model_{k:07d}.ckpt` holds
the state after k steps; resuming it starts the data at `start_iter = k`).
`defrcn.engine.loop.IterationClock` (inserted first by `run_training`) writes
`cb_params.iteration = start_iter + cur_step_num // grad_accumulation` and
`cb_params.is_update_step` (False on the micro-steps between two optimizer updates).
"""
import math

TOTAL_LOSS = "total_loss"  # name of the first network output (the differentiated sum)


def every_n(step, n):
    """True when a period of `n` ends at `step` (1-based count); n <= 0 means never."""
    return n is not None and n > 0 and step > 0 and step % n == 0


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
