"""Checkpoint files: atomic writes, damaged-file fallback, pruning, by-name load report."""
import logging
import os

import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from defrcn.checkpoint import io
from defrcn.errors import InputError


def entries(scale=1.0):
    return [{"name": "a.weight", "data": Tensor(np.full((2, 3), scale, np.float32))},
            {"name": "a.bias", "data": Tensor(np.arange(3, dtype=np.float32) * scale)}]


def save_periodic(output_dir, iteration):
    path = os.path.join(output_dir, io.CHECKPOINT_SUBDIR, io.periodic_name(iteration))
    io.save_checkpoint(entries(iteration), path, extra={"iteration": iteration})
    io.write_last_checkpoint(output_dir, os.path.relpath(path, output_dir))
    return path


def test_round_trip_with_extras(tmp_path):
    path = str(tmp_path / "m.ckpt")
    io.save_checkpoint(entries(), path, extra={"iteration": 12, "lr": 0.125000001, "tag": "x",
                                               "keys": np.arange(4, dtype=np.int64)})
    loaded = io.load_checkpoint(path)
    np.testing.assert_array_equal(loaded["a.weight"].asnumpy(), np.ones((2, 3), np.float32))
    extras = io.split_extras(loaded)
    assert extras["iteration"] == 12 and extras["tag"] == "x"
    assert extras["lr"] == 0.125000001  # float64, not rounded to float32
    np.testing.assert_array_equal(extras["keys"], np.arange(4))
    assert os.path.isfile(path + io.HASH_SUFFIX)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = str(tmp_path / "m.ckpt")
    io.save_checkpoint(entries(1.0), path)
    original = open(path, "rb").read()

    def crash_mid_write(obj, name, **kwargs):
        with open(name, "wb") as handle:
            handle.write(b"\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(io.ms, "save_checkpoint", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint(entries(2.0), path)
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt", "m.ckpt" + io.HASH_SUFFIX]
    assert open(path, "rb").read() == original
    assert io.verify_checkpoint(path) is None


def test_pointer_is_relative_plain_text(tmp_path):
    path = save_periodic(str(tmp_path), 30)
    assert (tmp_path / io.LAST_CHECKPOINT).read_text() == "checkpoints/model_0000030.ckpt\n"
    assert io.read_last_checkpoint(str(tmp_path)) == path
    assert io.find_resume_checkpoint(str(tmp_path)) == path


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "delete"])
def test_damaged_newest_falls_back_to_older_with_one_warning(tmp_path, caplog, damage):
    output_dir = str(tmp_path)
    good = save_periodic(output_dir, 10)
    newest = save_periodic(output_dir, 20)
    data = open(newest, "rb").read()
    if damage == "truncate":
        open(newest, "wb").write(data[: len(data) // 2])
    elif damage == "flip_byte":
        open(newest, "wb").write(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    else:
        os.remove(newest)
    with caplog.at_level(logging.WARNING, logger="defrcn.checkpoint.io"):
        assert io.find_resume_checkpoint(output_dir) == good
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "model_0000020.ckpt" in warnings[0].getMessage()


def test_newer_periodic_than_pointer_is_ignored(tmp_path):
    output_dir = str(tmp_path)
    pointed = save_periodic(output_dir, 10)
    os.makedirs(tmp_path / "checkpoints", exist_ok=True)
    io.save_checkpoint(entries(), str(tmp_path / "checkpoints" / io.periodic_name(20)))
    assert io.find_resume_checkpoint(output_dir) == pointed


def test_nothing_to_resume(tmp_path):
    assert io.find_resume_checkpoint(str(tmp_path)) is None


def test_unhashed_file_is_parsed(tmp_path):
    path = str(tmp_path / "converted.ckpt")
    ms.save_checkpoint(entries(), path)
    assert io.verify_checkpoint(path) is None
    open(path, "wb").write(b"garbage")
    assert "cannot be parsed" in io.verify_checkpoint(path)
    with pytest.raises(InputError, match="converted.ckpt: not a readable MindSpore checkpoint"):
        io.load_checkpoint(path)


def test_load_missing_or_damaged_is_input_error(tmp_path):
    with pytest.raises(InputError, match="nope.ckpt: checkpoint file not found"):
        io.load_checkpoint(str(tmp_path / "nope.ckpt"))
    path = str(tmp_path / "m.ckpt")
    io.save_checkpoint(entries(), path)
    open(path, "ab").write(b"x")
    with pytest.raises(InputError, match="m.ckpt: checkpoint is damaged: sha256 mismatch"):
        io.load_checkpoint(path)


def test_prune_keeps_newest_and_final(tmp_path):
    folder = tmp_path / "checkpoints"
    for iteration in (10, 20, 30, 40):
        save_periodic(str(tmp_path), iteration)
    final = str(folder / io.FINAL_NAME)
    io.save_checkpoint(entries(), final)
    deleted = io.prune_checkpoints(str(folder), keep=2)
    assert [os.path.basename(p) for p in deleted] == ["model_0000020.ckpt", "model_0000010.ckpt"]
    assert sorted(os.listdir(folder)) == sorted(
        ["model_0000030.ckpt", "model_0000030.ckpt.sha256", "model_0000040.ckpt",
         "model_0000040.ckpt.sha256", io.FINAL_NAME, io.FINAL_NAME + ".sha256"])
    assert io.prune_checkpoints(str(folder), keep=0) == []


class Small(nn.Cell):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Dense(3, width)
        self.head = nn.Dense(width, 2)

    def construct(self, x):
        return self.head(self.fc(x))


def test_load_into_reports_by_name(tmp_path):
    ms.set_seed(0)
    source = Small(4)
    params = {p.name: p for p in source.get_parameters()}
    params["extra_layer.weight"] = ms.Parameter(Tensor(np.ones(2, np.float32)), name="extra_layer.weight")
    params["optimizer.moments.fc.weight"] = ms.Parameter(Tensor(np.ones(2, np.float32)), name="m")
    del params["head.bias"]
    target = Small(5)  # fc and head.weight differ in shape
    before = target.fc.bias.asnumpy().copy()
    missing, unexpected, mismatch = io.load_into(target, params)
    assert missing == ["head.bias"]
    assert unexpected == ["extra_layer.weight"]  # training state is not "unexpected"
    assert mismatch == [io.ShapeMismatch("fc.bias", (4,), (5,)), io.ShapeMismatch("fc.weight", (4, 3), (5, 3)),
                        io.ShapeMismatch("head.weight", (2, 4), (2, 5))]
    assert [str(m) for m in mismatch] == ["fc.bias: checkpoint (4,) vs model (5,)",
                                          "fc.weight: checkpoint (4, 3) vs model (5, 3)",
                                          "head.weight: checkpoint (2, 4) vs model (2, 5)"]
    np.testing.assert_array_equal(target.fc.bias.asnumpy(), before)

    same = Small(4)
    assert io.load_into(same, {p.name: p for p in source.get_parameters()}, strict=True) == ([], [], [])
    np.testing.assert_array_equal(same.head.weight.asnumpy(), source.head.weight.asnumpy())
    with pytest.raises(InputError, match="1 missing"):
        io.load_into(Small(4), params, strict=True)
