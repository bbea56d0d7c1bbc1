"""Checkpoint files: atomic save with a hash, the `last_checkpoint` pointer, resume lookup,
loading with a by-name report, pruning.

Layout of a training run (the README's "Output folder")::

    OUTPUT/last_checkpoint           plain text: a path relative to OUTPUT, e.g.
                                     `checkpoints/model_0000030.ckpt` or `model_final.ckpt`
    OUTPUT/checkpoints/model_<iter:07d>.ckpt (+ .sha256)
    OUTPUT/model_final.ckpt (+ .sha256)

A checkpoint is a MindSpore `.ckpt`. Network parameters keep their own names (so eval,
surgery and `load_into` see plain names); names starting with one of `STATE_PREFIXES` are
training state (optimizer, accumulators, iteration, RNG) and are ignored by `load_into`.
Every file is written to a temporary name in the same folder, fsync'ed and moved into place
with `os.replace`, so a crash never leaves a half-written file under the final name; the
sidecar `<file>.sha256` lets `find_resume_checkpoint` detect a truncated or corrupt file.
A write that fails (disk full, unwritable folder) removes its temporary files and raises
`CheckpointWriteError`: one line naming the file and the reason (the tools exit 1 on it:
the input was fine, the machine was not).
"""
import contextlib
import hashlib
import logging
import os
import re
from typing import List, NamedTuple, Tuple

import numpy as np

import mindspore as ms
from mindspore import Tensor

from defrcn.utils import atomic
from defrcn.utils.atomic import OutputWriteError, fsync_dir, fsync_file, remove_quietly, temp_path, write_error
from defrcn.utils.faults import fault_point
from defrcn.errors import InputError

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"  # pointer file name, as detectron2/fvcore
CHECKPOINT_SUBDIR = "checkpoints"
FINAL_NAME = "model_final.ckpt"
HASH_SUFFIX = ".sha256"
EXTRA_PREFIX = "extra."
STATE_PREFIXES = ("optimizer.", "train_step.", EXTRA_PREFIX)
_PERIODIC_NAME = re.compile(r"^model_(\d{7})\.ckpt$")


def periodic_name(iteration):
    """File name of the checkpoint taken after `iteration` completed steps."""
    return f"model_{int(iteration):07d}.ckpt"


def file_sha256(path, chunk_bytes=1 << 22):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


class CheckpointWriteError(OutputWriteError):
    """A checkpoint (or the pointer) could not be written; the message is one line naming
    the file and the reason. The previous checkpoint and pointer are untouched."""


_KEPT = "the previous checkpoint is kept"


def _write_error(path, error):
    return write_error(path, error, kept=_KEPT, error_class=CheckpointWriteError)


@contextlib.contextmanager
def _quiet_mindspore_logger():
    """MindSpore logs a CRITICAL line of its own when a save fails; we report it in one."""
    try:
        from mindspore import log as ms_log

        ms_logger = ms_log._get_logger()  # noqa: SLF001 - no public handle on its logger
    except Exception:  # noqa: BLE001 - only a cosmetic filter
        yield
        return
    previous = ms_logger.level
    ms_logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        ms_logger.setLevel(previous)


def write_text_atomic(path, text):
    """Write `text` to `path` atomically; CheckpointWriteError (the old file untouched) when
    the folder is full or unwritable."""
    return atomic.write_text_atomic(path, text, kept=_KEPT, error_class=CheckpointWriteError)


def _extra_value(value):
    """Extras as MindSpore can store them: floats as float64 tensors (append_dict would keep
    float32), ints as int64, arrays as tensors, strings as they are."""
    if isinstance(value, (bool, np.bool_)):
        return Tensor(np.asarray(value, dtype=np.bool_))
    if isinstance(value, (int, np.integer)):
        return Tensor(np.asarray(value, dtype=np.int64))
    if isinstance(value, (float, np.floating)):
        return Tensor(np.asarray(value, dtype=np.float64))
    if isinstance(value, np.ndarray):
        return Tensor(value)
    if isinstance(value, (str, Tensor)):
        return value
    raise TypeError(f"checkpoint extra value of type {type(value).__name__} is not supported")


def save_checkpoint(params_or_cell, path, *, extra=None):
    """Atomically write a MindSpore checkpoint and its `.sha256` sidecar.

    Args:
        params_or_cell: a Cell, or a list of {"name": str, "data": Parameter|Tensor}.
        path: destination; must end in `.ckpt` (MindSpore appends it otherwise).
        extra: {name: int | float | bool | str | np.ndarray | Tensor}, stored under
            `extra.<name>` (read back with `split_extras`).
    Returns:
        path.
    """
    if not str(path).endswith(".ckpt"):
        raise ValueError(f"{path}: a checkpoint file name must end in .ckpt")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    append = {EXTRA_PREFIX + key: _extra_value(value) for key, value in (extra or {}).items()}
    tmp = temp_path(path, ".ckpt")
    tmp_hash = temp_path(path, HASH_SUFFIX)
    ms_tmp = tmp[:-len(".ckpt")] + ".tmp"  # where ms.save_checkpoint writes before its rename
    try:
        with _quiet_mindspore_logger():
            ms.save_checkpoint(params_or_cell, tmp, append_dict=append or None)
        fsync_file(tmp)
        with open(tmp_hash, "w", encoding="utf-8") as handle:
            handle.write(file_sha256(tmp) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        fault_point("checkpoint_write:after_temp")
        # Hash first: a crash between the two replaces leaves a mismatch, detected on load.
        os.replace(tmp_hash, path + HASH_SUFFIX)
        os.replace(tmp, path)
    except OSError as error:
        raise _write_error(path, error) from None
    finally:
        for leftover in (tmp, tmp_hash, ms_tmp):
            remove_quietly(leftover)
    fsync_dir(folder)
    return path


def verify_checkpoint(path):
    """Return None if `path` looks intact, else a short reason (missing, hash mismatch, ...).

    With a `.sha256` sidecar the bytes are hashed; without one the file is parsed.
    """
    if not os.path.isfile(path):
        return "file not found"
    hash_path = path + HASH_SUFFIX
    if os.path.isfile(hash_path):
        with open(hash_path, encoding="utf-8") as handle:
            expected = handle.read().strip()
        return None if file_sha256(path) == expected else "sha256 mismatch (truncated or corrupt)"
    try:
        ms.load_checkpoint(path)
    except Exception as error:  # MindSpore raises ValueError/RuntimeError on bad bytes
        return f"cannot be parsed ({type(error).__name__})"
    return None


def load_checkpoint(path):
    """Read a `.ckpt` into {name: Parameter} (extras included; string extras stay str).

    Raises InputError (one line naming the file) if it is missing or unreadable.
    """
    if not os.path.isfile(path):
        raise InputError("checkpoint file not found", path=path)
    hash_path = path + HASH_SUFFIX
    if os.path.isfile(hash_path):
        reason = verify_checkpoint(path)
        if reason is not None:
            raise InputError(f"checkpoint is damaged: {reason}", path=path)
    try:
        return ms.load_checkpoint(path)
    except Exception as error:
        raise InputError(f"not a readable MindSpore checkpoint ({type(error).__name__})", path=path)


def split_extras(param_dict):
    """Return ({name: value} of the extras with the prefix removed, as python/numpy values)."""
    extras = {}
    for name, value in param_dict.items():
        if name.startswith(EXTRA_PREFIX):
            if isinstance(value, str):
                extras[name[len(EXTRA_PREFIX):]] = value
            else:
                array = value.asnumpy()
                extras[name[len(EXTRA_PREFIX):]] = array.item() if array.ndim == 0 else array
    return extras


class ShapeMismatch(NamedTuple):
    """A checkpoint entry whose shape differs from the model's parameter of that name."""

    name: str
    checkpoint_shape: Tuple[int, ...]
    model_shape: Tuple[int, ...]

    def __str__(self):
        return f"{self.name}: checkpoint {self.checkpoint_shape} vs model {self.model_shape}"


class LoadReport(NamedTuple):
    """What `load_into` did not load: sorted names, and the shape mismatches as data."""

    missing: List[str]  # model parameters the checkpoint lacks (they keep their values)
    unexpected: List[str]  # checkpoint entries the model does not have
    shape_mismatch: List[ShapeMismatch]


def load_into(cell, param_dict, *, strict=False):
    """Load the network parameters of `param_dict` into `cell`, reporting instead of failing.

    Training-state names (`STATE_PREFIXES`) are skipped. Parameters whose shape differs are
    not loaded (MindSpore would raise deep inside `load_param_into_net`).

    Returns:
        LoadReport(missing, unexpected, shape_mismatch).
    Raises:
        InputError if `strict` and any list is non-empty.
    """
    model_params = {param.name: param for param in cell.get_parameters()}
    usable, unexpected, shape_mismatch = {}, [], []
    for name, value in param_dict.items():
        if name.startswith(STATE_PREFIXES) or isinstance(value, str):
            continue
        if name not in model_params:
            unexpected.append(name)
            continue
        want, got = tuple(model_params[name].shape), tuple(value.shape)
        if want != got:
            shape_mismatch.append(ShapeMismatch(name, got, want))
            continue
        usable[name] = value
    missing = sorted(set(model_params) - set(usable) - {entry.name for entry in shape_mismatch})
    unexpected, shape_mismatch = sorted(unexpected), sorted(shape_mismatch)
    if strict and (missing or unexpected or shape_mismatch):
        problems = [f"{len(names)} {kind} (e.g. {[str(n) for n in names[:2]]})" for kind, names in
                    (("missing", missing), ("unexpected", unexpected),
                     ("shape mismatch", shape_mismatch)) if names]
        raise InputError("checkpoint does not match the model: " + "; ".join(problems))
    if usable:
        ms.load_param_into_net(cell, usable, strict_load=False)
    return LoadReport(missing, unexpected, shape_mismatch)


def write_last_checkpoint(output_dir, filename):
    """Atomically point `OUTPUT/last_checkpoint` at `filename` (stored relative to output_dir)."""
    relative = os.path.relpath(os.path.abspath(filename), os.path.abspath(output_dir)) \
        if os.path.isabs(filename) else filename
    write_text_atomic(os.path.join(output_dir, LAST_CHECKPOINT), relative + "\n")


def read_last_checkpoint(output_dir):
    """Absolute path named by `OUTPUT/last_checkpoint`, or None if there is no pointer."""
    pointer = os.path.join(output_dir, LAST_CHECKPOINT)
    if not os.path.isfile(pointer):
        return None
    with open(pointer, encoding="utf-8") as handle:
        name = handle.read().strip()
    return os.path.join(output_dir, name) if name else None


def periodic_checkpoints(output_dir):
    """[(iteration, path)] of `OUTPUT/checkpoints/model_<iter>.ckpt`, newest first."""
    folder = os.path.join(output_dir, CHECKPOINT_SUBDIR)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _PERIODIC_NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found, reverse=True)


def find_resume_checkpoint(output_dir):
    """The checkpoint to resume from: the one `last_checkpoint` names if intact, otherwise the
    newest intact periodic checkpoint (older than it), with one warning naming the bad file.
    Returns None when there is nothing to resume.
    """
    pointed = read_last_checkpoint(output_dir)
    periodic = periodic_checkpoints(output_dir)
    candidates = [path for _, path in periodic]
    if pointed is not None:
        match = _PERIODIC_NAME.match(os.path.basename(pointed))
        if match:  # only fall back to older periodic files
            candidates = [path for iteration, path in periodic if iteration < int(match.group(1))]
        candidates = [pointed] + [p for p in candidates
                                  if os.path.abspath(p) != os.path.abspath(pointed)]
    bad = []
    for path in candidates:
        reason = verify_checkpoint(path)
        if reason is None:
            if bad:
                logger.warning("checkpoint %s is unusable (%s); resuming from %s",
                               bad[0][0], bad[0][1], path)
            return path
        bad.append((path, reason))
    if bad:
        logger.warning("checkpoint %s is unusable (%s) and no older good checkpoint exists; "
                       "starting from scratch", bad[0][0], bad[0][1])
    return None


def prune_checkpoints(folder, keep):
    """Delete all but the newest `keep` periodic checkpoints in `folder` (`model_final.ckpt`
    and any other file are never touched). `keep` <= 0 keeps everything. Returns deleted paths."""
    if keep is None or keep <= 0:
        return []
    periodic = []
    for name in os.listdir(folder):
        match = _PERIODIC_NAME.match(name)
        if match:
            periodic.append((int(match.group(1)), os.path.join(folder, name)))
    periodic.sort(reverse=True)
    deleted = []
    for _, path in periodic[keep:]:
        remove_quietly(path)
        remove_quietly(path + HASH_SUFFIX)
        deleted.append(path)
    return deleted
