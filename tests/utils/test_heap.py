import platform

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from defrcn.utils import heap
from defrcn.utils.heap import ReleasesHeapAfterCompile, release_freed_heap

pytestmark = pytest.mark.usefixtures("graph_mode")


class _Doubler(ReleasesHeapAfterCompile, nn.Cell):
    def construct(self, x):
        return x * 2.0


def test_the_heap_is_released_after_each_new_graph_only(monkeypatch):
    releases = []
    monkeypatch.setattr(heap, "release_freed_heap", lambda: releases.append(1) or True)
    cell = _Doubler()
    first = cell(ms.Tensor(np.ones((2, 3), np.float32)))
    assert len(releases) == 1
    cell(ms.Tensor(np.full((2, 3), 5.0, np.float32)))  # same shapes: the compiled graph again
    assert len(releases) == 1
    other = cell(ms.Tensor(np.ones((4, 3), np.float32)))  # a new shape compiles a new graph
    assert len(releases) == 2
    np.testing.assert_array_equal(first.asnumpy(), np.full((2, 3), 2.0))
    assert other.shape == (4, 3)


def test_release_freed_heap_works_where_the_c_library_is_glibc():
    released = release_freed_heap()
    assert isinstance(released, bool)
    if platform.libc_ver()[0] == "glibc":
        assert released
