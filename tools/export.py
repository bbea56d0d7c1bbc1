"""Export a trained detector's inference graph (MINDIR) for MindSpore serving / Lite.

    python tools/export.py recipes/toy_base.py --checkpoint output/toy_base/model_final.ckpt \\
        --format MINDIR --output toy_base.mindir

Inputs of the graph: images float32 (1, 3, H, W) on the recipe's first canvas (normalised,
padded bottom/right) and image_sizes float32 (1, 2) = (h, w) of the content; outputs:
boxes (1, D, 4) in canvas pixels, scores (1, D), classes (1, D), valid (1, D).
"""
import os

import click

from defrcn.engine import cli

# MindSpore's graph compiler logs dozens of harmless "side effect nodes eliminated" warnings
# while exporting; show errors only unless the user set GLOG_v (read when MindSpore is imported).
os.environ.setdefault("GLOG_v", "3")


def _export(recipe, checkpoint, output, **kwargs):
    from defrcn.inference.export import export_model

    click.echo(f"wrote {export_model(recipe, checkpoint, output, **kwargs)}")


@click.command()
@cli.recipe_argument
@click.option("--checkpoint", required=True, type=click.Path(), help="Model checkpoint (.ckpt).")
@click.option("--format", "file_format", default="MINDIR", show_default=True,
              help="Export format (only MINDIR).")
@cli.output_option(required=True)
@cli.set_option
@cli.device_option
@cli.debug_option
def main(recipe, checkpoint, file_format, output, overrides, device, debug):
    """Export RECIPE's detector with CHECKPOINT to --output (written exactly as named)."""
    cli.run(_export, recipe, checkpoint, output, file_format=file_format, overrides=overrides,
            device=device, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
