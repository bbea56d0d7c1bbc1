"""Make K-shot split files with TFA's protocol, one file per class, K and seed.

Examples:
    python tools/split.py coco --annotations datasets/cocosplit/datasplit/trainvalno5k.json \
        --shots 1,2,3,5,10,30 --seeds 0-9 --output-dir datasets/cocosplit
    python tools/split.py voc --root datasets --shots 1,2,3,5,10 --seeds 0-9 --output-dir datasets/vocsplit
    python tools/split.py custom --annotations ROOT/annotations/train.json --seeds 0-9 --output-dir ROOT/fewshot
Seed 0 is written at the top of OUTPUT_DIR, seed S >= 1 in OUTPUT_DIR/seed{S}.
"""
import logging
import os

import click

from defrcn.data.split_making import parse_int_list, write_coco_splits, write_voc_splits
from defrcn.engine import cli
from defrcn.errors import InputError


def make_splits(benchmark, *, annotations, root, images, shots, seeds, output_dir, classes):
    """Parse the option strings and write the split files."""
    shots = parse_int_list(shots, "--shots")
    if 0 in shots:
        raise InputError("--shots: K must be >= 1")
    seeds = parse_int_list(seeds, "--seeds")
    classes = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    if benchmark == "voc":
        if not root:
            raise InputError("--root: required for voc (the folder holding VOC2007/ and VOC2012/)")
        count = write_voc_splits(root, shots, seeds, output_dir, classes=classes)
    else:
        if not annotations:
            raise InputError(f"--annotations: required for {benchmark}")
        image_dirs = None
        if benchmark == "custom":
            image_dirs = [images] if images else _custom_image_dirs(annotations)
        count = write_coco_splits(annotations, shots, seeds, output_dir, strict=benchmark == "custom",
                                  image_dirs=image_dirs, classes=classes)
    click.echo(f"wrote {count} split files to {output_dir}")


def _custom_image_dirs(annotations):
    """ROOT/images/<part>, ROOT/images for ROOT/annotations/<part>.json (the custom layout)."""
    folder, name = os.path.split(os.path.abspath(annotations))
    if os.path.basename(folder) != "annotations":
        return None
    images = os.path.join(os.path.dirname(folder), "images")
    return [os.path.join(images, os.path.splitext(name)[0]), images]


@click.command()
@click.argument("benchmark", type=click.Choice(["coco", "voc", "custom"]))
@click.option("--annotations", default=None, help="COCO json to sample from (coco, custom).")
@click.option("--root", default=None, help="Folder with VOC2007/ and VOC2012/ (voc).")
@click.option("--images", default=None,
              help="custom: image folder to check files in (default: ROOT/images/<part> and ROOT/images "
                   "when the json is ROOT/annotations/<part>.json; otherwise images are not checked).")
@click.option("--shots", default="1,2,3,5,10", show_default=True, help="K values, e.g. 1,2,3,5,10,30.")
@click.option("--seeds", default="0-9", show_default=True, help="Seeds, e.g. 0-9 or 0,3,5.")
@click.option("--classes", default=None, help="Comma-separated class names (default: all).")
@cli.output_dir_option(required=True)
@cli.debug_option
def main(benchmark, annotations, root, images, shots, seeds, classes, output_dir, debug):
    """Write K-shot split files for BENCHMARK (coco, voc or custom) into --output-dir (seed 0
    at its top, seed{S}/ below)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.run(make_splits, benchmark, annotations=annotations, root=root, images=images, shots=shots,
            seeds=seeds, output_dir=output_dir, classes=classes, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
