"""defrcn.apps.selfcheck_side without a model: each group recorded as it finishes (a failing
group leaves the others readable, in the form the parent reads back), a set-up failure
recorded instead of a traceback, and the options the parent passes."""
import json

import numpy as np
import pytest

from defrcn.apps.selfcheck import load_side
from defrcn.apps.selfcheck_side import GROUPS, Side, main


@pytest.fixture
def work(tmp_path):
    """What the parent writes before a side starts (the weights are not read here)."""
    (tmp_path / "spec.json").write_text(json.dumps({"seed": 0}))
    np.savez(tmp_path / "inputs.npz", images=np.zeros((2, 3, 4, 4), np.float32))
    return tmp_path


class Recorded(Side):
    """A side whose groups are stand-ins: features and proposals work, roi fails."""

    def group_features(self):
        return {"res4": np.arange(3.0)}

    def group_roi(self):
        raise RuntimeError("needs the ROI branch features\n   (group 'features'  failed)")

    def group_proposals(self):
        return {"boxes": np.ones((2, 4)), "valid": np.ones(2)}


def test_each_group_is_recorded_and_a_failure_does_not_stop_the_rest(work):
    side = Recorded(str(work), "device", "CPU", "graph")
    side.run(["features", "roi", "proposals"])
    status = json.loads((work / "device" / "status.json").read_text())
    assert status["device"] == "CPU" and status["mode"] == "graph"
    groups = status["groups"]
    assert [groups[g]["state"] for g in ("features", "roi", "proposals")] == ["done", "error", "done"]
    assert groups["roi"]["error"] == "RuntimeError: needs the ROI branch features (group 'features' failed)"
    assert "Traceback" in groups["roi"]["traceback"] and all(g["seconds"] >= 0 for g in groups.values())
    assert sorted(p.name for p in (work / "device").glob("*.npz")) == ["features.npz", "proposals.npz"]
    read_status, arrays = load_side(str(work / "device"))
    assert read_status["groups"] == groups and sorted(arrays) == ["features", "proposals"]
    np.testing.assert_array_equal(arrays["features"]["res4"], np.arange(3.0))


def test_a_set_up_failure_is_recorded_and_no_group_runs(work, monkeypatch):
    def refuse(self, fp32):
        raise RuntimeError("Unsupported device target GPU.\nMore lines")

    monkeypatch.setattr(Side, "setup", refuse)
    ran = []
    monkeypatch.setattr(Side, "run", lambda self, groups: ran.append(groups))
    assert main(["--work", str(work), "--side", "device", "--device", "GPU", "--groups", "features,roi"]) == 1
    status = json.loads((work / "device" / "status.json").read_text())
    assert status["setup_error"] == "RuntimeError: Unsupported device target GPU. More lines"
    assert "refuse" in status["traceback"] and ran == []


def test_the_groups_option_picks_groups_in_the_order_given(work, monkeypatch):
    seen = {}
    monkeypatch.setattr(Side, "setup", lambda self, fp32: seen.update(fp32=fp32))
    monkeypatch.setattr(Side, "run", lambda self, groups: seen.update(groups=groups, mode=self.mode))
    assert main(["--work", str(work), "--side", "reference", "--device", "CPU", "--mode", "pynative",
                 "--fp32", "--groups", "train,,features"]) == 0
    assert seen == {"fp32": True, "groups": ["train", "features"], "mode": "pynative"}
    main(["--work", str(work), "--side", "reference", "--device", "CPU"])
    assert seen["groups"] == list(GROUPS) and seen["mode"] == "graph" and seen["fp32"] is False
    assert all(hasattr(Side, f"group_{group}") for group in GROUPS)


@pytest.mark.parametrize("argv", [
    ["--side", "device", "--device", "TPU"],
    ["--side", "device", "--device", "CPU", "--mode", "eager"],
    ["--device", "CPU"],  # no --side
])
def test_bad_options_stop_at_the_parser(work, argv):
    with pytest.raises(SystemExit) as info:
        main(["--work", str(work), *argv])
    assert info.value.code == 2
    assert not (work / "device").exists()
