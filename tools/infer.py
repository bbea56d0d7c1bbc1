"""Detect objects in images and write labelled PNGs and JSON detections.

    python tools/infer.py recipes/toy_base.py --checkpoint output/toy_base/model_final.ckpt \\
        photo.jpg more_photos/ --out predictions/

Per image: OUT/<stem>.png (boxes with `class score`) and OUT/<stem>.json
({"image", "width", "height", "detections": [{"bbox": [x0, y0, x1, y1], "score",
"category", "category_id"}]}, boxes in the image's own pixels). Folders expand to their
.jpg/.jpeg/.png files.
"""
import click

from defrcn.engine import cli


def _infer(recipe, checkpoint, images, out, **kwargs):
    from defrcn.inference.infer import infer_to_folder

    written = infer_to_folder(recipe, checkpoint, images, out, **kwargs)
    click.echo(f"wrote {len(written)} images' detections to {out}")


@click.command()
@click.argument("recipe", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(), help="Model checkpoint (.ckpt).")
@click.option("--out", required=True, type=click.Path(), help="Output folder.")
@click.option("--score-thresh", default=0.5, show_default=True, type=float,
              help="Keep detections scoring at least this (lowers the model's own threshold if needed).")
@click.option("--pcb", is_flag=True, help="Rescore with prototypical calibration (PCB).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe setting.")
@click.option("--device", default="CPU", show_default=True, help="CPU, GPU or Ascend.")
@cli.debug_option
def main(recipe, images, checkpoint, out, score_thresh, pcb, overrides, device, debug):
    """Run RECIPE's detector with CHECKPOINT on IMAGES (files or folders)."""
    cli.run(_infer, recipe, checkpoint, images, out, score_thresh=score_thresh, pcb=pcb,
            overrides=overrides, device=device, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
