"""Train a recipe.

    python tools/train.py recipes/toy_base.py --set solver.max_iter=50
    msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --join=True \
        tools/train.py recipes/coco_base.py --device GPU

The recipe states the reference total batch (16, as the paper). On any devices x
images per device the schedule is rescaled so the run sees the same number of images
(LR x B/16, iterations x 16/B), or gradients are accumulated up to the reference batch
with `--set solver.accumulate=true`. The effective schedule is printed at start and
stored in OUTPUT_DIR/config.json.
"""
import click

from defrcn.engine import cli


@click.command()
@cli.recipe_argument
@cli.set_option
@cli.output_dir_option(default_text="the recipe's output_dir")
@cli.device_option
@click.option("--resume", is_flag=True, help="Continue from OUTPUT_DIR/last_checkpoint.")
@click.option("--init", default=None, type=click.Path(), help="Initial weights (a .ckpt).")
@click.option("--seeds", default=None, help="Split seeds such as 0-9: one run each into OUTPUT_DIR/seed<S>.")
@click.option("--eval/--no-eval", "evaluate", default=True, show_default=True,
              help="Evaluate on the test set at eval periods and at the end.")
@click.option("--pynative", is_flag=True, help="PyNative mode (debugging) instead of graph mode.")
@click.option("--deterministic", is_flag=True,
              help="Deterministic kernels (mindspore.set_deterministic): a bit-exact --resume on GPU and "
                   "Ascend, at some speed; CPU is deterministic without it.")
@cli.debug_option
def main(recipe, overrides, output_dir, device, resume, init, seeds, evaluate, pynative, deterministic, debug):
    """Train RECIPE; write config.json, logs, metrics, TensorBoard events and checkpoints."""
    from defrcn.engine.train import parse_seeds, train_recipe, train_seeds

    common = dict(overrides=overrides, output_dir=output_dir, device=device, init=init,
                  evaluate=evaluate, pynative=pynative, deterministic=deterministic)
    if seeds:
        cli.run(lambda: train_seeds(recipe, parse_seeds(seeds), **common), debug=debug)
    else:
        cli.run(train_recipe, recipe, resume=resume, debug=debug, **common)


if __name__ == "__main__":
    cli.main_guard(main)
