"""Convert weights from PyTorch / Caffe2 / the MindSpore port to this project's checkpoints.

Examples:
    python tools/convert.py detectron2 R-101.pkl weights/R-101-msra.ckpt
        (detectron2 ImageNetPretrained/MSRA/R-101.pkl: the detector's backbone init)
    python tools/convert.py torchvision resnet101-5d3b4d8f.pth weights/resnet101-torchvision.ckpt
        (torchvision ImageNet ResNet-101, mindcv names: the PCB feature net)
    python tools/convert.py defrcn model_final.pth output/coco_base/model_final.ckpt --recipe recipes/coco_base.py
        (a whole detector of the original DeFRCN: base, model_reset_surgery/remove or fine-tuned;
        predictor rows mapped by class name to the recipe's order)
    python tools/convert.py port defrcn-60_1.ckpt output/coco_base/model_final.ckpt --recipe recipes/coco_base.py
        (a detector of the MindSpore model-zoo port CSberlin/DeFRCN-mindspore)

Pickles and .pth files are read as data: a file that would run code is refused before any of
it runs (defrcn/checkpoint/safe_load.py), and PyTorch is not needed.
"""
import click

from defrcn.engine import cli
from defrcn.errors import InputError

IMAGENET_KINDS = ("torchvision", "detectron2")
DETECTOR_KINDS = ("defrcn", "port")


def _shown(names, limit=4):
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def convert_weights(kind, src, dst):
    """Run an ImageNet conversion and print what was written."""
    from defrcn.checkpoint.convert import convert

    summary = convert(kind, src, dst)
    click.echo(f"ResNet-{summary.depth}: {summary.converted} entries written to {dst}")
    if summary.ignored:
        click.echo(f"left out {len(summary.ignored)} source entries: {_shown(summary.ignored)}")
    click.echo(f"note: {summary.note}")


def detector_target(recipe_path, overrides):
    """DetectorTarget of a recipe: its model's parameter shapes, class lists and anchor counts."""
    from defrcn.checkpoint.convert_detector import DetectorTarget
    from defrcn.data.spec import resolve_data_spec
    from defrcn.engine import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    cfg = recipe.cfg
    spec = resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)
    model = recipe.model(cfg)
    shapes = {param.name: tuple(param.shape) for param in model.get_parameters()}
    return DetectorTarget(shapes, list(spec.model_classes), list(spec.base_classes), list(spec.novel_classes),
                          list(spec.all_classes), len(cfg.model.rpn.anchor_sizes),
                          len(cfg.model.rpn.anchor_aspect_ratios))


def convert_detector_file(kind, src, dst, recipe, overrides, source_classes):
    """Convert a whole detector for `recipe` and print the key coverage."""
    from defrcn.checkpoint.convert_detector import convert_detector, read_detector_weights

    if not str(dst).endswith(".ckpt"):
        raise InputError("the output file name must end in .ckpt", path=dst)
    weights = read_detector_weights(kind, src)  # a bad file is refused before the recipe is built
    target = detector_target(recipe, overrides)
    names = source_classes.split(",") if source_classes else None
    result = convert_detector(kind, src, dst, target, source_classes=names, weights=weights)
    total = len(result.converted) + len(result.left_out)
    click.echo(f"{kind}: converted {len(result.converted)} of {total} source entries into "
               f"{len(result.arrays)} parameters, written to {dst}")
    if result.left_out:
        by_reason = {}
        for name, reason in result.left_out.items():
            by_reason.setdefault(reason, []).append(name)
        for reason, left in by_reason.items():
            click.echo(f"left out {len(left)} ({reason}): {_shown(left)}")
    if result.not_in_source:
        click.echo(f"model parameters not in the source, kept at their init ({len(result.not_in_source)}): "
                   f"{_shown(result.not_in_source)}")
    if result.source_classes is not None:
        same = result.source_classes == result.written_classes
        click.echo(f"predictor: {len(result.source_classes)} source classes -> {len(result.written_classes)} "
                   f"written ({'same order' if same else 'rows moved by class name'}; background last)")
    for note in result.notes:
        click.echo(f"note: {note}")


def run(kind, src, dst, recipe, overrides, source_classes):
    if kind in DETECTOR_KINDS:
        if not recipe:
            raise InputError(f"{kind}: --recipe is needed (the model and class order to convert for)")
        convert_detector_file(kind, src, dst, recipe, overrides, source_classes)
        return
    if recipe or overrides or source_classes:
        raise InputError(f"{kind}: --recipe, --set and --source-classes apply to defrcn and port only")
    convert_weights(kind, src, dst)


@click.command()
@click.argument("kind", type=click.Choice(IMAGENET_KINDS + DETECTOR_KINDS))
@click.argument("src")
@click.argument("dst")
@click.option("--recipe", default=None, type=click.Path(dir_okay=False), metavar="RECIPE",
              help="defrcn/port: the recipe whose model the checkpoint is for.")
@cli.set_option
@click.option("--source-classes", default=None, metavar="A,B,...",
              help="defrcn/port: the source predictor's classes in row order (default: inferred from "
                   "its row count among the recipe's base/novel/all lists).")
@cli.debug_option
def main(kind, src, dst, recipe, overrides, source_classes, debug):
    """Convert SRC to the MindSpore checkpoint DST (.ckpt): ImageNet ResNets (torchvision .pth,
    detectron2/Caffe2 .pkl) or whole DeFRCN detectors (original .pth, MindSpore-port .ckpt)."""
    cli.run(run, kind, src, dst, recipe, list(overrides), source_classes, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
