"""Write the synthetic few-shot data set (textured shapes) in the custom layout.

    python tools/synthetic.py datasets/synthetic --seed 0

OUT_DIR/annotations/{train,test}.json (COCO format) and OUT_DIR/images/{train,test}/.
The json's info.novel_classes names the novel classes. Same seed, same files.
"""
import click

from defrcn.data.synthetic import write_synthetic_dataset
from defrcn.engine import cli


def _write(out_dir, **kwargs):
    train_json, test_json = write_synthetic_dataset(out_dir, **kwargs)
    click.echo(f"wrote {train_json} and {test_json}")


@click.command()
@click.argument("out_dir", type=click.Path())
@click.option("--seed", default=0, show_default=True, help="Random seed.")
@click.option("--train-images", default=400, show_default=True, help="Images in the train split.")
@click.option("--test-images", default=100, show_default=True, help="Images in the test split.")
@click.option("--size", default=256, show_default=True, help="Image side in pixels.")
@cli.debug_option
def main(out_dir, seed, train_images, test_images, size, debug):
    """Write the synthetic data set to OUT_DIR."""
    cli.run(_write, out_dir, seed=seed, train_images=train_images,
            test_images=test_images, size=size, debug=debug)


if __name__ == "__main__":
    cli.main_guard(main)
