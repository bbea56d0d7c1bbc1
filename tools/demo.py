"""The whole DeFRCN pipeline on the synthetic shapes, on a CPU: data, K-shot splits, base
training, surgery, 10-shot fine-tuning, evaluation without and with PCB, pictures.

    python tools/demo.py                  # everything under output/demo (at most ~20 min)
    python tools/demo.py --quick --output-dir /tmp/demo   # tiny data, a few steps (a smoke test)

Prints a table of bAP, bAP50, nAP, nAP50 and seconds per stage; writes OUTPUT_DIR/summary.json
and OUTPUT_DIR/predictions/*.png (see defrcn/apps/demo.py for the stages and folders).
"""
import logging

import click

from defrcn.engine import cli


def _demo(output_dir, quick):
    from defrcn.apps.demo import run_demo

    run_demo(output_dir, quick=quick)


@click.command()
@cli.output_dir_option(default="output/demo")
@click.option("--quick", is_flag=True, help="Tiny data and a few steps: checks the pipeline, learns nothing.")
@cli.debug_option
def main(output_dir, quick, debug):
    """Run the DeFRCN demo on the synthetic data set, on CPU, into --output-dir (its stage
    folders are replaced on a re-run)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cli.run(_demo, output_dir, quick, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
