"""The tools' options are defined once (defrcn/engine/cli.py) and spelled one way.

Each tool's `--help` is read once (a subprocess each, well under a second): a tool taking a
recipe has `--set` and `--debug`; `--device` is the choice [CPU|GPU|Ascend]; a folder to
write into is `--output-dir DIR`, a single file `--output FILE`, and no tool has `--out`.
The commands the README and docs/ show name only options their tool has.
"""
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS = sorted(p.stem for p in (REPO / "tools").glob("*.py") if not p.stem.startswith("parity"))
# what each tool writes: a folder (--output-dir) or one file (--output)
WRITES_FOLDER = {"train", "eval", "infer", "split", "demo"}
WRITES_FILE = {"aggregate", "export", "surgery"}
ON_A_DEVICE = {"train", "eval", "infer", "export", "benchmark", "selfcheck"}
DEVICE_CHOICE = "[CPU|GPU|Ascend]"
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


@functools.lru_cache(maxsize=None)
def help_of(tool):
    """(usage line, {option: its help-column text}) of `python tools/<tool>.py --help`."""
    env = dict(os.environ, GLOG_v="3")
    result = subprocess.run([sys.executable, f"tools/{tool}.py", "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{tool} --help: exit {result.returncode}\n{result.stderr}"
    lines = result.stdout.splitlines()
    options = {}
    for line in lines[lines.index("Options:") + 1:]:
        if line.startswith("  -"):  # names and metavar, two spaces, help (wrapped lines are indented deeper)
            column = line.strip().partition("  ")[0]
            options.update({name: column for name in OPTION.findall(column)})
    return lines[0], options


def test_every_tool_is_covered():
    assert {"train", "eval", "surgery", "convert", "infer", "export", "aggregate", "demo", "benchmark",
            "doctor", "split", "synthetic", "selfcheck"} <= set(TOOLS)


@pytest.mark.parametrize("tool", TOOLS)
def test_options_are_spelled_one_way(tool):
    usage, options = help_of(tool)
    takes_recipe = " RECIPE" in usage or "--recipe" in options
    if takes_recipe:
        assert "--set" in options and options["--set"] == "--set KEY=VALUE", (tool, options)
    assert "--debug" in options, tool
    if "--device" in options or tool in ON_A_DEVICE:
        assert options.get("--device") == f"--device {DEVICE_CHOICE}", (tool, options)
    if "--against" in options:
        assert options["--against"] == f"--against {DEVICE_CHOICE}", tool
    outputs = {name: column for name, column in options.items() if name.startswith("--out")}
    assert "--out" not in outputs, f"{tool}: a folder is --output-dir, a file is --output"
    assert set(outputs) <= {"--output-dir", "--output"}, (tool, outputs)
    assert ("--output-dir" in outputs) == (tool in WRITES_FOLDER), tool
    assert ("--output" in outputs) == (tool in WRITES_FILE), tool
    if "--output-dir" in outputs:
        assert outputs["--output-dir"] == "--output-dir DIR", tool
    if "--output" in outputs:
        assert outputs["--output"] == "--output FILE", tool


FENCED_COMMAND = re.compile(r"(?:\bpython3?\s+|^\s*msrun\s.*?\s)tools/(\w+)\.py\b(.*)")
INLINE_COMMAND = re.compile(r"^(?:python3?\s+)?tools/(\w+)\.py\b(.*)")


def _doc_commands(text):
    """(tool, the text after `tools/<tool>.py`) of each command in a markdown text: the logical
    lines of its fenced blocks that run `python tools/<tool>.py` (or msrun ... tools/<tool>.py),
    backslash continuations joined and comments dropped, and its inline code spans that start
    with `tools/<tool>.py` or `python tools/<tool>.py` (the README's table of tools)."""
    fence = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)
    found = []
    for block in fence.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            match = FENCED_COMMAND.search(line.split(" #")[0])
            if match:
                found.append(match.groups())
    for span in re.findall(r"`([^`\n]+)`", fence.sub("", text)):
        match = INLINE_COMMAND.match(span)
        if match:
            found.append(match.groups())
    return [(tool, rest) for tool, rest in found if tool in TOOLS]


DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_documented_commands_name_existing_options(doc):
    commands = _doc_commands(doc.read_text())
    unknown = [f"tools/{tool}.py {option}" for tool, rest in commands
               for option in OPTION.findall(rest) if option not in help_of(tool)[1]]
    assert not unknown, f"{doc.name} names options the tools do not have: {unknown}"


def test_readme_commands_are_found():
    tools = {tool for tool, _ in _doc_commands((REPO / "README.md").read_text())}
    assert {"train", "eval", "surgery", "split", "infer", "export", "aggregate", "demo", "convert"} <= tools
