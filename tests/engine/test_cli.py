"""The one exit path shared by every tool: exit codes and one-line errors."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import click
    from defrcn.engine import cli
    from defrcn.errors import InputError

    def work(kind):
        if kind == "bad":
            raise InputError("not valid JSON (line 3)", path="data/train.json")
        if kind == "crash":
            raise RuntimeError("device lost")
        print("done")

    @click.command()
    @click.argument("kind")
    @click.option("--count", type=int, default=1)
    @cli.debug_option
    def main(kind, count, debug):
        cli.run(work, kind, debug=debug)

    if __name__ == "__main__":
        cli.main_guard(main)
    """
)


@pytest.fixture
def tool(tmp_path):
    path = tmp_path / "tool.py"
    path.write_text(SCRIPT)
    return path


def _run(tool, *args, env=None):
    return subprocess.run([sys.executable, str(tool), *args], capture_output=True, text=True, env=env)


def test_success_exits_zero(tool):
    result = _run(tool, "ok")
    assert result.returncode == 0
    assert result.stdout.strip() == "done"
    assert result.stderr == ""


def test_bad_input_is_one_line_and_exit_2(tool):
    result = _run(tool, "bad")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: data/train.json: not valid JSON (line 3)"]


def test_runtime_failure_exit_1_without_traceback(tool):
    result = _run(tool, "crash")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "error: RuntimeError: device lost"


def test_debug_prints_traceback(tool):
    result = _run(tool, "crash", "--debug")
    assert result.returncode == 1
    assert "Traceback" in result.stderr


def test_usage_error_exit_2_one_line(tool):
    result = _run(tool, "ok", "--count", "many")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--count" in result.stderr
