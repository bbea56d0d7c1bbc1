"""defrcn.utils.device: the device names the tools accept, Ascend's operator precision kept at
the graph's dtypes, and the memory setting every graph-running process makes (MindSpore's setters are
replaced by recorders: each can be set once per process)."""
import logging

import mindspore as ms
import pytest

from defrcn.errors import InputError
from defrcn.utils import device as device_module
from defrcn.utils.device import (ASCEND_PRECISION_MODE, DEVICES, check_device, keep_graph_precision,
                                 plan_graph_memory)


@pytest.mark.parametrize("device", DEVICES)
def test_known_devices_pass(device):
    assert check_device(device) is None


@pytest.mark.parametrize("device", ["cpu", "NPU", ""])
def test_other_names_are_one_input_error(device):
    with pytest.raises(InputError) as info:
        check_device(device)
    assert str(info.value) == f"--device: expected one of CPU, GPU, Ascend, got {device!r}"


@pytest.fixture
def precision_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", calls.append)
    return calls


def test_ascend_keeps_the_graph_dtypes(precision_calls):
    keep_graph_precision("Ascend")
    assert precision_calls == [ASCEND_PRECISION_MODE] == ["must_keep_origin_dtype"]


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_other_devices_are_left_alone(precision_calls, device):
    keep_graph_precision(device)
    assert precision_calls == []


def test_a_mode_chosen_elsewhere_is_kept_with_a_warning(monkeypatch, caplog):
    def refuse(mode):
        raise RuntimeError("The 'precision_mode' can not be set repeatedly.")

    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", refuse)
    with caplog.at_level(logging.WARNING, logger="defrcn.utils.device"):
        keep_graph_precision("Ascend")
    assert "left as configured" in caplog.text and "set repeatedly" in caplog.text


@pytest.fixture
def memory_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(ms.runtime, "set_memory", lambda **kw: calls.append(kw))
    monkeypatch.setattr(device_module, "_GRAPH_MEMORY_PLANNED", False)
    return calls


def test_memory_is_planned_once_per_process(memory_calls):
    plan_graph_memory()
    plan_graph_memory()  # training then eval (the demo): MindSpore would refuse a second call
    assert memory_calls == [{"optimize_level": "O1"}]


def test_a_memory_setting_made_elsewhere_is_kept_with_a_warning(monkeypatch, caplog):
    def refuse(**kwargs):
        raise RuntimeError("The 'set_memory' can not be set repeatedly.")

    monkeypatch.setattr(ms.runtime, "set_memory", refuse)
    monkeypatch.setattr(device_module, "_GRAPH_MEMORY_PLANNED", False)
    with caplog.at_level(logging.WARNING, logger="defrcn.utils.device"):
        plan_graph_memory()
    assert "left as configured" in caplog.text and "set repeatedly" in caplog.text
