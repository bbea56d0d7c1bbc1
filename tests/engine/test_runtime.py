"""defrcn.engine.runtime: setup_runtime (context, Ascend's operator precision, the memory
setting, deterministic kernels; no Ascend here: MindSpore's setters are replaced by
recorders), msrun detection and the output folder's lock."""
import logging
import os
import subprocess
import sys

import mindspore as ms
import pytest

from defrcn.engine import runtime
from defrcn.engine.runtime import OutputLock, Runtime, launched_by_msrun
from defrcn.errors import InputError
from defrcn.utils import device as device_module


@pytest.fixture
def recorded(monkeypatch):
    calls = {"context": [], "precision": [], "memory": []}
    monkeypatch.setattr(ms, "set_context", lambda **kw: calls["context"].append(kw))
    monkeypatch.setattr(ms.runtime, "set_memory", lambda **kw: calls["memory"].append(kw))
    monkeypatch.setattr(device_module, "_GRAPH_MEMORY_PLANNED", False)
    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode",
                        lambda mode: calls["precision"].append(mode))
    monkeypatch.delenv("MS_ROLE", raising=False)
    return calls


def test_ascend_keeps_graph_dtypes(recorded):
    result = runtime.setup_runtime("Ascend")
    assert result.device == "Ascend"
    assert recorded["context"][0]["device_target"] == "Ascend"
    assert recorded["precision"] == ["must_keep_origin_dtype"]


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_other_devices_untouched(recorded, device):
    runtime.setup_runtime(device)
    assert recorded["precision"] == []


@pytest.mark.parametrize("device", ["CPU", "GPU", "Ascend"])
def test_memory_is_planned_at_compile_time_on_every_device(recorded, device):
    runtime.setup_runtime(device)
    assert recorded["memory"] == [{"optimize_level": "O1"}]


@pytest.mark.parametrize("deterministic", [False, True])
def test_deterministic_kernels_only_when_asked(recorded, monkeypatch, deterministic):
    calls = []
    monkeypatch.setattr(ms, "set_deterministic", calls.append)
    runtime.setup_runtime("GPU", deterministic=deterministic)
    assert calls == ([True] if deterministic else [])


@pytest.mark.parametrize("pynative, mode", [(False, ms.GRAPH_MODE), (True, ms.PYNATIVE_MODE)])
def test_the_mode_is_set_and_a_lone_process_is_rank_0_of_1(recorded, pynative, mode):
    result = runtime.setup_runtime("CPU", pynative=pynative)
    assert recorded["context"] == [{"mode": mode, "device_target": "CPU"}]
    assert result == Runtime("CPU", 0, 1) and result.is_main
    assert not Runtime("CPU", 1, 2).is_main


def test_an_unknown_device_is_refused_before_anything_is_set(recorded):
    with pytest.raises(InputError, match="--device"):
        runtime.setup_runtime("TPU")
    assert recorded["context"] == [] and recorded["memory"] == []


@pytest.mark.parametrize("role, workers, expected", [
    ("MS_WORKER", "2", True), ("MS_SCHED", "8", True), ("MS_WORKER", "1", False), (None, "2", False),
])
def test_msrun_is_recognised_by_its_role_and_worker_count(monkeypatch, role, workers, expected):
    monkeypatch.delenv("MS_ROLE", raising=False)
    if role:
        monkeypatch.setenv("MS_ROLE", role)
    monkeypatch.setenv("MS_WORKER_NUM", workers)
    assert launched_by_msrun() is expected


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_lock_holds_our_pid_and_goes_on_release(tmp_path):
    out = tmp_path / "run"  # made if missing
    with OutputLock(str(out)) as lock:
        assert lock.held
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"
    assert not lock.held and not (out / ".lock").exists()


def test_a_live_owner_keeps_the_folder(tmp_path):
    (tmp_path / ".lock").write_text(f"{os.getppid()}\n")  # our parent: alive, not us
    with pytest.raises(InputError) as info:
        OutputLock(str(tmp_path)).acquire()
    assert str(info.value) == (f"{tmp_path}: another run (pid {os.getppid()}) is using this output "
                               f"directory; wait for it or pick another --output-dir")
    assert (tmp_path / ".lock").read_text() == f"{os.getppid()}\n"


@pytest.mark.parametrize("content", ["dead", "", "not a pid"])
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog, content):
    owner = dead_pid() if content == "dead" else None
    (tmp_path / ".lock").write_text(f"{owner}\n" if owner else content)
    with caplog.at_level(logging.WARNING, logger="defrcn.engine.runtime"):
        lock = OutputLock(str(tmp_path)).acquire()
    assert lock.held and (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    assert f"removing stale lock {tmp_path / '.lock'} (pid {owner} is gone)" in caplog.text
    lock.release()


def test_release_leaves_a_lock_another_run_now_owns(tmp_path):
    lock = OutputLock(str(tmp_path)).acquire()
    (tmp_path / ".lock").write_text(f"{os.getppid()}\n")
    lock.release()
    assert not lock.held and (tmp_path / ".lock").exists()
