"""Weights files read as data: pickles and PyTorch files without running any of their code.

A pickle may name any importable callable and have it called while loading (the `GLOBAL` +
`REDUCE` opcodes), so a `.pkl` or `.pth` from a mirror can run code the moment
`pickle.load` / `torch.load(weights_only=False)` reads it. Every converter reads through
`load_pickle` (detectron2 / Detectron `.pkl`) or `load_torch` (PyTorch `.pth`, the zip
format of torch >= 1.6 and the legacy one of older releases, e.g. torchvision's 2017 ImageNet
files). Both use one unpickler that admits only what weights files contain: numpy arrays,
dtypes and scalars, ordered dicts, and PyTorch's tensor and storage records, which are
rebuilt here as numpy arrays (PyTorch itself is not needed). Any other global is refused
before anything is called: one InputError line names the file and the global.
"""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np

from defrcn.errors import InputError

__all__ = ["RefusedGlobal", "file_format", "load_pickle", "load_torch"]

# torch.<Name>Storage -> the numpy dtype of its elements (bfloat16 is widened to float32 below)
TORCH_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": np.uint16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}
# torch.save's legacy format starts with this pickled number (torch/serialization.py MAGIC_NUMBER)
TORCH_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


_TORCH_LEGACY_HEAD = pickle.dumps(TORCH_LEGACY_MAGIC, protocol=2)


def file_format(path):
    """"torch-zip", "torch-legacy", "pickle" or "other", from the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(len(_TORCH_LEGACY_HEAD))
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if head == _TORCH_LEGACY_HEAD:
        return "torch-legacy"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"}", b"]", b"c"):  # protocol >= 2, or 0/1 opcodes
        return "pickle"
    return "other"


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global that weights files do not contain."""

    def __init__(self, module, name):
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class _TorchStorageType:
    """Stands for `torch.<Name>Storage` in a persistent id: its element type on disk and the
    numpy dtype it is read as."""

    def __init__(self, name):
        self.name = name
        self.dtype = np.dtype(TORCH_STORAGE_DTYPES[name])  # on disk
        self.array_dtype = np.dtype(np.float32) if name == "BFloat16Storage" else self.dtype

    def decode(self, data, numel):
        """numel elements of the raw bytes `data` as an array of `array_dtype`."""
        if len(data) < numel * self.dtype.itemsize:
            raise pickle.UnpicklingError(f"a storage of {len(data)} bytes where {numel} elements "
                                         f"of {self.name} need {numel * self.dtype.itemsize}")
        array = np.frombuffer(data, dtype=self.dtype, count=numel)
        if self.name == "BFloat16Storage":  # bfloat16 is the high half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _numpy_reconstruct(*args):
    from numpy.core.multiarray import _reconstruct

    return _reconstruct(*args)


def _numpy_scalar(*args):
    from numpy.core.multiarray import scalar

    return scalar(*args)


def _numpy_frombuffer(*args):
    from numpy.core.numeric import _frombuffer  # protocol 5 pickles of arrays

    return _frombuffer(*args)


def _codecs_encode(text, encoding="utf-8"):
    # Python 3 pickles bytes at protocol 2 as _codecs.encode(str, "latin1")
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    """torch._utils._rebuild_tensor_v2 as numpy: the strided view of a storage (copied by
    `_materialized` once every storage is read)."""
    offset, size, stride = int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + (0,)) < 0 or min(stride + (0,)) < 0 or offset < 0:
        raise pickle.UnpicklingError(f"a tensor record with size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise pickle.UnpicklingError(f"a tensor of size {size} reaches element {last} of a storage "
                                     f"of {storage.size}")
    return np.asarray(np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride], writeable=False))


def _rebuild_parameter(data, *_ignored):
    return data


# (module, name) -> what loading may call; names of numpy >= 2 (`numpy._core`) map to the same.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
}
_TORCH_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _TorchStorageType(name) for name in TORCH_STORAGE_DTYPES},
}

_WITH_TORCH_ALLOWED = {**_ALLOWED, **_TORCH_ALLOWED}


class _WeightsUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the admitted globals; `storages(key, dtype, numel)` feeds
    PyTorch persistent ids (None: a plain pickle, where persistent ids are refused).

    `storages(key, storage_type, numel)` returns the storage's elements as a 1-D array."""

    def __init__(self, handle, storages=None):
        super().__init__(handle, encoding="latin1")
        self._storages = storages

    def find_class(self, module, name):
        allowed = _WITH_TORCH_ALLOWED if self._storages else _ALLOWED
        if (module, name) not in allowed:
            raise RefusedGlobal(module, name)
        return allowed[(module, name)]

    def persistent_load(self, pid):
        if self._storages is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise pickle.UnpicklingError("a persistent id that is not a PyTorch storage")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])
        if not isinstance(storage_type, _TorchStorageType):
            raise pickle.UnpicklingError(f"a storage of type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:  # legacy view record (view_key, offset, size)
            raise pickle.UnpicklingError("a storage view record (PyTorch < 0.4 file)")
        return self._storages(key, storage_type, numel)


def _refused(path, error):
    if isinstance(error, RefusedGlobal):
        return InputError(f"refused: the file calls {error.qualified_name}, which a weights file "
                          "never contains (nothing of it was run)", path=path)
    if isinstance(error, (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError,
                          IndexError, AttributeError, struct.error, zipfile.BadZipFile, OSError)):
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, zipfile.BadZipFile):
            detail = f"a damaged or cut-short zip: {detail}"
        return InputError(f"not a readable weights file ({detail})", path=path)
    return None


def _checked_file(path):
    path = str(path)
    if not os.path.isfile(path):
        raise InputError("file not found", path=path)
    return path


def load_pickle(path):
    """The object of a weights pickle (detectron2 / Detectron `.pkl`), loaded as data only.

    Raises InputError naming the file if it calls anything but numpy's array rebuilding
    (the refused global is named) or is not a pickle."""
    path = _checked_file(path)
    if file_format(path).startswith("torch"):
        raise InputError("a PyTorch file (torch.save), not a detectron2/Caffe2 pickle: convert a torchvision "
                         "ResNet with `tools/convert.py torchvision`, a DeFRCN detector with `defrcn`", path=path)
    try:
        with open(path, "rb") as handle:
            return _WeightsUnpickler(handle).load()
    except Exception as error:  # noqa: BLE001 - every unpickling failure is bad input
        converted = _refused(path, error)
        if converted is None:
            raise
        raise converted from None


def _load_torch_zip(path):
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        records = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(records) != 1:
            raise pickle.UnpicklingError("a zip file without one <name>/data.pkl record")
        prefix = records[0][: -len("data.pkl")]
        if prefix + "byteorder" in names and archive.read(prefix + "byteorder").strip() != b"little":
            raise pickle.UnpicklingError("a big-endian PyTorch file")

        def storage(key, storage_type, numel):
            return storage_type.decode(archive.read(f"{prefix}data/{key}"), numel)

        return _WeightsUnpickler(io.BytesIO(archive.read(records[0])), storage).load()


def _load_torch_legacy(handle):
    """torch.save(..., _use_new_zipfile_serialization=False): magic number, protocol, system
    info, the object (storages as persistent ids), the storage keys, then each storage as
    an int64 element count and its raw bytes, in key order."""
    plain = _WeightsUnpickler(handle)
    if plain.load() != TORCH_LEGACY_MAGIC:
        raise pickle.UnpicklingError("neither a zip nor a legacy PyTorch file")
    if plain.load() != 1001:
        raise pickle.UnpicklingError("a legacy PyTorch file of an unknown protocol")
    info = plain.load()
    if isinstance(info, dict) and not info.get("little_endian", True):
        raise pickle.UnpicklingError("a big-endian PyTorch file")
    wanted = {}

    def storage(key, storage_type, numel):
        if key not in wanted:
            wanted[key] = (np.zeros(numel, dtype=storage_type.array_dtype), storage_type, numel)
        return wanted[key][0]

    content = _WeightsUnpickler(handle, storage).load()
    keys = _WeightsUnpickler(handle).load()
    for key in keys:
        (count,) = struct.unpack("<q", handle.read(8))
        if key not in wanted:
            raise pickle.UnpicklingError(f"storage {key} is not used by the object")
        array, storage_type, numel = wanted[key]
        if count != numel:
            raise pickle.UnpicklingError(f"storage {key} holds {count} elements, {numel} expected")
        array[...] = storage_type.decode(handle.read(count * storage_type.dtype.itemsize), numel)
    missing = sorted(set(wanted) - set(keys))
    if missing:
        raise EOFError(f"storage {missing[0]} is missing")
    return content


def _materialized(value):
    """`value` with every array (views of storages) replaced by its own contiguous copy."""
    if isinstance(value, np.ndarray):
        return np.array(value)
    if isinstance(value, dict):
        return type(value)((key, _materialized(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_materialized(item) for item in value)
    return value


def load_torch(path):
    """The object of a PyTorch file (`torch.save`, zip or legacy format) with tensors as numpy
    arrays, loaded as data only (no PyTorch needed).

    Raises InputError naming the file if it calls anything but tensor and numpy rebuilding
    (the refused global is named) or is not a PyTorch file."""
    path = _checked_file(path)
    kind = file_format(path)
    if kind == "pickle":
        raise InputError("a plain pickle, not a PyTorch file (torch.save): convert a detectron2/Caffe2 .pkl "
                         "with `tools/convert.py detectron2`", path=path)
    try:
        if kind == "torch-zip":
            return _materialized(_load_torch_zip(path))
        with open(path, "rb") as handle:
            return _materialized(_load_torch_legacy(handle))
    except Exception as error:  # noqa: BLE001 - every unpickling failure is bad input
        converted = _refused(path, error)
        if converted is None:
            raise
        raise converted from None
