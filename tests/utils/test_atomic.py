"""defrcn.utils.atomic: whole files or nothing under the final name, strict JSON, one-line
errors that keep the previous file, and the clean-up of a killed writer's temp files."""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from defrcn.utils.atomic import (OutputWriteError, atomic_output, json_safe, pid_alive, remove_stale_temp_files,
                                 temp_path, write_json_atomic, write_text_atomic)


def dead_pid():
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def assert_only(folder, *names):
    assert sorted(os.listdir(folder)) == sorted(names), "a temp file was left behind"


def test_text_is_written_whole_and_replaces_the_old_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old\n")
    assert write_text_atomic(str(path), "new ünïcode\n") == str(path)
    assert path.read_text(encoding="utf-8") == "new ünïcode\n"
    assert_only(tmp_path, "notes.txt")


def test_json_is_strict_with_nan_and_infinities_as_null(tmp_path):
    path = tmp_path / "sub" / "metrics.json"  # missing folders are made
    write_json_atomic(str(path), {"AP": float("nan"), "per_class": {"a": float("inf"), "b": 1.5},
                                  "sizes": (1, 2), "runs": [float("-inf"), 3]})
    text = path.read_text()
    assert text.endswith("}\n") and "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"AP": None, "per_class": {"a": None, "b": 1.5}, "sizes": [1, 2], "runs": [None, 3]}


def test_json_safe_leaves_finite_values_alone():
    assert json_safe({"x": [1, 2.5, "s", None, True]}) == {"x": [1, 2.5, "s", None, True]}
    assert json_safe((float("nan"), (float("inf"),))) == [None, [None]]


def test_a_write_under_a_file_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be\n")
    path = tmp_path / "blocker" / "out.json"
    with pytest.raises(OutputWriteError) as info:
        write_json_atomic(str(path), {"a": 1})
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{path}: cannot write (") and "the previous file is kept" in message
    assert_only(tmp_path, "blocker")


def test_a_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"previous")
    with pytest.raises(OutputWriteError) as info:
        with atomic_output(str(path)) as tmp:
            with open(tmp, "wb") as handle:
                handle.write(b"half of the new")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"{path}: cannot write (No space left on device [ENOSPC]); the previous file is kept"
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"previous"
    assert_only(tmp_path, "model.ckpt")


def test_replacing_a_folder_fails_cleanly(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputWriteError, match="taken: cannot write"):
        write_text_atomic(str(tmp_path / "taken"), "text")
    assert_only(tmp_path, "taken")
    assert os.listdir(tmp_path / "taken") == []


def test_atomic_output_keeps_the_suffix_a_writer_insists_on(tmp_path):
    path = tmp_path / "weights.bin"
    seen = []
    with atomic_output(str(path), ".npy") as tmp:
        seen.append(tmp)
        np.save(tmp, np.arange(4))  # np.save appends .npy to any other name
    assert seen == [temp_path(str(path), ".npy")]
    assert os.path.basename(seen[0]) == f".weights.bin.tmp-{os.getpid()}.npy"
    np.testing.assert_array_equal(np.load(path), np.arange(4))
    assert_only(tmp_path, "weights.bin")


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    live = tmp_path / f".metrics.json.tmp-{os.getpid()}.txt"
    dead = tmp_path / f".model.ckpt.tmp-{dead_pid()}"
    others = [tmp_path / "model.ckpt", tmp_path / ".hidden", tmp_path / ".x.tmp-notapid"]
    for path in [live, dead, *others]:
        path.write_text("x")
    assert remove_stale_temp_files(str(tmp_path)) == [str(dead)]
    assert live.exists() and not dead.exists() and all(p.exists() for p in others)
    assert remove_stale_temp_files(str(tmp_path / "missing")) == []


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())


def test_numpy_scalars_are_json_numbers_and_their_nan_null(tmp_path):
    data = {"ap": np.float32(12.5), "nap": np.float32("nan"), "count": np.int64(3), "flag": True}
    assert json_safe(data) == {"ap": 12.5, "nap": None, "count": 3, "flag": True}
    path = write_json_atomic(str(tmp_path / "m.json"), {"ap": np.float32(12.5), "nap": np.float64("inf")})
    assert json.loads(open(path).read()) == {"ap": 12.5, "nap": None}
