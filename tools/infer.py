"""Detect objects in images and write labelled PNGs and JSON detections.

    python tools/infer.py recipes/toy_base.py --checkpoint output/toy_base/model_final.ckpt \\
        photo.jpg more_photos/ --output-dir predictions/

Per image: OUTPUT_DIR/<stem>.png (boxes with `class score`) and OUTPUT_DIR/<stem>.json
({"image", "width", "height", "detections": [{"bbox": [x0, y0, x1, y1], "score",
"category", "category_id"}]}, boxes in the image's own pixels). Folders expand to their
.jpg/.jpeg/.png files.
"""
import click

from defrcn.engine import cli


def _infer(recipe, checkpoint, images, output_dir, **kwargs):
    from defrcn.inference.infer import infer_to_folder

    written = infer_to_folder(recipe, checkpoint, images, output_dir, **kwargs)
    click.echo(f"wrote {len(written)} images' detections to {output_dir}")


@click.command()
@cli.recipe_argument
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(), help="Model checkpoint (.ckpt).")
@cli.output_dir_option(required=True)
@click.option("--score-thresh", default=0.5, show_default=True, type=float,
              help="Keep detections scoring at least this (lowers the model's own threshold if needed).")
@click.option("--pcb", is_flag=True, help="Rescore with prototypical calibration (PCB).")
@cli.set_option
@cli.device_option
@cli.debug_option
def main(recipe, images, checkpoint, output_dir, score_thresh, pcb, overrides, device, debug):
    """Run RECIPE's detector with CHECKPOINT on IMAGES (files or folders); write a labelled
    PNG and a JSON per image into --output-dir."""
    cli.run(_infer, recipe, checkpoint, images, output_dir, score_thresh=score_thresh, pcb=pcb,
            overrides=overrides, device=device, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
