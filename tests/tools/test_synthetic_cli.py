"""tools/synthetic.py: writes the custom layout; bad input is one line and exit 2."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args):
    return subprocess.run([sys.executable, "tools/synthetic.py", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_writes_the_custom_layout(tmp_path):
    out = tmp_path / "synthetic"
    result = _run(out, "--seed", 3, "--train-images", 8, "--test-images", 2, "--size", 96)
    assert result.returncode == 0, result.stderr
    for split, count in (("train", 8), ("test", 2)):
        coco = json.loads((out / "annotations" / f"{split}.json").read_text())
        assert len(coco["images"]) == count and coco["info"]["novel_classes"]
        for image in coco["images"]:
            assert (out / "images" / split / image["file_name"]).is_file()


@pytest.mark.parametrize("make_args, expected", [
    (lambda p: [p / "file"], "exists and is not a directory"),
    (lambda p: [p / "file" / "sub"], "cannot write the data set"),
    (lambda p: [p / "x", "--size", 8], "--size must be at least 64"),
    (lambda p: [p / "x", "--seed", "abc"], "--seed"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, make_args, expected):
    (tmp_path / "file").write_text("not a directory")
    result = _run(*make_args(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr
