"""Operands of a large elementwise op expanded to one shape before the op.

MindSpore 2.8's CPU elementwise kernels (`ArithmeticCpuKernelMod`: Add, Sub, Mul, RealDiv,
Maximum, Minimum, ...; `SelectCpuKernelMod`: `ops.where`) precompute two int64 source offsets
per output element when the shapes of their operands differ, and keep them for as long as the
compiled graph lives: 16 bytes per element, four times a float32 output, per op. Measured in
graph mode on CPU: a Mul of (2, 1024, 50, 84) by (2, 1, 50, 84) or by (1, 1024, 1, 1) keeps
131 MiB after the call; the same Mul after `ops.broadcast_to` of the small operand keeps
nothing (the expanded copy is an ordinary tensor, freed after its last use). In a training
step at 800 x 1333 the RPN's anchor-to-ground-truth IoU alone (100 x 63,000 per image) held
about 2 GiB this way.

MindSpore 2.8's CPU `Div` kernel (`DivCpuTypeFunc`) kept the same offsets even on equal shapes
in the training graph (not in a one-op probe); the large divisions use `ops.RealDiv`, the same
IEEE division.

`expand_all` is for ops whose output is large (millions of elements); small broadcasts are
left as they are. On GPU and Ascend the expansion is one extra copy, no less exact.
"""
from mindspore import ops

__all__ = ["broadcast_shape", "expand_all"]


def broadcast_shape(*shapes):
    """The NumPy broadcast of static shapes (tuples of ints)."""
    rank = max(len(shape) for shape in shapes)
    result = []
    for axis in range(rank):
        size = 1
        for shape in shapes:
            index = axis - (rank - len(shape))
            if index >= 0 and shape[index] != 1:
                if size not in (1, shape[index]):
                    raise ValueError(f"shapes {shapes} do not broadcast")
                size = shape[index]
        result.append(size)
    return tuple(result)


def expand_all(*tensors):
    """The tensors broadcast to their common shape (a copy for each one that differs), so an
    elementwise op on them runs on equal shapes."""
    shape = broadcast_shape(*[tensor.shape for tensor in tensors])
    return tuple(tensor if tensor.shape == shape else ops.broadcast_to(tensor, shape) for tensor in tensors)
