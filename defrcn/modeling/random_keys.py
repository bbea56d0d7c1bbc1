"""Counter-based random keys for the samplers.

MindSpore's random ops keep hidden per-op state that a checkpoint does not capture,
so a resumed run would draw different samples. Instead the samplers draw their keys
from a hash of (position, training step, salt): the same step always gives the same
keys, the step is a checkpointed parameter, and resume stays exact. Quality is that
of a sine hash over a permuted index, ample for picking uniform subsets of anchors
and RoIs; ties are broken by the permutation, never by position.
"""
import mindspore as ms
import mindspore.ops as ops

# a prime below 2**16: products of two residues stay inside int32
_PRIME = 65521


def _fract(x):
    return x - ops.floor(x)


def _mod(x, divisor):
    """x mod divisor for int32 x >= 0 and a Python int divisor > 0, exactly `x % divisor`.

    Written with floor division because `%` is FloorMod, whose documentation (ops.floor_mod,
    MindSpore 2.8) limits a call to 1,000,000 elements and warns that NPU and CPU results may
    differ; the classifier dropout hashes (RoIs, 2048) positions, over a million per image.
    """
    return x - (x // divisor) * divisor


def hash_uniform(size, step, salt):
    """Keys in [0, 1) of shape (size,), a deterministic function of (step, salt).

    Args:
        size: Python int (positions >= 65521 reuse the permutation with other hashes).
        step: scalar tensor (int or float), e.g. the detector's iteration counter.
        salt: Python number separating independent streams (image in batch, rank, stage).
    """
    return hash_uniform_at(ops.arange(0, size, dtype=ms.int32), step, salt)


def hash_uniform_at(index, step, salt):
    """Keys in [0, 1) for the non-negative int32 positions `index` (any shape): the key of a
    position is the one `hash_uniform` gives it."""
    block = index // _PRIME
    residue = index - block * _PRIME
    permuted = _mod(residue * 31337, _PRIME)
    r = permuted.astype(ms.float32) / _PRIME
    block = block.astype(ms.float32)
    phase = _fract(step.astype(ms.float32) * 0.6180339887 + float(salt) * 0.4142135623 + block * 0.7548776662)
    first = _fract(ops.sin(r * 571.3 + phase * 78.233) * 137.035)
    second = _fract(ops.sin(first * 91.3458 + r * 313.7 + phase * 37.719) * 211.17)
    return 0.999 * second + 0.001 * r
