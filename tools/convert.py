"""Convert ImageNet ResNet weights to MindSpore checkpoints.

Examples:
    python tools/convert.py detectron2 R-101.pkl weights/R-101-msra.ckpt
        (detectron2 ImageNetPretrained/MSRA/R-101.pkl: the detector's backbone init)
    python tools/convert.py torchvision resnet101-5d3b4d8f.pth weights/resnet101-torchvision.ckpt
        (torchvision ImageNet ResNet-101, mindcv names: the PCB feature net; needs `pip install torch`)
"""
import click

from defrcn.engine import cli


def convert_weights(kind, src, dst):
    """Run the conversion and print what was written."""
    from defrcn.checkpoint.convert import convert

    summary = convert(kind, src, dst)
    click.echo(f"ResNet-{summary.depth}: {summary.converted} entries written to {dst}")
    if summary.ignored:
        shown = ", ".join(summary.ignored[:4]) + (", ..." if len(summary.ignored) > 4 else "")
        click.echo(f"left out {len(summary.ignored)} source entries: {shown}")
    click.echo(f"note: {summary.note}")


@click.command()
@click.argument("kind", type=click.Choice(["torchvision", "detectron2"]))
@click.argument("src")
@click.argument("dst")
@cli.debug_option
def main(kind, src, dst, debug):
    """Convert SRC (torchvision .pth or detectron2/Caffe2 .pkl) to the MindSpore checkpoint DST (.ckpt)."""
    cli.run(convert_weights, kind, src, dst, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
