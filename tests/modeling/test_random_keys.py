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
