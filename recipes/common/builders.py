"""The four recipe builders (the README's "Recipes"), shared by every shipped recipe.

Each maps cfg keys onto the keyword arguments of one library call and imports the
library lazily, so loading a recipe stays cheap (no MindSpore import, no network).
Weights (`model.weights`, `model.base_weights`) are loaded by the engine, not here.
"""
from typing import Any, List, NamedTuple

__all__ = ["model", "dataset", "optimizer", "callbacks", "data_spec", "Data"]


def data_spec(cfg):
    """The resolved `DataSpec` of cfg.data (`defrcn.data.spec`): classes in model order, split
    files, shots; checks model.num_classes (0 = from the setting). cfg is not changed."""
    from defrcn.data.spec import resolve_data_spec

    return resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)


def model(cfg, *, rank=0):
    """The DeFRCN detector Cell for cfg (random init). `rank` salts RoI/anchor sampling.
    model.num_classes 0 counts the classes from the data set; the trainer checks a stated
    count against the data (`data_spec`), so building a model needs no data set."""
    from defrcn.modeling.detector import build_detector

    m = cfg.model
    roi = m.roi
    return build_detector(
        num_classes=m.num_classes or data_spec(cfg).num_classes, depth=m.depth, norm=m.norm, freeze_at=m.freeze_at,
        stride_in_1x1=m.stride_in_1x1, gdl_scale_rpn=m.gdl_scale_rpn, gdl_scale_roi=m.gdl_scale_roi,
        freeze_res5=m.freeze_res5, cls_dropout=m.cls_dropout, pooler_resolution=m.pooler_resolution,
        pooler_impl=m.get("pooler_impl", "matmul"),
        res5_conv=m.get("res5_conv", "direct"),
        conv_backward=m.get("conv_backward", "stock"),
        frozen_bn_impl=m.get("frozen_bn_impl", "kernel"),
        size_divisibility=m.get("size_divisibility", 0),
        rpn={key: tuple(v) if isinstance(v, list) else v for key, v in m.rpn.items()},
        roi=dict(batch_size_per_image=roi.batch_size_per_image, positive_fraction=roi.positive_fraction,
                 iou_threshold=roi.iou_threshold, score_thresh=roi.score_thresh_test,
                 nms_thresh=roi.nms_thresh_test, detections_per_image=roi.detections_per_image),
        sample_salt=rank,
    )


class Data(NamedTuple):
    """What `dataset` returns: the mindspore.dataset pipeline, the records and their meta."""

    loader: Any
    records: List[dict]
    meta: Any


def dataset(cfg, split, *, num_shards=1, shard_id=0, start_iter=0, num_batches=None, preloaded=None):
    """split "train" (base or K-shot set per data.setting) or "test" -> `Data`.

    Train: endless batches of `solver.ims_per_device` images; test: in order,
    `test.ims_per_device` per batch. Sharded by rank (num_shards, shard_id); `start_iter`
    skips the batches a resumed run has already seen; `num_batches` makes the train
    stream finite (exactly the batches a run needs). `preloaded`: a `Data` of the same
    split whose records and meta are reused (no second read of the annotations).
    """
    from defrcn.data.pipeline import build_test_loader, build_train_loader
    from defrcn.data.spec import load_split

    d, i = cfg.data, cfg.input
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if preloaded is not None:
        records, meta = preloaded.records, preloaded.meta
    else:
        records, meta = load_split(data_spec(cfg), split)
    common = dict(canvases=i.canvases, pixel_format=i.format, max_gt=d.max_gt, num_shards=num_shards,
                  shard_id=shard_id, num_workers=d.num_workers)
    if split == "train":
        loader = build_train_loader(records, min_sizes=i.min_size_train, max_size=i.max_size_train,
                                    flip_prob=i.flip_prob, batch_size=cfg.solver.ims_per_device,
                                    seed=cfg.seed, start_iter=start_iter,
                                    num_batches=num_batches, **common)
    else:
        loader = build_test_loader(records, min_size=i.min_size_test, max_size=i.max_size_test,
                                   batch_size=cfg.test.ims_per_device, **common)
    return Data(loader, records, meta)


def optimizer(cfg, model, steps=None):
    """SGD (or AdamW for the toy recipes) with d2's decay groups and a per-step LR.

    `steps`: the run's schedule from `defrcn.solver.schedule.effective_schedule` (LR x
    B/16, iterations x 16/B for a total batch B); None = cfg.solver as written.
    """
    from defrcn.solver.optim import build_adamw, build_sgd
    from defrcn.solver.schedule import lr_per_step

    s = cfg.solver
    plan = steps if steps is not None else s
    if not hasattr(plan, "keys"):
        raise TypeError(f"steps must be the dict of effective_schedule or None, got {type(plan).__name__}")
    rates = lr_per_step(plan["base_lr"], plan["max_iter"], plan["steps"], s.gamma, plan["warmup_iters"],
                        s.warmup_factor)
    decay = dict(weight_decay=s.weight_decay, weight_decay_bias=s.weight_decay_bias,
                 weight_decay_norm=s.weight_decay_norm)
    if s.optimizer == "adamw":
        return build_adamw(model, rates, **decay)
    return build_sgd(model, rates, momentum=s.momentum, **decay)


def callbacks(cfg, ctx):
    """The ordered training callbacks; writers only on the main rank.

    ctx: the `defrcn.engine.context.TrainContext` of the run (output folder, rank 0 or not,
    optimizer, start iteration, loss names, effective schedule, the optimizer's LR per
    iteration, the evaluation function or None).
    """
    from defrcn.callbacks.checkpointer import Checkpointer
    from defrcn.callbacks.eval_hook import PeriodicEval
    from defrcn.callbacks.metrics_logger import MetricsLogger
    from defrcn.callbacks.nan_guard import NanGuard

    plan, period = ctx.schedule, cfg.log.period
    items = [
        NanGuard(loss_names=ctx.loss_names, output_dir=ctx.output_dir),
        MetricsLogger(output_dir=ctx.output_dir, loss_names=ctx.loss_names, period=period, lr_fn=ctx.lr_fn,
                      max_iter=plan["max_iter"], is_main=ctx.is_main),
    ]
    writer = None
    if cfg.log.tensorboard and ctx.is_main:
        from defrcn.callbacks.tensorboard import TensorBoardWriter

        writer = TensorBoardWriter(logdir=ctx.output_dir, loss_names=ctx.loss_names, period=period,
                                   lr_fn=ctx.lr_fn, start_iter=ctx.start_iter)
        items.append(writer)
    items.append(Checkpointer(output_dir=ctx.output_dir, period=plan["checkpoint_period"],
                              keep=cfg.solver.keep_checkpoints, optimizer=ctx.optimizer, max_iter=plan["max_iter"],
                              is_main=ctx.is_main, schedule=plan))
    if ctx.eval_fn is not None:
        items.append(PeriodicEval(period=plan["eval_period"], eval_fn=ctx.eval_fn, max_iter=plan["max_iter"],
                                  writer=writer))
    return items
