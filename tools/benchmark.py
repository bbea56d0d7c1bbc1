"""Time a recipe's detector (train step or inference) or its data loader on random inputs.

    python tools/benchmark.py recipes/coco_base.py --mode infer --batch 1 --size 512 512 --iters 3 --json
    python tools/benchmark.py recipes/coco_base.py --mode train --batch 2 --size 800 1333 --iters 2 --warmup 1
    python tools/benchmark.py recipes/coco_base.py --mode infer --breakdown   # backbone / RPN / ROI heads
    python tools/benchmark.py recipes/coco_base.py --mode data --batch 2      # loader images/s

Random weights with calibrated BN statistics, random images filling an H x W canvas,
the recipe's own settings (defrcn/apps/benchmark.py explains each choice). Prints one
JSON line (median_ms, min_ms, peak_rss_mib, params, compile_s, proposals_per_image,
device, mindspore, ...); without --json a one-line summary comes first. Compare with
the PyTorch peer in interleaved runs: docs/benchmark.md says how.
"""
import json

import click

from defrcn.engine import cli
from defrcn.apps.benchmark import MODES, benchmark_recipe


def _run(recipe, as_json, **kwargs):
    result = benchmark_recipe(recipe, **kwargs)
    if not as_json:
        click.echo(f"{result['recipe']} {result['mode']} batch {result['batch']} "
                   f"size {result['size'][0]}x{result['size'][1]}: median {result['median_ms']:.1f} ms, "
                   f"min {result['min_ms']:.1f} ms, compile {result['compile_s']:.1f} s, "
                   f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    click.echo(json.dumps(result))


@click.command()
@cli.recipe_argument
@click.option("--mode", type=click.Choice(MODES), default="infer", show_default=True,
              help="train: one optimizer step; infer: one forward pass; data: loader images/s.")
@click.option("--batch", type=int, default=None,
              help="Images per step [default: the recipe's ims_per_device].")
@click.option("--size", type=int, nargs=2, default=None, metavar="H W",
              help="Canvas size [default: the recipe's first canvas]; data mode: JPEG size [480 640].")
@click.option("--iters", type=int, default=3, show_default=True, help="Timed steps.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Untimed steps after compiling.")
@click.option("--breakdown", is_flag=True, help="Infer: also time backbone / RPN / ROI heads separately.")
@click.option("--images", "num_images", type=int, default=200, show_default=True,
              help="Data mode: synthetic JPEGs to write.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of weights and inputs.")
@click.option("--fold-bn/--no-fold-bn", default=None,
              help="Fold frozen BN into the convolutions (inference: all, as eval and infer do; "
                   "training: frozen stages). [default: on for infer, off for train]")
@click.option("--fuse-kernels/--no-fuse-kernels", default=None,
              help="Fuse the convolutions' BiasAdd/Add/ReLU tails on CPU, as eval and infer do. "
                   "[default: infer: the recipe's test.kernel_fusion for this canvas; train: off]")
@click.option("--threads", type=int, default=None,
              help="MindSpore runtime_num_threads [default: MindSpore's].")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON line.")
@cli.set_option
@cli.device_option
@cli.debug_option
def main(recipe, mode, batch, size, iters, warmup, breakdown, num_images, seed, fold_bn, fuse_kernels,
         threads, as_json, overrides, device, debug):
    """Benchmark RECIPE's model or data loader on synthetic inputs."""
    cli.run(_run, recipe, as_json, mode=mode, batch=batch, size=size, iters=iters, warmup=warmup,
            breakdown=breakdown, num_images=num_images, seed=seed, fold_bn=fold_bn,
            fuse_kernels=fuse_kernels, threads=threads, overrides=overrides, device=device,
            debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
