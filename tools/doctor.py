"""Check a recipe before training: classes, few-shot split, test set, weights, frozen parts.

Examples:
    python tools/doctor.py recipes/toy_10shot.py --set data.root=datasets/toy
    python tools/doctor.py recipes/coco_tfa_10shot.py --set data.split_seed=3

One line per finding (ok / warning / error) on stdout; with any error, exits 2 with the
first one on stderr. tools/train.py and tools/eval.py run the same checks first and stop
on an error before building anything. To check a new GPU or Ascend device itself (the
detector's stages there against the CPU): tools/selfcheck.py --device GPU.
"""
import click

from defrcn.engine import cli
from defrcn.errors import InputError


def doctor(recipe, overrides, init):
    """Load the recipe, print every finding, raise InputError on the first error."""
    from defrcn.engine.doctor import errors_of, format_finding, run_checks
    from defrcn.config.recipe import load_recipe

    cfg = load_recipe(recipe, overrides).cfg
    findings = run_checks(cfg, init=init)
    for finding in findings:
        click.echo(format_finding(finding))
    errors = errors_of(findings)
    if errors:
        more = f" (and {len(errors) - 1} more error(s) above)" if len(errors) > 1 else ""
        raise InputError(f"{errors[0].message}{more}")


@click.command()
@cli.recipe_argument
@cli.set_option
@click.option("--init", default=None, type=click.Path(), help="Initial weights the run would start from.")
@cli.debug_option
def main(recipe, overrides, init, debug):
    """Check RECIPE (with its --set overrides) before training it. A new GPU or Ascend device
    itself: tools/selfcheck.py --device GPU."""
    cli.run(doctor, recipe, list(overrides), init, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
