import json
from pathlib import Path

import numpy as np
import pytest
from mindspore import Tensor

from defrcn.checkpoint import io
from defrcn.checkpoint.surgery import BOX_WEIGHT, CLS_WEIGHT, PREDICTOR_KEYS
from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES
from defrcn.engine import load_recipe

REPO = Path(__file__).resolve().parents[2]
# Category ids that interleave novel and base classes in the ascending-id order (as COCO does).
TARGET_ORDER = ["orange_diamond", "red_circle", "blue_square", "purple_hexagon", "green_triangle",
                "yellow_star", "white_arrow", "magenta_cross", "cyan_ring"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy data root (categories only) and a base checkpoint of the toy base model (R-18)."""
    root = tmp_path_factory.mktemp("toy")
    (root / "annotations").mkdir()
    categories = [{"id": 10 + 3 * i, "name": name} for i, name in enumerate(TARGET_ORDER)]
    content = {"images": [], "annotations": [], "categories": categories}
    (root / "annotations" / "train.json").write_text(json.dumps(content))
    model = load_recipe(REPO / "recipes/toy_base.py", [f"data.root={root}", "model.depth=18"]).model()
    entries = [{"name": p.name, "data": p} for p in model.get_parameters()]
    entries.append({"name": "optimizer.moment1.backbone.conv1.weight", "data": Tensor(np.ones(3, np.float32))})
    base = str(root / "model_final.ckpt")
    io.save_checkpoint(entries, base, extra={"iteration": 200})
    return root, base


def test_randinit_through_the_cli_loads_into_the_finetune_model(run_tool, one_line_error, toy, tmp_path):
    root, base = toy
    out = tmp_path / "model_reset_surgery.ckpt"
    result = run_tool("surgery", "--checkpoint", base, "--method", "randinit", "--recipe",
                      "recipes/toy_10shot.py", "--set", f"data.root={root}", "--output", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    assert "from 6 to 9 classes" in result.stdout
    assert io.verify_checkpoint(str(out)) is None
    grown = io.load_checkpoint(str(out))
    assert not [n for n in grown if n.startswith(io.STATE_PREFIXES)]
    assert int(grown["sample_step"].asnumpy()) == 0

    recipe = load_recipe(REPO / "recipes/toy_10shot.py", [f"data.root={root}"])
    model = recipe.model()
    missing, unexpected, mismatch = io.load_into(model, grown)
    assert (missing, unexpected, mismatch) == ([], [], [])
    before = io.load_checkpoint(base)
    for src, name in enumerate(BASE_CLASS_NAMES):
        dst = TARGET_ORDER.index(name)
        assert np.array_equal(grown[CLS_WEIGHT].asnumpy()[dst], before[CLS_WEIGHT].asnumpy()[src])
        assert np.array_equal(grown[BOX_WEIGHT].asnumpy()[4 * dst:4 * dst + 4],
                              before[BOX_WEIGHT].asnumpy()[4 * src:4 * src + 4])
    name = "backbone.layer3.1.conv2.weight"
    assert np.array_equal(model.parameters_dict()[name].asnumpy(), before[name].asnumpy())

    # A checkpoint whose predictor does not have the recipe's 6 base classes: one line, exit 2.
    result = run_tool("surgery", "--checkpoint", out, "--method", "randinit", "--recipe",
                      "recipes/toy_10shot.py", "--set", f"data.root={root}", "--output", tmp_path / "again.ckpt")
    one_line_error(result, str(out), "10 rows (9 classes) but 6 base classes")
    assert not (tmp_path / "again.ckpt").exists()


def test_remove_through_the_cli_leaves_the_predictor_to_the_model(run_tool, toy, tmp_path):
    root, base = toy
    out = tmp_path / "model_reset_remove.ckpt"
    overrides = [f"data.root={root}", "data.setting=fsod", f"model.num_classes={len(NOVEL_CLASS_NAMES)}"]
    result = run_tool("surgery", "--checkpoint", base, "--method", "remove", "--recipe",
                      "recipes/toy_10shot.py", "--output", out, sets=overrides)
    assert result.returncode == 0, result.stderr
    model = load_recipe(REPO / "recipes/toy_10shot.py", overrides).model()
    missing, unexpected, mismatch = io.load_into(model, io.load_checkpoint(str(out)))
    assert missing == sorted(PREDICTOR_KEYS) and unexpected == [] and mismatch == []


def test_bad_command_lines_give_one_line(run_tool, one_line_error, toy, tmp_path):
    root, base = toy
    result = run_tool("surgery", "--checkpoint", tmp_path / "none.ckpt", "--method", "randinit", "--recipe",
                      "recipes/toy_10shot.py", "--set", f"data.root={root}", "--output", tmp_path / "o.ckpt")
    one_line_error(result, "none.ckpt", "not found")
    result = run_tool("surgery", "--checkpoint", base, "--method", "randinit", "--recipe",
                      "recipes/toy_base.py", "--set", f"data.root={root}", "--output", tmp_path / "o.ckpt")
    one_line_error(result, "data.setting", "fine-tune recipe")
    result = run_tool("surgery", "--checkpoint", base, "--method", "grow", "--recipe",
                      "recipes/toy_10shot.py", "--output", tmp_path / "o.ckpt")
    one_line_error(result, "--method")
