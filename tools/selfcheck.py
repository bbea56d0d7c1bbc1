"""Self-check of a new device: a small detector on DEVICE and on CPU, compared stage by stage.

    python tools/selfcheck.py --device GPU
    python tools/selfcheck.py --device Ascend --mode pynative --keep /tmp/selfcheck
    python tools/selfcheck.py --compare /tmp/selfcheck --rtol 1e-4

Both sides get the same weights and batch; the table lists each stage (features, RPN,
proposals, ROI head, detections, losses, gradients, one SGD step) with its max abs / rel
difference, the tolerance and OK / DEPARTS, then the first departing stage and the ops to
look at (defrcn/apps/selfcheck.py explains each row). Exit code 0 when every stage
agrees, 1 when one departs or a side fails, 2 on bad options.
"""
import click

from defrcn.engine import cli
from defrcn.apps.selfcheck import DEPTHS, MODES, RTOL, compare_folder, run_selfcheck


def selfcheck(device, against, compare_dir, **options):
    """Run (or re-compare) and print the table; SystemExit(1) when a stage departs."""
    def progress(message):
        click.echo(f"[selfcheck] {message}", err=True)

    if compare_dir:
        text, departed = compare_folder(compare_dir, options["rtol"])
    else:
        text, departed = run_selfcheck(device, against, progress=progress, **options)
    click.echo(text)
    if departed:
        raise SystemExit(cli.EXIT_FAILURE)


@click.command()
@click.option("--device", type=cli.DEVICE_CHOICE, default=None, help="The device to check.")
@click.option("--against", type=cli.DEVICE_CHOICE, default="CPU", show_default=True,
              help="The reference device.")
@click.option("--mode", type=click.Choice(MODES), default="graph", show_default=True,
              help="MindSpore execution mode of both sides (training runs in graph mode).")
@click.option("--depth", type=click.Choice([str(d) for d in DEPTHS]), default="18", show_default=True,
              help="ResNet depth of the small detector.")
@click.option("--size", type=int, default=128, show_default=True, help="Canvas side in pixels (multiple of 32).")
@click.option("--rtol", type=float, default=RTOL, show_default=True,
              help="Tolerance: max |diff| / max |reference| of each stage.")
@click.option("--fp32", is_flag=True,
              help="Turn off TF32 (GPU) / HF32, float16 (Ascend) convolutions: only float32 rounding remains.")
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Keep weights, inputs and both sides' records and logs in this (new or empty) folder.")
@click.option("--compare", "compare_dir", type=click.Path(file_okay=False), default=None,
              help="Only compare the records a --keep run left in this folder.")
@click.option("--timeout", type=int, default=1800, show_default=True, help="Seconds each side may take.")
@cli.debug_option
def main(device, against, mode, depth, size, rtol, fp32, keep, compare_dir, timeout, debug):
    """Run a small DeFRCN on DEVICE and on --against (CPU) with the same weights and batch, and
    print the differences stage by stage."""
    if not device and not compare_dir:
        raise click.UsageError("give --device CPU|GPU|Ascend (or --compare FOLDER)")
    options = dict(rtol=rtol)
    if not compare_dir:
        options.update(mode=mode, depth=int(depth), size=size, fp32=fp32, keep=keep, timeout=timeout)
    cli.run(selfcheck, device, against, compare_dir, debug=debug, **options)


if __name__ == "__main__":
    cli.main_guard(main)
