"""The whole DeFRCN pipeline on the synthetic shapes, on a CPU: data, K-shot splits, base
training, surgery, 10-shot fine-tuning, evaluation without and with PCB, pictures.

    python tools/demo.py                  # everything under output/demo (at most ~20 min)
    python tools/demo.py --quick --out /tmp/demo   # tiny data, a few steps (a smoke test)

Prints a table of bAP, bAP50, nAP, nAP50 and seconds per stage; writes OUT/summary.json and
OUT/predictions/*.png (see defrcn/apps/demo.py for the stages and folders).
"""
import logging

import click

from defrcn.engine import cli


def _demo(out, quick):
    from defrcn.apps.demo import run_demo

    run_demo(out, quick=quick)


@click.command()
@click.option("--out", default="output/demo", show_default=True,
              help="Output folder (its stage folders are replaced on a re-run).")
@click.option("--quick", is_flag=True, help="Tiny data and a few steps: checks the pipeline, learns nothing.")
@cli.debug_option
def main(out, quick, debug):
    """Run the DeFRCN demo on the synthetic data set, on CPU."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.run(_demo, out, quick, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
