"""The one exit path of every tool: one-line errors, exit codes, clean teardown.

Bad input (`InputError`, click usage errors) prints one line and exits 2; any other
failure prints one line and exits 1. A traceback is printed only with `--debug` or
`DEFRCN_DEBUG=1`. MindSpore 2.8 prints `Cell.__del__` noise when Cells are collected
at interpreter exit, so tools leave through `os._exit` after flushing.

The options the tools share are defined here once (RECIPE, --set, --device, --output-dir,
--output, --debug), so each is spelled and explained the same way everywhere.
"""
import os
import sys
import traceback

import click

# MindSpore's C++ log prints INFO/WARNING lines (graph compile notes) on stderr; every tool
# imports this module first, so they show errors only unless the user set GLOG_v. Must be
# set before MindSpore is imported.
os.environ.setdefault("GLOG_v", "3")

from defrcn.errors import InputError
from defrcn.utils.device import DEVICES, remove_akg_files

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


def debug_enabled(debug=False):
    return bool(debug) or os.environ.get("DEFRCN_DEBUG", "") not in ("", "0")


def _leave(code):
    remove_akg_files()  # os._exit runs no atexit handlers
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def one_line(error):
    """The first non-empty line of an exception's message (MindSpore's run over many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


def run(fn, *args, debug=False, **kwargs):
    """Call fn(*args, **kwargs) and exit the process with the right code."""
    code = EXIT_OK
    try:
        fn(*args, **kwargs)
    except InputError as e:
        if debug_enabled(debug):
            traceback.print_exc()
        click.echo(f"error: {one_line(e)}", err=True)
        code = EXIT_BAD_INPUT
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        code = 130
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001 - the one place that maps failures to exit 1
        if debug_enabled(debug):
            traceback.print_exc()
        click.echo(f"error: {type(e).__name__}: {one_line(e)}", err=True)
        code = EXIT_FAILURE
    _leave(code)


def main_guard(command):
    """Run a click command so usage errors also exit 2 with one line."""
    try:
        command.main(standalone_mode=False)
    except click.UsageError as e:
        click.echo(f"error: {e.format_message()}", err=True)
        _leave(EXIT_BAD_INPUT)
    except click.Abort:
        _leave(130)
    _leave(EXIT_OK)


debug_option = click.option(
    "--debug", is_flag=True, help="Print full tracebacks (also DEFRCN_DEBUG=1)."
)


# --- The options the tools share: defined here once, spelled and explained the same way in every
# tool. A folder is --output-dir, a file is --output.
DEVICE_CHOICE = click.Choice(DEVICES)

recipe_argument = click.argument("recipe", type=click.Path(dir_okay=False))

set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a recipe setting, e.g. --set solver.max_iter=50 (repeatable).",
)

device_option = click.option(
    "--device", type=DEVICE_CHOICE, default="CPU", show_default=True, help="MindSpore device target.",
)


def output_dir_option(default=None, *, required=False, default_text=None):
    """--output-dir DIR, the folder a tool writes into; `default_text` describes a computed
    default in --help ("[default: ...]")."""
    return click.option(
        "--output-dir", type=click.Path(file_okay=False), metavar="DIR", default=default,
        required=required, show_default=default_text or default is not None, help="Output folder.",
    )


def output_option(default=None, *, required=False, default_text=None):
    """--output FILE, the one file a tool writes; `default_text` as for output_dir_option."""
    return click.option(
        "--output", type=click.Path(dir_okay=False), metavar="FILE", default=default,
        required=required, show_default=default_text or default is not None, help="Output file.",
    )
