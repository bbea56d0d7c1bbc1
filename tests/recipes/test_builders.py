"""The shared builders that need no model or data pipeline: the optimizer; cfg left unchanged."""
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

import defrcn
from defrcn.config.recipe import load_recipe
from defrcn.solver.schedule import effective_schedule
from defrcn.errors import InputError

RECIPES = os.path.join(os.path.dirname(os.path.dirname(defrcn.__file__)), "recipes")


@pytest.fixture
def pynative():
    previous = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=previous)


class Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        self.fc = nn.Dense(2, 2)
        self.bn = nn.BatchNorm1d(2)

    def construct(self, x):
        return self.bn(self.fc(x))


def test_optimizer_builder_sgd_with_effective_schedule(pynative):
    recipe = load_recipe(os.path.join(RECIPES, "coco_tfa_10shot.py"))
    schedule = effective_schedule(recipe.cfg.solver, 1, 2)
    opt = recipe.optimizer(recipe.cfg, Tiny(), schedule)
    assert isinstance(opt, nn.Momentum)
    lr = opt.learning_rate.learning_rate.asnumpy()  # the per-step array
    assert lr.shape == (48000,)
    np.testing.assert_allclose(lr[[0, 38399, 38400]], [0.00125, 0.00125, 0.000125], rtol=1e-5)


def test_optimizer_builder_toy_adamw_as_written(pynative):
    recipe = load_recipe(os.path.join(RECIPES, "toy_base.py"))
    opt = recipe.optimizer(recipe.cfg, Tiny(), None)
    assert isinstance(opt, nn.AdamWeightDecay)
    lr = opt.learning_rate.learning_rate.asnumpy()  # the per-step array
    assert lr.shape == (recipe.cfg.solver.max_iter,)
    assert lr[0] == pytest.approx(1e-6) and lr[recipe.cfg.solver.warmup_iters] == pytest.approx(1e-3)
