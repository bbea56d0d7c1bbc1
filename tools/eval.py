"""Evaluate a checkpoint on a recipe's test set; print the AP table, write metrics.json.

    python tools/eval.py recipes/toy_base.py --checkpoint output/toy_base/model_final.ckpt
    python tools/eval.py recipes/coco_tfa_10shot.py --checkpoint CKPT --pcb --set data.root=datasets

Writes detections.json and metrics.json (with --pcb: detections_pcb.json, metrics_pcb.json)
into --output-dir (default: the checkpoint's folder).
"""
import logging

import click

from defrcn.engine import cli
from defrcn.engine.evaluate import evaluate_recipe


@click.command()
@cli.recipe_argument
@click.option("--checkpoint", required=True, help="The .ckpt to evaluate.")
@click.option("--pcb/--no-pcb", default=None,
              help="Rescore with the prototypical calibration block (default: test.pcb.enable).")
@cli.set_option
@cli.output_dir_option(default_text="the checkpoint's folder")
@cli.device_option
@cli.debug_option
def main(recipe, checkpoint, pcb, overrides, output_dir, device, debug):
    """Evaluate CHECKPOINT on the test set of RECIPE (COCO or VOC protocol)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.run(evaluate_recipe, recipe, checkpoint=checkpoint, overrides=overrides,
            output_dir=output_dir, pcb=pcb, device=device, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
