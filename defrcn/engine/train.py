"""The training driver behind `tools/train.py`, in pipeline order.

recipe (+ --set) -> runtime (device, msrun rank) -> effective schedule for the devices
in use -> output folder (lock, config.json) -> model (+ initial weights / surgery) ->
optimizer -> TrainStep -> resume state -> data (sharded, from the resume position) ->
callbacks -> `Model.train` (`defrcn.engine.loop.run_training`).
"""
import logging
import os
import random
from pathlib import Path

import numpy as np

from defrcn.config.recipe import load_recipe, save_config
from defrcn.engine.context import TrainContext
from defrcn.engine.runtime import OutputLock, setup_runtime
from defrcn.solver.schedule import describe_schedule_change, effective_schedule
from defrcn.errors import InputError

logger = logging.getLogger("defrcn.train")


def parse_seeds(text):
    """'0-9' or '0,3,5' (or a mix) -> sorted list of ints."""
    from defrcn.data.split_making import parse_int_list

    return parse_int_list(text, "--seeds")


def train_recipe(recipe_path, *, overrides=(), output_dir=None, device="CPU", resume=False,
                 init=None, evaluate=True, pynative=False, deterministic=False, leave_cluster=True,
                 runtime=None):
    """Train one recipe; returns the output folder. See tools/train.py for the options.
    `leave_cluster` (msrun): unregister from the launcher's scheduler at the end (a sweep
    leaves once, after its last seed). `runtime`: set up already (a sweep sets it up once)."""
    runtime = runtime or setup_runtime(device, pynative=pynative, deterministic=deterministic)
    recipe = load_recipe(recipe_path, overrides)
    cfg = recipe.cfg
    if output_dir:
        cfg.output_dir = str(output_dir)
    from defrcn.data.spec import resolve_data_spec
    from defrcn.engine.doctor import check_or_raise

    spec = resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)

    doctor_warnings = check_or_raise(cfg, init=init, spec=spec)  # InputError (exit 2) before anything is built
    _check_speed_keys(cfg)
    train_data = _checked_train_data(recipe, cfg)
    plan = effective_schedule(cfg.solver, runtime.world_size, cfg.solver.ims_per_device,
                              eval_period=cfg.test.eval_period)
    out = Path(cfg.output_dir)
    _check_fresh_or_resume(out, resume, check_lock=runtime.is_main)
    lock = OutputLock(str(out)) if runtime.is_main else None
    if lock:
        lock.acquire()
    try:
        _setup_logging(out, runtime.is_main)
        for finding in doctor_warnings:
            logger.warning("doctor: %s", finding.message)
        logger.info("schedule: %s", plan["summary"])
        return _train(recipe, cfg, spec, plan, runtime, out, train_data, resume=resume, init=init,
                      evaluate=evaluate)
    finally:
        if lock:
            lock.release()
        if runtime.world_size > 1 and leave_cluster:
            _leave_cluster()


def _leave_cluster():
    """Run the exit hooks now: MindSpore's unregister this worker from msrun's scheduler.
    The tools leave through os._exit (defrcn.engine.cli), which skips them, and the
    scheduler then fails the job with 'node timed out'."""
    import atexit

    atexit._run_exitfuncs()


def train_seeds(recipe_path, seeds, *, overrides=(), output_dir=None, **kwargs):
    """One run per split seed into OUTPUT/seed<S>; finished seeds skipped, half-done resumed."""
    runtime = setup_runtime(kwargs.pop("device", "CPU"), pynative=kwargs.get("pynative", False),
                            deterministic=kwargs.get("deterministic", False))
    distributed, is_main = runtime.world_size > 1, runtime.is_main  # the rank MindSpore assigned
    base = Path(output_dir or load_recipe(recipe_path, overrides).cfg.output_dir)
    runs = []
    for seed in seeds:
        run_dir = base / f"seed{seed}"
        runs.append(run_dir)
        # Ranks decide alike: rank 0 writes these files of seed S only after a training step
        # of S, which every rank joins once it has decided for S.
        if (run_dir / "model_final.ckpt").exists():
            if is_main:
                print(f"seed {seed}: finished earlier ({run_dir}), skipped", flush=True)
            continue
        resume = (run_dir / "last_checkpoint").exists()
        if is_main:
            print(f"seed {seed}: {'resuming' if resume else 'training'} into {run_dir}", flush=True)
        train_recipe(recipe_path, overrides=[*overrides, f"data.split_seed={seed}"],
                     output_dir=run_dir, resume=resume, leave_cluster=False, runtime=runtime, **kwargs)
    if is_main:
        _print_aggregate(runs)
    if distributed:
        _leave_cluster()
    return runs


def _print_aggregate(runs):
    """The sweep's mean / std / 95% CI table (tools/aggregate.py), or why there is none."""
    from defrcn.evaluation.aggregate import write_aggregate

    try:
        _, markdown, path = write_aggregate(runs)
    except InputError as e:
        print(f"no aggregate: {e}", flush=True)
        return
    print(f"\n{markdown}\n\nwrote {path}", flush=True)


def _check_speed_keys(cfg):
    """solver.amp_level / loss_scale / dataset_sink, refused in one line (exit 2) up front."""
    from defrcn.engine.precision import amp_settings

    amp_settings(cfg.solver)
    canvases = cfg.input.canvases
    if cfg.solver.get("dataset_sink", False) and len(canvases) > 1:
        # Model's sink feeds a fixed-shape device queue: MindSpore's DatasetHelper wants "the
        # type and shape of each data in the dataset" consistent (other shapes: sink_size 1 only).
        side = max(max(canvas) for canvas in canvases)
        raise InputError(f"solver.dataset_sink: a sink carries one input shape, but input.canvases has "
                         f"{len(canvases)} ({canvases}); set one canvas that holds them all "
                         f"(--set input.canvases=[[{side},{side}]]) or leave solver.dataset_sink=false")


def _checked_train_data(recipe, cfg):
    """The training records, with every image header read: bad data is one line (exit 2)
    before the output folder is touched."""
    from defrcn.data.pipeline import check_image_headers

    data = recipe.dataset(cfg, "train")
    check_image_headers(data.records)
    return data


def _check_fresh_or_resume(out, resume, check_lock=True):
    # A live run is the reason to give first: its checkpoints are what it is writing. Only the
    # rank that takes the lock looks (the others would see that rank's own lock).
    if check_lock:
        OutputLock(str(out)).refuse_if_live()
    if not resume and (out / "last_checkpoint").exists():
        raise InputError("holds checkpoints of an earlier run; pass --resume to continue it "
                         "or choose another --output-dir", path=str(out))


def _setup_logging(out, is_main):
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s",
                        datefmt="%H:%M:%S")
    if is_main:
        out.mkdir(parents=True, exist_ok=True)


def _seed_everything(seed):
    import mindspore as ms

    ms.set_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _train(recipe, cfg, spec, plan, runtime, out, train_data, *, resume, init, evaluate):
    from defrcn.checkpoint.io import find_resume_checkpoint
    from defrcn.checkpoint.training_state import restore_training_state
    from defrcn.data.pipeline import input_errors_as_one_line
    from defrcn.engine.loop import run_training
    from defrcn.engine.precision import amp_settings, apply_mixed_precision, build_loss_scaler
    from defrcn.engine.train_step import TrainStep

    _seed_everything(cfg.seed)  # the same on every rank: identical initialisation
    model = recipe.model(cfg, rank=runtime.rank)
    load_initial_weights(model, cfg, spec, init)
    amp_level, loss_scale = amp_settings(cfg.solver)
    apply_mixed_precision(model, amp_level)
    if amp_level != "O0":
        logger.info("mixed precision %s, loss scale %s", amp_level, loss_scale)
        if runtime.device == "CPU":
            logger.warning("solver.amp_level=%s on CPU: it trains, but slower than float32 (the toy "
                           "recipe took 1.3x the time per step); mixed precision is for GPU and Ascend",
                           amp_level)
    optimizer = recipe.optimizer(cfg, model, plan)
    train_step = TrainStep(model, optimizer, grad_accumulation=plan["accumulate_steps"],
                           loss_scaler=build_loss_scaler(loss_scale))
    from defrcn.solver.optim import optimizer_lr_table

    max_iter = plan["max_iter"]
    rates = optimizer_lr_table(optimizer)  # what the optimizer applies: the log shows this
    start_iter = 0
    if resume:
        path = find_resume_checkpoint(str(out))
        if path:
            start_iter, stored = restore_training_state(train_step, optimizer, path, with_extras=True)
            change = describe_schedule_change(stored, plan, rates)
            logger.info("resumed from %s at iteration %d; %s", path, start_iter,
                        f"the schedule follows the recipe, changed since that checkpoint: {change}" if change
                        else "schedule unchanged")
    if start_iter >= max_iter:
        print(f"{out}: already trained to iteration {max_iter}; nothing to do", flush=True)
        return out
    if runtime.is_main:
        resolved = cfg.copy()  # the class lists and count as resolved from the data set
        resolved.data.base_classes, resolved.data.novel_classes = list(spec.base_classes), list(spec.novel_classes)
        resolved.model.num_classes = spec.num_classes
        resolved["schedule"] = {k: v for k, v in plan.items()}
        save_config(resolved, str(out), cfg.recipe)
    micro_steps = plan["accumulate_steps"]
    data = recipe.dataset(cfg, "train", num_shards=runtime.world_size, shard_id=runtime.rank,
                          start_iter=start_iter * micro_steps,
                          num_batches=(max_iter - start_iter) * micro_steps, preloaded=train_data)
    evaluations = []  # (iteration, metrics) of every evaluation this run makes
    eval_fn = _eval_fn(cfg, model, recipe, evaluations) if evaluate and runtime.is_main else None
    ctx = TrainContext(
        output_dir=str(out), is_main=runtime.is_main, optimizer=optimizer, start_iter=start_iter,
        loss_names=tuple(model.loss_names), schedule=dict(plan),
        lr_fn=lambda it: float(rates[min(max(it - 1, 0), len(rates) - 1)]), eval_fn=eval_fn,
    )
    callbacks = recipe.callbacks(cfg, ctx)
    model.set_train(True)
    with input_errors_as_one_line():
        run_training(train_step, data.loader, callbacks, start_iter, max_iter,
                     sink_size=_sink_size(cfg, plan, start_iter))
    if runtime.is_main:
        _write_final_metrics(evaluations, out, max_iter)
    return out


def _sink_size(cfg, plan, start_iter):
    """Iterations per data sink: log.period, lowered to divide the checkpoint and eval periods,
    start_iter and max_iter (the same on every rank); 0 = no sink."""
    if not cfg.solver.get("dataset_sink", False):
        return 0
    from defrcn.engine.loop import SINK_FALLBACK, dataset_sink_size, sink_unsupported_reason

    reason = sink_unsupported_reason()
    if reason:
        logger.info(SINK_FALLBACK, reason)
        return 0
    size = dataset_sink_size(cfg.log.period, start_iter=start_iter, max_iter=plan["max_iter"],
                             periods=(plan["checkpoint_period"], plan["eval_period"]))
    numbers = (f"log.period {cfg.log.period}, checkpoint_period {plan['checkpoint_period']}, "
               f"eval_period {plan['eval_period']}, start {start_iter}, max_iter {plan['max_iter']}")
    if size:
        logger.info("solver.dataset_sink: %d iterations per sink (the largest dividing %s)", size, numbers)
    else:
        logger.info(SINK_FALLBACK, f"no sink longer than 1 iteration divides {numbers}")
    return size


def _write_final_metrics(evaluations, out, max_iter):
    """OUTPUT/metrics.json from the evaluation at max_iter, if one ran."""
    from defrcn.utils.atomic import write_json_atomic

    for iteration, metrics in reversed(evaluations):
        if iteration >= max_iter:
            write_json_atomic(str(out / "metrics.json"), dict(metrics))
            return


def _eval_fn(cfg, model, recipe, evaluations):
    """The periodic/final evaluation; each result is also appended to `evaluations`."""
    from defrcn.engine.evaluate import make_eval_fn

    evaluate = make_eval_fn(cfg, model, recipe.dataset(cfg, "test"))

    def run(iteration):
        metrics = evaluate(iteration)
        evaluations.append((iteration, metrics))
        return metrics

    return run


def load_initial_weights(model, cfg, spec, init=None):
    """--init CKPT, else a fine-tune recipe's base weights (through surgery), else ImageNet."""
    from defrcn.checkpoint.loader import load_weights

    if init:
        load_weights(model, init)
        return
    base = cfg.model.get("base_weights", "")
    if base and _needs_surgery(cfg.model.get("surgery", "none"), base, spec.num_classes):
        from defrcn.checkpoint.surgery import apply_surgery_to_model, surgery_classes

        base_names, target_names = surgery_classes(spec)
        apply_surgery_to_model(model, base, method=cfg.model.surgery, base_class_names=base_names,
                               target_class_names=target_names, seed=cfg.seed)
        logger.info("initialised from %s with surgery '%s'", base, cfg.model.surgery)
        return
    if base:
        load_weights(model, base)
        return
    weights = cfg.model.get("weights", "")
    if weights:
        if not os.path.exists(weights):
            raise InputError("ImageNet weights not found; make them with tools/convert.py "
                             "or set model.weights=''", path=weights)
        load_weights(model, weights, partial=True)  # the backbone; the heads keep their initialisation


def _needs_surgery(method, base, num_classes):
    """A base-training checkpoint needs surgery; a surgery output (tools/surgery.py) does not.

    `remove` is applied every time (dropping the predictor twice is harmless); `randinit`
    only when the checkpoint's classifier is not already sized for this recipe.
    """
    from defrcn.checkpoint.io import load_checkpoint
    from defrcn.modeling.param_names import CLS_WEIGHT

    if method == "none":
        return False
    if method == "remove":
        return True
    cls = load_checkpoint(base).get(CLS_WEIGHT)
    return cls is not None and cls.shape[0] != num_classes + 1
