"""Ascend keeps the graph's float32 (docs/devices.md): setup_runtime sets the operator precision
mode on Ascend only. No Ascend here: MindSpore's setters are replaced by recorders."""
import logging

import mindspore as ms
import pytest

from defrcn.engine import runtime
from defrcn.utils import device as device_setup


@pytest.fixture
def recorded(monkeypatch):
    calls = {"context": [], "precision": []}
    monkeypatch.setattr(ms, "set_context", lambda **kw: calls["context"].append(kw))
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


def test_mode_chosen_elsewhere_is_kept(monkeypatch, caplog):
    def refuse(mode):
        raise RuntimeError("The 'precision_mode' can not be set repeatedly.")

    monkeypatch.setattr(ms.device_context.ascend.op_precision, "precision_mode", refuse)
    with caplog.at_level(logging.WARNING, logger="defrcn.utils.device"):
        device_setup.keep_graph_precision("Ascend")
    assert "left as configured" in caplog.text


@pytest.mark.parametrize("deterministic", [False, True])
def test_deterministic_kernels_only_when_asked(recorded, monkeypatch, deterministic):
    calls = []
    monkeypatch.setattr(ms, "set_deterministic", calls.append)
    runtime.setup_runtime("GPU", deterministic=deterministic)
    assert calls == ([True] if deterministic else [])
