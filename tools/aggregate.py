"""Mean, std and 95% interval of the metrics of repeated runs (seeds), as a markdown table.

Examples:
    python tools/aggregate.py output/toy_10shot/seed0 output/toy_10shot/seed1 output/toy_10shot/seed2
    python tools/aggregate.py output/coco_tfa_10shot        # a --seeds sweep: its seed<S>/ folders
    python tools/aggregate.py output/*/seed* --output results.json --per-class

metrics.json and metrics_pcb.json are aggregated separately; std is numpy's (ddof 0) and
the interval 1.96 * std / sqrt(n), as DeFRCN's tools/extract_results.py. Runs without
metrics (missing, unfinished, broken) are listed, not fatal. The numbers are also written as
JSON (--output; default: aggregate.json in the runs' common parent folder).
"""
import click

from defrcn.engine import cli


def aggregate(run_dirs, output, per_class):
    """Aggregate, print the markdown, write the JSON."""
    from defrcn.evaluation.aggregate import write_aggregate

    _, markdown, path = write_aggregate(run_dirs, output, per_class=per_class)
    click.echo(markdown)
    click.echo(f"\nwrote {path}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True)
@cli.output_option(default_text="aggregate.json in the runs' common parent")
@click.option("--per-class", is_flag=True, help="Also print the per-class AP rows.")
@cli.debug_option
def main(run_dirs, output, per_class, debug):
    """Aggregate metrics.json / metrics_pcb.json over RUN_DIRS (mean, std, 95% CI, n); write
    the numbers as JSON to --output."""
    cli.run(aggregate, list(run_dirs), output, per_class, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
