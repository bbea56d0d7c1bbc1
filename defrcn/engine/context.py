"""What the trainer hands to a recipe's `callbacks(cfg, ctx)`: `TrainContext`."""
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Tuple

__all__ = ["TrainContext"]


@dataclass(frozen=True)
class TrainContext:
    """The run's facts a callback needs, fixed when training starts.

    output_dir: the run's folder; is_main: rank 0 (the one that writes); optimizer: the
    optimizer whose state checkpoints keep; start_iter: the first iteration of this run (the
    resume point); loss_names: the network's loss outputs after the total; schedule: the
    effective schedule for the devices in use (`defrcn.solver.schedule.effective_schedule`:
    max_iter, checkpoint_period, eval_period, accumulate_steps...); lr_fn: iteration -> the
    learning rate the optimizer applied at it; eval_fn: iteration -> metrics, or None.
    """

    output_dir: str
    is_main: bool
    optimizer: Any
    start_iter: int
    loss_names: Tuple[str, ...]
    schedule: Mapping[str, Any]
    lr_fn: Callable[[int], float]
    eval_fn: Optional[Callable[[int], Mapping[str, Any]]] = None
