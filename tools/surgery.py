"""Turn a base-training checkpoint into the starting point of a fine-tune recipe.

Examples:
    python tools/surgery.py --checkpoint output/coco_base/model_final.ckpt --method randinit \
        --recipe recipes/coco_tfa_10shot.py --output output/coco_base/model_reset_surgery.ckpt
    python tools/surgery.py --checkpoint output/coco_base/model_final.ckpt --method remove \
        --recipe recipes/coco_fsod_10shot.py --output output/coco_base/model_reset_remove.ckpt

The class lists (base order of the checkpoint, target order of the fine-tune model) come from
the fine-tune recipe, as the data catalog orders them. `randinit` grows the box predictor to
all classes (gFSOD), `remove` drops it (FSOD); see defrcn/checkpoint/surgery.py.
"""
import click

from defrcn.engine import cli
from defrcn.errors import InputError


def make_surgery_checkpoint(checkpoint, method, recipe, overrides, output, seed):
    """Load the recipe and the checkpoint, run the surgery, write `output` atomically."""
    from defrcn.checkpoint import io
    from defrcn.checkpoint.surgery import surgery, surgery_classes, to_save_list
    from defrcn.data.spec import resolve_data_spec
    from defrcn.engine import load_recipe

    if not str(output).endswith(".ckpt"):
        raise InputError("--output: the file name must end in .ckpt", path=output)
    cfg = load_recipe(recipe, overrides).cfg
    base, target = surgery_classes(resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes))
    params = io.load_checkpoint(checkpoint)
    result = surgery(params, method=method, base_class_names=base, target_class_names=target, seed=seed,
                     source=checkpoint)
    io.save_checkpoint(to_save_list(result), output)
    if method == "randinit":
        kept = ", ".join(base[:3]) + (", ..." if len(base) > 3 else "")
        click.echo(f"randinit: predictor grown from {len(base)} to {len(target)} classes "
                   f"(base rows copied: {kept}; {len(target) - len(base)} new rows ~ N(0, 0.01))")
    else:
        click.echo(f"remove: predictor dropped ({len(base)} base classes); the fine-tune model "
                   f"creates its own for {len(target)} classes")
    click.echo(f"wrote {output}")


@click.command()
@click.option("--checkpoint", required=True, help="The base run's checkpoint (e.g. its OUTPUT_DIR/model_final.ckpt).")
@click.option("--method", required=True, type=click.Choice(["randinit", "remove"]),
              help="randinit: grow the predictor to all classes (gFSOD); remove: drop it (FSOD).")
@click.option("--recipe", required=True, type=click.Path(dir_okay=False), metavar="RECIPE",
              help="The fine-tune recipe (its class lists and setting).")
@cli.set_option
@cli.output_option(required=True)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the new rows' N(0, 0.01) draw.")
@cli.debug_option
def main(checkpoint, method, recipe, overrides, output, seed, debug):
    """Checkpoint surgery for few-shot fine-tuning (DeFRCN tools/model_surgery.py): write the
    fine-tune RECIPE's starting point to --output (a .ckpt, written atomically, with a .sha256)."""
    cli.run(make_surgery_checkpoint, checkpoint, method, recipe, list(overrides), output, seed, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
