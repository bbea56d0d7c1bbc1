"""The callbacks' shared helpers (callbacks/period.py): the period test, the iteration a
callback sees (with and without the loop's IterationClock), loss-part naming."""
import math

import numpy as np
import pytest
from mindspore import Tensor
from mindspore.train.callback import RunContext
from mindspore.train.callback._callback import InternalCallbackParam

from defrcn.callbacks.period import (TOTAL_LOSS, current_iteration, every_n, iteration_in_progress, loss_parts,
                                     non_finite)


def run_context(**fields):
    """A RunContext over MindSpore's own callback parameters holding `fields`."""
    params = InternalCallbackParam()
    for key, value in fields.items():
        setattr(params, key, value)
    return RunContext(params)


# --- every_n ---------------------------------------------------------------------------------

@pytest.mark.parametrize("step, n, expected", [
    (10, 5, True), (5, 5, True), (7, 5, False), (1, 1, True), (3, 2, False),
    (0, 5, False),  # step 0: no period has ended
    (10, 0, False), (10, -5, False), (10, None, False),  # n <= 0 or None: never
])
def test_every_n(step, n, expected):
    assert every_n(step, n) is expected


def test_every_n_with_a_disabled_period_is_never_true_over_a_run():
    assert not any(every_n(step, n) for n in (0, -1, None) for step in range(0, 50))
    assert [step for step in range(0, 13) if every_n(step, 4)] == [4, 8, 12]


# --- current_iteration / iteration_in_progress -----------------------------------------------

def test_current_iteration_reads_the_clock_fields():
    context = run_context(cur_step_num=7, iteration=3, is_update_step=False, iteration_in_progress=4)
    assert current_iteration(context) == (3, False)
    assert iteration_in_progress(context) == 4


def test_without_the_clock_fields_both_fall_back_to_models_step_count():
    context = run_context(cur_step_num=7)
    assert current_iteration(context) == (7, True)  # plain Model.train: every step updates
    assert iteration_in_progress(context) == 7


def test_the_clock_values_are_plain_python_numbers():
    context = run_context(cur_step_num=np.int64(9), iteration=np.int32(4), is_update_step=np.bool_(True))
    iteration, update = current_iteration(context)
    assert type(iteration) is int and type(update) is bool and (iteration, update) == (4, True)


# --- loss_parts / non_finite -----------------------------------------------------------------

def test_loss_parts_names_the_total_and_the_parts():
    outputs = (Tensor(np.float32(1.5)), Tensor(np.float32(1.0)), 0.5)
    parts = loss_parts(outputs, ("loss_cls", "loss_box"))
    assert parts == {TOTAL_LOSS: 1.5, "loss_cls": 1.0, "loss_box": 0.5}
    assert list(parts) == ["total_loss", "loss_cls", "loss_box"]
    assert all(type(value) is float for value in parts.values())


def test_a_bare_scalar_is_the_total_loss():
    assert loss_parts(Tensor(np.float32(2.0)), ()) == {"total_loss": 2.0}
    assert loss_parts(0.25, []) == {"total_loss": 0.25}


@pytest.mark.parametrize("outputs, names", [
    ((1.0, 0.5), ("loss_a", "loss_b")),  # fewer outputs than names
    ((1.0, 0.5, 0.5), ("loss_a",)),  # more outputs than names
    (1.0, ("loss_a",)),  # a bare scalar with part names
])
def test_a_count_mismatch_is_a_value_error(outputs, names):
    with pytest.raises(ValueError, match="the first output is the total loss"):
        loss_parts(outputs, names)


def test_non_finite_lists_nan_and_inf_parts_in_order():
    found = non_finite({"total_loss": math.inf, "loss_cls": 0.3, "loss_box": math.nan, "loss_rpn": -math.inf})
    assert [name for name, _ in found] == ["total_loss", "loss_box", "loss_rpn"]
    assert found[0][1] == math.inf and math.isnan(found[1][1]) and found[2][1] == -math.inf
    assert non_finite({"total_loss": 1.0, "loss_cls": 0.0}) == []
