"""Weights files are read as data: PyTorch and pickle files load as numpy without PyTorch,
and a file that would run code is refused, through `tools/convert.py`, before any of it runs."""
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from defrcn.checkpoint.safe_load import load_pickle, load_torch
from defrcn.errors import InputError
from defrcn.testing import write_torch_file

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"


# --------------------------------------------------------------------------------------------
# real formats


@pytest.mark.parametrize("name", ["torch_zip.pth", "torch_legacy.pth"])
def test_files_written_by_torch_load_without_torch(name, monkeypatch):
    # Written by torch 2.14.1 `torch.save` (zip, and `_use_new_zipfile_serialization=False`):
    # views with strides and offsets, half, bfloat16, bool, int64, a Parameter, an optimizer dict.
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` would fail
    content = load_torch(DATA / name)
    model = content["model"]
    weight = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
    np.testing.assert_array_equal(model["conv.weight"], weight)
    np.testing.assert_array_equal(model["conv.weight_t"], weight.T)
    np.testing.assert_array_equal(model["row"], weight[1])
    assert model["bn.num_batches_tracked"].dtype == np.int64 and int(model["bn.num_batches_tracked"]) == 7
    assert model["half"].dtype == np.float16 and model["half"].tolist() == [0.5, -2.0]
    assert model["bf16"].dtype == np.float32 and model["bf16"].tolist() == [1.5, -3.0]
    assert model["mask"].tolist() == [True, False]
    assert model["param"].tolist() == [0.25, 0.25]
    assert content["iteration"] == 12
    assert content["optimizer"]["param_groups"] == [{"lr": 0.02, "params": [0]}]
    np.testing.assert_array_equal(content["optimizer"]["state"][0]["momentum_buffer"], np.ones(2, np.float32))
    assert list(model) == ["conv.weight", "conv.weight_t", "row", "bn.num_batches_tracked", "half", "bf16",
                           "mask", "param"]


@pytest.mark.parametrize("legacy", [False, True])
def test_test_writer_round_trips(tmp_path, legacy):
    obj = {"model": {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([3], np.int64)},
           "iteration": 5, "names": ["x", None, 1.5]}
    write_torch_file(tmp_path / "w.pth", obj, legacy=legacy)
    loaded = load_torch(tmp_path / "w.pth")
    np.testing.assert_array_equal(loaded["model"]["a"], obj["model"]["a"])
    assert loaded["model"]["b"].tolist() == [3] and loaded["iteration"] == 5 and loaded["names"] == ["x", None, 1.5]


def _python2_style_array(array):
    """What Detectron (Python 2) pickled for an array: _reconstruct + a state whose raw data is a
    str, which Python 3 reads back as a latin-1 text string."""
    data = np.ascontiguousarray(array).tobytes().decode("latin1")
    from numpy.core.multiarray import _reconstruct

    return _reconstruct, (np.ndarray, (0,), "b"), (1, array.shape, array.dtype, False, data)


def test_detectron2_model_zoo_pickle_loads(tmp_path):
    # detectron2's model-zoo .pkl (Python 3): {"model": {name: array}, "__author__", "matching_heuristics"}
    model = {"backbone.bottom_up.stem.conv1.weight": np.ones((2, 3, 7, 7), np.float32),
             "backbone.bottom_up.res2.0.conv1.norm.running_var": np.full(2, 0.5, np.float32)}
    path = tmp_path / "model_final_f6e8b1.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, handle)
    loaded = load_pickle(path)
    assert loaded["__author__"] == "Detectron2 Model Zoo" and loaded["matching_heuristics"] is True
    assert all(np.array_equal(loaded["model"][name], value) for name, value in model.items())


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron_pickles_of_every_protocol_load(tmp_path, protocol):
    blobs = {"conv1_w": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
             "res_conv1_bn_s": np.array([1.5, 2.5], np.float32)}

    class Py2Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, np.ndarray):
                return _python2_style_array(obj)
            return NotImplemented

    path = tmp_path / "R-101.pkl"
    with open(path, "wb") as handle:
        pickler = Py2Pickler(handle, protocol=2) if protocol == 2 else pickle.Pickler(handle, protocol=protocol)
        pickler.dump({"blobs": blobs, "__author__": "Caffe2"})
    loaded = load_pickle(path)
    assert loaded["__author__"] == "Caffe2"
    for name, value in blobs.items():
        np.testing.assert_array_equal(loaded["blobs"][name], value)


# --------------------------------------------------------------------------------------------
# refused files


class _Call:
    """Pickles as a call of `func(*args)`: what an attacker puts in a weights file."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


EVIL_MODULE = '''
class EvilDict(dict):
    """A dict subclass whose unpickling touches a file (the marker)."""

    def __setstate__(self, state):
        open(state["marker"], "w").close()
'''


def _payloads(marker):
    """{case: (object to pickle, the global the refusal names)}."""
    import evil_weights

    evil = evil_weights.EvilDict()
    evil.__dict__["marker"] = str(marker)
    return {
        "os.system": (_Call(os.system, f"touch {marker}"), "posix.system"),
        # protocol 2 writes Python 2's module name for builtins
        "builtins.eval": (_Call(eval, f"open({str(marker)!r}, 'w')"), "__builtin__.eval"),
        "dict subclass with __setstate__": (evil, "evil_weights.EvilDict"),
    }


def _write(kind, path, payload):
    if kind == "detectron2":
        with open(path, "wb") as handle:
            pickle.dump({"model": {"conv1_w": payload}}, handle, protocol=2)
        return
    # a real torch zip file whose data.pkl also holds the payload
    write_torch_file(path, {"model": {"conv1.weight": np.zeros((2, 2), np.float32)}})
    record = pickle.dumps({"model": {"conv1.weight": payload}}, protocol=2)
    with zipfile.ZipFile(path, "a") as archive:
        names = archive.namelist()
    rewritten = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for name in names:
            target.writestr(name, record if name.endswith("data.pkl") else source.read(name))
    rewritten.replace(path)


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """A folder with an importable module defining EvilDict (on sys.path here, and on the
    tools' PYTHONPATH, so that a plain unpickler would find and run it)."""
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "evil_weights.py").write_text(EVIL_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("evil_weights", None)


def _convert(kind, src, dst, pythonpath, *extra):
    env = dict(os.environ, PYTHONPATH=str(pythonpath), GLOG_v="3")
    return subprocess.run([sys.executable, "tools/convert.py", kind, str(src), str(dst), *extra], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("kind,suffix,extra", [
    ("detectron2", ".pkl", ()),
    ("torchvision", ".pth", ()),
    ("defrcn", ".pth", ("--recipe", "recipes/toy_base.py")),
])
def test_files_that_would_run_code_are_refused_before_anything_runs(tmp_path, evil_module, kind, suffix,
                                                                     extra):
    marker = evil_module / "marker"
    for case, (payload, refused) in _payloads(marker).items():
        src, dst = tmp_path / f"{case.replace(' ', '_')}{suffix}", tmp_path / "out.ckpt"
        _write("detectron2" if suffix == ".pkl" else "torch", src, payload)
        # the payload is live: plain pickle would run it (the evil module is importable)
        if suffix == ".pkl":
            with open(src, "rb") as handle:
                pickle.load(handle)
            assert marker.exists(), case
            marker.unlink()
        result = _convert(kind, src, dst, evil_module, *extra)
        assert result.returncode == 2, (case, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, (case, result.stderr)
        assert lines[0].startswith(f"error: {src}: refused: the file calls {refused}"), (case, lines[0])
        assert not marker.exists(), f"{case}: the payload ran"
        assert not dst.exists()


def test_a_tensor_record_reaching_past_its_storage_is_refused(tmp_path):
    write_torch_file(tmp_path / "w.pth", {"w": np.zeros(4, np.float32)})
    with zipfile.ZipFile(tmp_path / "w.pth") as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    entries["archive/data/0"] = entries["archive/data/0"][:8]  # 2 of the 4 elements
    with zipfile.ZipFile(tmp_path / "w.pth", "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    with pytest.raises(InputError, match=r"w.pth: not a readable weights file \(a storage of 8 bytes"):
        load_torch(tmp_path / "w.pth")
