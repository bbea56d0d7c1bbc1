"""Evaluate a checkpoint on a recipe's test set (`tools/eval.py`), and the evaluation
function the periodic-eval callback calls during training.

    metrics = evaluate_recipe("recipes/toy_base.py", checkpoint="output/toy_base/model_final.ckpt")

    evaluation = Evaluation("recipes/toy_10shot.py", checkpoint=...)   # detects once:
    plain, calibrated = evaluation.evaluate(pcb=False), evaluation.evaluate(pcb=True)

Writes `detections.json` and `metrics.json` into the output folder (default: the
checkpoint's folder); with PCB on, `detections_pcb.json` and `metrics_pcb.json` instead,
so a plain and a calibrated evaluation of one checkpoint sit side by side.
"""
import logging
import os

import click

from defrcn.errors import InputError

__all__ = ["Evaluation", "evaluate_recipe", "evaluate_model", "make_eval_fn"]

logger = logging.getLogger(__name__)


def _build_pcb(cfg, model, data):
    from defrcn.inference.predict import build_recipe_pcb

    return build_recipe_pcb(cfg, model, data.meta)


def evaluate_model(model, data, *, progress=True, rescore=None, rescore_many=None):
    """(detections, metrics) of `model` on `data` (a recipe's test `Data`)."""
    from defrcn.inference.dataset import run_inference
    from defrcn.evaluation.metrics import evaluate_detections

    detections = run_inference(model, data.loader, data.records, data.meta, progress=progress,
                               rescore=rescore, rescore_many=rescore_many)
    return detections, evaluate_detections(detections, data.records, data.meta)


class Evaluation:
    """A checkpoint on a recipe's test set: the model and the data are built once, the test
    images are detected once (on the first `evaluate`), and each `evaluate(pcb=...)` scores
    those detections, with or without PCB rescoring (what `evaluate_recipe` does in one call).

    Args: as `evaluate_recipe`'s.
    """

    def __init__(self, recipe_path, *, checkpoint, overrides=(), device="CPU"):
        from defrcn.checkpoint.loader import load_weights
        from defrcn.config.recipe import load_recipe
        from defrcn.engine.doctor import check_or_raise
        from defrcn.engine.runtime import setup_runtime
        from defrcn.modeling.fold_bn import fold_for_inference
        from defrcn.utils.device import fuse_inference_kernels

        recipe = load_recipe(recipe_path, overrides)
        self.cfg = cfg = recipe.cfg
        if not os.path.isfile(checkpoint):
            raise InputError("checkpoint file not found", path=checkpoint)
        for finding in check_or_raise(cfg, init=checkpoint, purpose="eval"):  # InputError before the model
            logger.warning("doctor: %s", finding.message)
        setup_runtime(device)
        self.checkpoint = checkpoint
        self.model = recipe.model(cfg)
        load_weights(self.model, checkpoint)
        fuse_inference_kernels(device, cfg, folded=fold_for_inference(self.model))
        self.data = recipe.dataset(cfg, "test")
        self.predictions = None

    def predict(self, progress=True):
        """Per-image predictions on the test set (`predict_dataset`), computed once."""
        from defrcn.inference.dataset import predict_dataset

        if self.predictions is None:
            self.predictions = predict_dataset(self.model, self.data.loader, self.data.records,
                                               progress=progress)
        return self.predictions

    def evaluate(self, *, pcb=None, output_dir=None, progress=True):
        """The metrics dict, written with the detections as metrics.json / detections.json
        (metrics_pcb.json / detections_pcb.json with PCB) into `output_dir` (default: the
        checkpoint's folder); pcb None follows `test.pcb.enable`."""
        from defrcn.evaluation.metrics import evaluate_detections, format_table
        from defrcn.inference.dataset import detections_of_predictions
        from defrcn.utils.atomic import write_json_atomic

        use_pcb = bool(self.cfg.test.pcb.enable) if pcb is None else bool(pcb)
        data = self.data
        # PCB's prototypes first: a support set that cannot be read fails before the detection
        rescore_many = _build_pcb(self.cfg, self.model, data).rescore_many if use_pcb else None
        detections = detections_of_predictions(self.predict(progress), data.meta, rescore_many=rescore_many)
        metrics = evaluate_detections(detections, data.records, data.meta)
        output_dir = output_dir or os.path.dirname(os.path.abspath(self.checkpoint))
        os.makedirs(output_dir, exist_ok=True)
        suffix = "_pcb" if use_pcb else ""
        write_json_atomic(os.path.join(output_dir, f"detections{suffix}.json"), detections, indent=None)
        metrics_path = write_json_atomic(os.path.join(output_dir, f"metrics{suffix}.json"), metrics)
        click.echo(format_table(metrics, base_classes=data.meta.base_classes,
                                novel_classes=data.meta.novel_classes))
        click.echo(f"wrote {metrics_path} ({len(detections)} detections on {len(data.records)} images)")
        return metrics


def evaluate_recipe(recipe_path, *, checkpoint, overrides=(), output_dir=None, pcb=None,
                    device="CPU", progress=True):
    """Evaluate `checkpoint` on the test set of the recipe at `recipe_path`.

    Args:
        overrides: `key=value` strings applied to the recipe's cfg.
        output_dir: where detections and metrics go (default: the checkpoint's folder).
        pcb: True / False forces PCB on / off; None follows `test.pcb.enable`.
        device: "CPU", "GPU" or "Ascend" (graph mode).
    Returns:
        the metrics dict (also written as metrics.json or metrics_pcb.json).
    """
    evaluation = Evaluation(recipe_path, checkpoint=checkpoint, overrides=overrides, device=device)
    return evaluation.evaluate(pcb=pcb, output_dir=output_dir, progress=progress)


def make_eval_fn(cfg, model, data, *, progress=False, image_count=None):
    """`fn(iteration) -> metrics` for `callbacks/eval_hook.PeriodicEval`: evaluates `model`
    on `data` (no PCB) and puts the model back in train mode afterwards.

    The metrics come as `MetricsWithImages` (a dict): `.images` holds ground truth and
    predicted boxes drawn on the first `image_count` test images (default
    `EVAL_IMAGE_COUNT`; 0 = none), which PeriodicEval sends to TensorBoard."""
    from defrcn.inference.eval_images import EVAL_IMAGE_COUNT, MetricsWithImages, draw_eval_images

    count = EVAL_IMAGE_COUNT if image_count is None else int(image_count)

    def eval_fn(iteration):
        try:
            detections, metrics = evaluate_model(model, data, progress=progress)
        finally:
            model.set_train(True)
        logger.info("evaluated at iteration %d on %d images", iteration, len(data.records))
        images = draw_eval_images(detections, data.records, data.meta, count=count) if count else []
        return MetricsWithImages(metrics, images)

    return eval_fn
