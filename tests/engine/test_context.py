"""TrainContext (defrcn/engine/context.py) and the recipe callbacks builder that receives it."""
import dataclasses
from pathlib import Path

import pytest
from mindspore import nn

from defrcn.callbacks.checkpointer import Checkpointer
from defrcn.callbacks.eval_hook import PeriodicEval
from defrcn.callbacks.metrics_logger import MetricsLogger
from defrcn.callbacks.nan_guard import NanGuard
from defrcn.callbacks.tensorboard import TensorBoardWriter
from defrcn.config.recipe import load_recipe
from defrcn.engine.context import TrainContext
from defrcn.solver.schedule import effective_schedule
from defrcn.testing import TinyRegression

REPO = Path(__file__).resolve().parents[2]
LOSS_NAMES = ("loss_mse", "loss_l1")


@pytest.fixture(scope="module")
def recipe():
    return load_recipe(REPO / "recipes/toy_base.py", ["solver.max_iter=12", "solver.checkpoint_period=6"])


@pytest.fixture(scope="module")
def optimizer():
    network = TinyRegression()
    return nn.Momentum(network.trainable_params(), learning_rate=0.01, momentum=0.9)


def make_ctx(cfg, out, optimizer, **changes):
    plan = effective_schedule(cfg.solver, 1, cfg.solver.ims_per_device, eval_period=cfg.test.eval_period)
    fields = dict(output_dir=str(out), is_main=True, optimizer=optimizer, start_iter=0, loss_names=LOSS_NAMES,
                  schedule=plan, lr_fn=lambda it: 0.01)
    fields.update(changes)
    return TrainContext(**fields)


def built(recipe, ctx, tensorboard=True):
    """recipe.callbacks(cfg, ctx) with log.tensorboard set (TensorBoard writers closed)."""
    cfg = recipe.cfg.copy()
    cfg.log.tensorboard = tensorboard
    items = recipe.callbacks(cfg, ctx)
    for item in items:
        if isinstance(item, TensorBoardWriter):
            item.close()
    return items


def test_train_context_is_frozen_and_eval_fn_defaults_to_none(recipe, optimizer, tmp_path):
    ctx = make_ctx(recipe.cfg, tmp_path, optimizer)
    assert ctx.eval_fn is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.start_iter = 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.eval_fn = lambda it: {}
    assert ctx.start_iter == 0 and ctx.lr_fn(3) == 0.01
    assert [f.name for f in dataclasses.fields(TrainContext)] == [
        "output_dir", "is_main", "optimizer", "start_iter", "loss_names", "schedule", "lr_fn", "eval_fn"]


def test_callbacks_of_the_main_rank_without_evaluation(recipe, optimizer, tmp_path):
    items = built(recipe, make_ctx(recipe.cfg, tmp_path, optimizer))
    assert [type(c) for c in items] == [NanGuard, MetricsLogger, TensorBoardWriter, Checkpointer]
    checkpointer = items[-1]
    assert checkpointer.period == 6 and checkpointer.max_iter == 12 and checkpointer.optimizer is optimizer


def test_an_eval_fn_adds_periodic_eval_last(recipe, optimizer, tmp_path):
    def evaluate(iteration):
        return {"AP": 1.0}

    items = built(recipe, make_ctx(recipe.cfg, tmp_path, optimizer, eval_fn=evaluate))
    assert [type(c) for c in items] == [NanGuard, MetricsLogger, TensorBoardWriter, Checkpointer, PeriodicEval]
    assert items[-1].eval_fn is evaluate and items[-1].writer is items[2]  # eval metrics go to TensorBoard


def test_other_ranks_and_tensorboard_off_get_no_writer(recipe, optimizer, tmp_path):
    other_rank = built(recipe, make_ctx(recipe.cfg, tmp_path, optimizer, is_main=False, eval_fn=lambda it: {}))
    assert [type(c) for c in other_rank] == [NanGuard, MetricsLogger, Checkpointer, PeriodicEval]
    assert other_rank[-1].writer is None and other_rank[2].is_main is False
    off = built(recipe, make_ctx(recipe.cfg, tmp_path, optimizer), tensorboard=False)
    assert [type(c) for c in off] == [NanGuard, MetricsLogger, Checkpointer]
