"""Counter-based sampling keys (defrcn.modeling.random_keys).

The keys are computed without FloorMod (`%`), whose documentation limits a call to 1,000,000
elements (docs/devices.md); these tests pin the values to the original `%` formula bit for bit,
on a tensor larger than that limit, in PyNative and graph mode.
"""
import ast
import inspect

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from defrcn.modeling import random_keys
from defrcn.modeling.random_keys import hash_uniform, hash_uniform_at

PRIME = 65521


def reference_keys(index, step, salt):
    """The formula as first written, with `%` (FloorMod)."""
    permuted = ((index % PRIME) * 31337) % PRIME
    r = permuted.astype(ms.float32) / PRIME
    block = (index // PRIME).astype(ms.float32)

    def fract(x):
        return x - ops.floor(x)

    phase = fract(step.astype(ms.float32) * 0.6180339887 + float(salt) * 0.4142135623 + block * 0.7548776662)
    first = fract(ops.sin(r * 571.3 + phase * 78.233) * 137.035)
    second = fract(ops.sin(first * 91.3458 + r * 313.7 + phase * 37.719) * 211.17)
    return 0.999 * second + 0.001 * r


class _Keys(nn.Cell):
    def __init__(self, fn, salt):
        super().__init__()
        self.fn = fn
        self.salt = salt

    def construct(self, index, step):
        return self.fn(index, step, self.salt)


def _bits(tensor):
    return tensor.asnumpy().view(np.uint32)


# (RoIs, res5 channels) of one R-101 image in fine-tuning: 512 x 2048 = 1,048,576 positions.
DROPOUT_SHAPE = (512, 2048)


@pytest.mark.parametrize("mode", [ms.PYNATIVE_MODE, ms.GRAPH_MODE])
def test_keys_equal_the_floor_mod_formula(mode):
    previous = ms.get_context("mode")
    ms.set_context(mode=mode)
    try:
        index = ops.arange(0, DROPOUT_SHAPE[0] * DROPOUT_SHAPE[1], dtype=ms.int32).reshape(DROPOUT_SHAPE)
        step = ms.Tensor(12345, ms.int32)
        ours = _Keys(hash_uniform_at, 7919 * 3 + 7000)(index, step)
        theirs = _Keys(reference_keys, 7919 * 3 + 7000)(index, step)
    finally:
        ms.set_context(mode=previous)
    np.testing.assert_array_equal(_bits(ours), _bits(theirs))


def test_keys_in_unit_interval_and_position_consistent():
    step = ms.Tensor(3, ms.int32)
    keys = hash_uniform(3 * PRIME + 17, step, 5).asnumpy()
    assert keys.dtype == np.float32 and keys.min() >= 0.0 and keys.max() < 1.0
    picked = ms.Tensor(np.array([0, 1, PRIME - 1, PRIME, 2 * PRIME + 3, 3 * PRIME + 16], np.int32))
    np.testing.assert_array_equal(hash_uniform_at(picked, step, 5).asnumpy(), keys[picked.asnumpy()])


def test_no_floor_mod_operator_in_the_source():
    tree = ast.parse(inspect.getsource(random_keys))
    mods = [node.lineno for node in ast.walk(tree)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod)]
    assert mods == [], f"`%` (FloorMod) at lines {mods} of random_keys.py"


# --- each public function on its own: determinism, separate streams, range, uniformity ------

def _keys(size=4096, step=7, salt=3, step_dtype=ms.int32):
    return hash_uniform(size, ms.Tensor(step, step_dtype), salt).asnumpy()


def _keys_at(index, step=7, salt=3):
    return hash_uniform_at(ms.Tensor(np.asarray(index, np.int32)), ms.Tensor(step, ms.int32), salt).asnumpy()


def _independent(a, b):
    """Two key streams of 4096 keys rarely agree at a position and are uncorrelated (|r| below
    5 standard deviations of the correlation of independent streams, 1 / 64)."""
    return np.mean(a == b) < 0.01 and abs(np.corrcoef(a, b)[0, 1]) < 0.08


def test_equal_step_and_salt_give_equal_keys():
    np.testing.assert_array_equal(_bits(ms.Tensor(_keys())), _bits(ms.Tensor(_keys())))
    # the step is read as float32: an int and a float step tensor are the same step
    np.testing.assert_array_equal(_keys(), _keys(step=7.0, step_dtype=ms.float32))
    index = np.arange(100).reshape(10, 10)
    np.testing.assert_array_equal(_keys_at(index), _keys_at(index))


def test_other_step_salt_or_rank_gives_an_independent_stream():
    base = _keys()
    assert _independent(base, _keys(step=8))
    assert _independent(base, _keys(salt=4))
    # the salts the samplers and the dropout use (7919 * rank + offset): ranks 0 and 1, the RPN
    # (2 * image) and ROI (2 * image + 1) streams of images 0 and 1, the dropout (7000)
    salts = [7919 * rank + offset for rank in (0, 1) for offset in (0, 1, 2, 3, 7000)]
    streams = [_keys(salt=salt) for salt in salts]
    for i in range(len(streams)):
        for j in range(i):
            assert _independent(streams[i], streams[j]), (salts[i], salts[j])
    index = np.arange(4096)
    assert _independent(_keys_at(index), _keys_at(index, step=8))
    assert _independent(_keys_at(index), _keys_at(index, salt=4))


def test_consecutive_steps_give_distinct_streams():
    for start in (0, 100000):
        streams = {tuple(_keys(size=8, step=step)) for step in range(start, start + 40)}
        assert len(streams) == 40


def test_keys_at_keep_the_index_shape_and_stay_in_the_unit_interval():
    index = np.arange(3 * 5 * 7).reshape(3, 5, 7) * 997
    for step, salt in ((0, 0), (123456, 7919 * 7 + 7000), (2**31 - 1, 1)):
        keys = _keys_at(index, step, salt)
        assert keys.shape == (3, 5, 7) and keys.dtype == np.float32
        assert keys.min() >= 0.0 and keys.max() < 1.0
    big = hash_uniform(70000, ms.Tensor(2**31 - 1, ms.int32), 7919 * 7 + 7000).asnumpy()
    assert big.dtype == np.float32 and big.min() >= 0.0 and big.max() < 1.0


def test_keys_are_roughly_uniform():
    # A sine hash, not a statistical generator: the bounds are loose (a true uniform source of
    # 65521 keys has deciles within 2% and a Kolmogorov distance below 0.008).
    for step, salt in ((0, 0), (3, 5), (12345, 7919 * 3 + 7000)):
        keys = np.sort(_keys(PRIME, step, salt))
        deciles = np.histogram(keys, bins=10, range=(0.0, 1.0))[0] / (PRIME / 10)
        assert np.abs(deciles - 1).max() < 0.12, deciles
        assert np.abs(np.arange(1, PRIME + 1) / PRIME - keys).max() < 0.02
        assert abs(keys.mean() - 0.5) < 0.01 and abs(keys.var() - 1 / 12) < 0.005
        assert len(np.unique(keys)) > 0.99 * PRIME   # ties are rare


def test_top_keys_pick_every_position_equally_often():
    # What the samplers use the keys for: the positions with the largest keys. Over 160 steps
    # each of 64 positions is among the top 16 about 40 times (binomial sd 5.5).
    counts = np.zeros(64, int)
    for step in range(160):
        counts[np.argsort(-_keys(64, step, 1))[:16]] += 1
    assert counts.min() > 20 and counts.max() < 60, counts
