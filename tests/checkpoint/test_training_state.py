"""save_training_state / restore_training_state (defrcn/checkpoint/training_state.py) on a
tiny TrainStep: the round trip, and the one-line refusals of files that cannot resume."""
import random

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from defrcn.checkpoint import io
from defrcn.checkpoint.training_state import (STORED_LR, restore_training_state, save_training_state,
                                              training_state_entries)
from defrcn.engine.train_step import TrainStep
from defrcn.errors import InputError
from defrcn.testing import TinyRegression

pytestmark = pytest.mark.usefixtures("pynative_mode")  # no compile: a few eager steps

LR = [0.05, 0.04, 0.03, 0.02]


class NarrowRegression(TinyRegression):
    """TinyRegression with 4 hidden units: the same names, other shapes."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(3, 4)
        self.out = nn.Dense(4, 1)


def build(seed=0, accumulation=2, lr=LR, network=TinyRegression):
    ms.set_seed(seed)
    net = network()
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=list(lr), momentum=0.9)
    return TrainStep(net, optimizer, grad_accumulation=accumulation), optimizer


def run(step, calls):
    rng = np.random.default_rng(3)
    for _ in range(calls):
        x = rng.normal(size=(4, 3)).astype(np.float32)
        step(Tensor(x), Tensor(x.sum(axis=1, keepdims=True) * 0.3))


def state_of(step):
    return {p.name: p.asnumpy().copy() for p in step.get_parameters()}


def test_round_trip_restores_network_optimizer_train_step_and_rng(tmp_path):
    path = str(tmp_path / "model_0000001.ckpt")
    step, optimizer = build()
    run(step, 3)  # one update, then one micro-step accumulated: every kind of state is non-trivial
    saved = state_of(step)
    assert int(saved["global_step"].item()) == 1 and int(saved["micro_step"].item()) == 3
    assert np.abs(saved["accum_grads.hidden.weight"]).sum() > 0
    np.random.seed(11)
    random.seed(11)
    save_training_state(path, step, optimizer, 1, extra={"note": 5})
    expected_draws = (np.random.rand(3), random.random())

    names = {entry["name"] for entry in training_state_entries(step, optimizer)}
    assert {"hidden.weight", "optimizer.moments.hidden.weight", "optimizer.global_step",
            "train_step.accum_grads.hidden.weight", "train_step.micro_step"} <= names

    other, other_optimizer = build(seed=1, lr=[0.5] * 4)  # a new process: other init, other LR list
    assert not np.array_equal(state_of(other)["hidden.weight"], saved["hidden.weight"])
    np.random.seed(99)
    random.seed(99)
    iteration, extras = restore_training_state(other, other_optimizer, path, with_extras=True)
    assert iteration == 1
    assert extras["note"] == 5 and not any(key.startswith("rng.") for key in extras)
    np.testing.assert_allclose(extras[STORED_LR], LR)  # what the run was trained with
    restored = state_of(other)
    assert sorted(restored) == sorted(saved)
    for name in saved:
        if name != "learning_rate":
            assert np.array_equal(restored[name], saved[name]), name
    np.testing.assert_allclose(restored["learning_rate"], [0.5] * 4)  # the recipe's list is kept
    draws = (np.random.rand(3), random.random())
    assert np.array_equal(draws[0], expected_draws[0]) and draws[1] == expected_draws[1]
    assert restore_training_state(other, other_optimizer, path) == 1  # without extras: the iteration


def one_line_refusal(step, optimizer, path):
    with pytest.raises(InputError) as error:
        restore_training_state(step, optimizer, str(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}:"), message
    assert f"pass --init {path} instead of --resume" in message  # the advice
    return message


def test_a_weights_only_checkpoint_is_refused_with_the_init_advice(tmp_path):
    path = tmp_path / "model_final.ckpt"
    step, optimizer = build()
    io.save_checkpoint(step.network, str(path))
    message = one_line_refusal(step, optimizer, path)
    assert "not a training checkpoint (no iteration stored)" in message


def test_a_checkpoint_without_the_accumulators_is_refused(tmp_path):
    path = tmp_path / "model_0000002.ckpt"
    step, optimizer = build(accumulation=1)
    run(step, 2)
    save_training_state(str(path), step, optimizer, 2)
    accumulating, accumulating_optimizer = build(accumulation=2)
    message = one_line_refusal(accumulating, accumulating_optimizer, path)
    assert "training state incomplete: 5 missing" in message and "train_step.accum_grads" in message


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    path = tmp_path / "model_0000002.ckpt"
    step, optimizer = build()
    save_training_state(str(path), step, optimizer, 2)
    narrow, narrow_optimizer = build(network=NarrowRegression)
    message = one_line_refusal(narrow, narrow_optimizer, path)
    assert "shape mismatch" in message and "another model or class count" in message
