"""Small pieces shared by the tests (as mmengine.testing): nothing here runs in training."""
from mindspore import nn, ops


class TinyRegression(nn.Cell):
    """2-layer MLP standing in for the detector: returns (total, mse, l1) as the detector
    returns (total, *loss parts)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(3, 8)
        self.out = nn.Dense(8, 1)

    def construct(self, x, y):
        pred = self.out(ops.tanh(self.hidden(x)))
        mse = ((pred - y) ** 2).mean()
        l1 = ops.abs(pred - y).mean() * 0.5
        return mse + l1, mse, l1


def write_torch_file(path, obj, *, legacy=False):
    """Write `obj` (dicts / lists / tuples of str, int, float, bool, None and numpy arrays) as
    `torch.save` does, without PyTorch: the zip format of torch >= 1.6 (`archive/data.pkl`,
    `archive/data/<key>`, `archive/byteorder`) or, with `legacy`, the pre-1.6 stream (magic
    number, protocol 1001, system info, object, storage keys, then each storage as an int64
    element count and its bytes). Each array becomes a tensor record over its own storage
    (`torch._utils._rebuild_tensor_v2` with a `('storage', torch.<T>Storage, key, 'cpu', numel)`
    persistent id), the structure torch writes for a state dict."""
    import io as _io
    import pickle
    import struct
    import zipfile

    import numpy as np

    storage_names = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                     np.dtype(np.float16): "HalfStorage", np.dtype(np.int64): "LongStorage",
                     np.dtype(np.int32): "IntStorage", np.dtype(np.int16): "ShortStorage",
                     np.dtype(np.int8): "CharStorage", np.dtype(np.uint8): "ByteStorage",
                     np.dtype(np.bool_): "BoolStorage"}
    storages = []  # (key, contiguous array)
    out = _io.BytesIO()

    def op(code, data=b""):
        out.write(code + data)

    def text(value):
        raw = value.encode("utf-8")
        op(b"X", struct.pack("<I", len(raw)) + raw)  # BINUNICODE

    def write(value):
        if isinstance(value, np.ndarray):
            array = np.array(value, order="C")  # ascontiguousarray would make 0-d arrays 1-d
            key = str(len(storages))
            storages.append((key, array))
            op(b"c", b"torch._utils\n_rebuild_tensor_v2\n")  # GLOBAL
            op(b"(")  # MARK of the call's arguments
            op(b"(")  # MARK of the persistent id
            text("storage")
            op(b"c", b"torch\n" + storage_names[array.dtype].encode() + b"\n")
            text(key)
            text("cpu")
            write(int(array.size))
            if legacy:
                op(b"N")  # no view record
            op(b"t")
            op(b"Q")  # BINPERSID
            write(0)
            write(tuple(int(n) for n in array.shape))
            write(tuple(int(s // array.itemsize) for s in array.strides) if array.ndim else ())
            op(b"\x89")  # requires_grad False
            op(b"c", b"collections\nOrderedDict\n")
            op(b")")
            op(b"R")  # backward hooks: OrderedDict()
            op(b"t")
            op(b"R")
        elif isinstance(value, dict):
            op(b"}")
            for key, item in value.items():
                write(key)
                write(item)
                op(b"s")  # SETITEM
        elif isinstance(value, list):
            op(b"]")  # EMPTY_LIST, then MARK items APPENDS
            op(b"(")
            for item in value:
                write(item)
            op(b"e")
        elif isinstance(value, tuple):
            op(b"(")
            for item in value:
                write(item)
            op(b"t")
        elif isinstance(value, str):
            text(value)
        elif isinstance(value, bool):
            op(b"\x88" if value else b"\x89")
        elif isinstance(value, int):
            op(b"\x8a", bytes([8]) + int(value).to_bytes(8, "little", signed=True))  # LONG1
        elif isinstance(value, float):
            op(b"G", struct.pack(">d", value))  # BINFLOAT
        elif value is None:
            op(b"N")
        else:
            raise TypeError(f"write_torch_file: {type(value).__name__} is not supported")

    op(b"\x80\x02")  # PROTO 2
    write(obj)
    op(b".")
    record = out.getvalue()
    if legacy:
        with open(path, "wb") as handle:
            for header in (0x1950a86a20f9469cfc6c, 1001,
                           {"protocol_version": 1001, "little_endian": True,
                            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                pickle.dump(header, handle, protocol=2)
            handle.write(record)
            pickle.dump([key for key, _ in storages], handle, protocol=2)
            for _, array in storages:
                handle.write(struct.pack("<q", array.size) + array.tobytes())
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", record)
        archive.writestr("archive/byteorder", "little")
        for key, array in storages:
            archive.writestr(f"archive/data/{key}", array.tobytes())
        archive.writestr("archive/version", "3\n")
