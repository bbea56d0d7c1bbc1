"""Atomic file writes: a temp file in the same folder, fsync, `os.replace`, fsync of the folder.

A crash never leaves a half-written file under the final name; a write that fails (disk
full, unwritable folder) removes its temp file and raises `OutputWriteError`, one line
naming the file and the reason, with the previous file untouched. Temp names are
`.<name>.tmp-<pid><suffix>`, so a killed writer's leftovers can be found and removed
(`remove_stale_temp_files`).
"""
import contextlib
import errno
import json
import math
import numbers
import os
import re

__all__ = [
    "OutputWriteError", "atomic_output", "write_text_atomic", "write_json_atomic", "json_safe",
    "temp_path", "fsync_file", "fsync_dir", "remove_quietly", "remove_stale_temp_files", "pid_alive",
]

_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)(\.[A-Za-z0-9]+)?$")


class OutputWriteError(OSError):
    """A file could not be written; the message is one line naming it and the reason."""


def temp_path(path, suffix=""):
    """The temp file a write of `path` goes through, in the same folder."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}{suffix}")


def fsync_file(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on every platform/file system
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_quietly(path):
    try:
        os.remove(path)
    except OSError:  # absent, or the folder became unwritable: nothing more to do
        pass


def pid_alive(pid):
    """True if a process with this pid exists (or exists but is not ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(folder):
    """Delete the temp files a killed writer left in `folder` (files of a live pid are kept);
    returns the deleted paths."""
    if not os.path.isdir(folder):
        return []
    deleted = []
    for name in sorted(os.listdir(folder)):
        match = _TEMP_NAME.match(name)
        if match and not pid_alive(int(match.group(1))):
            remove_quietly(os.path.join(folder, name))
            deleted.append(os.path.join(folder, name))
    return deleted


def write_error(path, error, *, kept="the previous file is kept", error_class=OutputWriteError):
    """`error_class` (one line: file, reason, errno name) for an OSError raised writing `path`."""
    number = getattr(error, "errno", None) or 0
    lines = str(error).strip().splitlines()
    reason = getattr(error, "strerror", None) or (lines[0] if lines else type(error).__name__)
    code = f" [{errno.errorcode[number]}]" if number in errno.errorcode else ""
    result = error_class(f"{path}: cannot write ({reason}{code}); {kept}")
    result.errno = number
    return result


@contextlib.contextmanager
def atomic_output(path, suffix="", *, kept="the previous file is kept", error_class=OutputWriteError):
    """Yield a temp path to write `path` through; on success it is fsync'ed and moved into place.

    For writers that take a file name (numpy, MindSpore); `suffix` keeps the extension a
    writer insists on. Any OSError becomes one `error_class` line; the temp file is removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = temp_path(path, suffix)
    try:
        os.makedirs(folder, exist_ok=True)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise write_error(path, error, kept=kept, error_class=error_class) from None
    finally:
        remove_quietly(tmp)
    fsync_dir(folder)


def write_text_atomic(path, text, **error_options):
    """Write `text` (utf-8) to `path` atomically; returns path."""
    with atomic_output(path, ".txt", **error_options) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
    return path


def json_safe(value):
    """`value` with NaN and infinities as None (strict JSON), tuples as lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None  # numpy scalars too (np.float32)
    return value


def write_json_atomic(path, data, *, indent=2):
    """Write `data` as JSON atomically (NaN/inf as null); returns path."""
    return write_text_atomic(path, json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n")
