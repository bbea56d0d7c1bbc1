"""tools/infer.py: labelled PNGs and JSON detections for images of any size; bad input is
one line and exit 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = "recipes/toy_base.py"
# A tiny toy detector: ResNet-18, one 128 x 128 canvas, few proposals.
SMALL = ["model.depth=18", "input.canvases=[[128,128]]", "input.min_size_test=128",
         "input.max_size_test=128", "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(overrides, checkpoint path, data root): a synthetic data set and random weights."""
    import mindspore as ms

    from defrcn.checkpoint.io import save_checkpoint
    from defrcn.data.synthetic import write_synthetic_dataset
    from defrcn.engine import load_recipe

    root = tmp_path_factory.mktemp("toy")
    write_synthetic_dataset(root / "data", train_images=12, test_images=4, size=128)
    overrides = [f"data.root={root / 'data'}"] + SMALL
    ms.set_seed(0)
    recipe = load_recipe(os.path.join(REPO, RECIPE), overrides)
    checkpoint = str(root / "toy.ckpt")
    save_checkpoint(recipe.model(recipe.cfg), checkpoint)
    return overrides, checkpoint, root / "data"


def _run(*args, overrides=()):
    command = [sys.executable, "tools/infer.py", *map(str, args)]
    for item in overrides:
        command += ["--set", item]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def _one_error_line(result):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _write_image(path, height, width, seed):
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)


def test_writes_png_and_json_per_image_of_any_aspect(toy, tmp_path):
    overrides, checkpoint, data_root = toy
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "landscape.jpg", 96, 128, seed=1)  # H x W
    (folder / "notes.txt").write_text("not an image: folders expand to .jpg/.jpeg/.png only")
    _write_image(tmp_path / "portrait.png", 140, 90, seed=2)
    out = tmp_path / "out"
    result = _run(RECIPE, "--checkpoint", checkpoint, folder, tmp_path / "portrait.png", "--output-dir", out,
                  "--score-thresh", 0, overrides=overrides)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    categories = json.loads((data_root / "annotations" / "train.json").read_text())["categories"]
    id_of = {c["name"]: c["id"] for c in categories}
    assert sorted(os.listdir(out)) == ["landscape.json", "landscape.png", "portrait.json", "portrait.png"]
    for stem, (height, width) in (("landscape", (96, 128)), ("portrait", (140, 90))):
        with Image.open(out / f"{stem}.png") as drawn:
            assert drawn.size == (width, height)
        record = json.loads((out / f"{stem}.json").read_text())
        assert (record["height"], record["width"]) == (height, width)
        assert record["image"].endswith(f"{stem}.jpg" if stem == "landscape" else f"{stem}.png")
        detections = record["detections"]
        assert detections, "--score-thresh 0 keeps every valid detection of a random model"
        boxes = np.array([d["bbox"] for d in detections])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        scores = [d["score"] for d in detections]
        assert scores == sorted(scores, reverse=True) and 0 <= min(scores) and max(scores) <= 1
        for d in detections:  # toy_base predicts the base classes, with the json's own ids
            assert d["category_id"] == id_of[d["category"]]


def test_frozen_bn_model_is_folded_and_predicts_what_the_plain_one_does(toy, tmp_path):
    """tools/infer.py folds frozen BN into the convolutions after loading the weights. A
    model with frozen BN (folded) and the same weights read into trainable BN in inference
    mode (never folded) compute the same function, so their detections must agree."""
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "image.jpg", 112, 128, seed=3)
    records = {}
    for norm in ("bn", "frozen_bn"):
        out = tmp_path / norm
        result = _run(RECIPE, "--checkpoint", checkpoint, tmp_path / "image.jpg", "--output-dir", out,
                      "--score-thresh", 0, overrides=overrides + [f"model.norm={norm}"])
        assert result.returncode == 0, result.stderr
        records[norm] = json.loads((out / "image.json").read_text())["detections"]
    plain, folded = records["bn"][:10], records["frozen_bn"][:10]
    assert len(plain) == 10 and len(folded) == 10
    np.testing.assert_allclose([d["score"] for d in folded], [d["score"] for d in plain], atol=1e-3)
    np.testing.assert_allclose([d["bbox"] for d in folded], [d["bbox"] for d in plain], atol=0.05)
    assert [d["category"] for d in folded] == [d["category"] for d in plain]


def test_detections_do_not_depend_on_the_canvas(toy, tmp_path):
    """The same image (resized to 102 x 128) in three canvases: the detections of the image
    at its own size, as detectron2 computes them, every time."""
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "image.jpg", 96, 120, seed=5)
    records = []
    for canvas in ("[[128,128]]", "[[160,192]]", "[[256,256]]"):
        out = tmp_path / canvas.strip("[]").replace(",", "x")
        result = _run(RECIPE, "--checkpoint", checkpoint, tmp_path / "image.jpg", "--output-dir", out,
                      "--score-thresh", 0, overrides=overrides + [f"input.canvases={canvas}"])
        assert result.returncode == 0, result.stderr
        records.append(json.loads((out / "image.json").read_text())["detections"])
    assert len(records[0]) >= 10
    for other in records[1:]:
        assert [d["category"] for d in other] == [d["category"] for d in records[0]]
        np.testing.assert_allclose([d["score"] for d in other], [d["score"] for d in records[0]],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([d["bbox"] for d in other], [d["bbox"] for d in records[0]], atol=1e-2)


def test_unreadable_image_is_one_line_and_exit_2(toy, tmp_path):
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "good.jpg", 64, 64, seed=3)
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    result = _run(RECIPE, "--checkpoint", checkpoint, tmp_path / "good.jpg", tmp_path / "broken.jpg",
                  "--output-dir", tmp_path / "out", overrides=overrides)
    line = _one_error_line(result)
    assert "broken.jpg" in line and "cannot read image" in line
    assert not (tmp_path / "out").exists(), "nothing is written before every image was checked"


@pytest.mark.parametrize("make_args, expected", [
    (lambda p, ckpt: ["--checkpoint", p / "none.ckpt", p / "a.jpg", "--output-dir", p / "o"], "none.ckpt"),
    (lambda p, ckpt: ["--checkpoint", ckpt, p / "missing.jpg", "--output-dir", p / "o"], "missing.jpg"),
    (lambda p, ckpt: ["--checkpoint", ckpt, p / "empty", "--output-dir", p / "o"], "no jpg/jpeg/png files"),
    (lambda p, ckpt: ["--checkpoint", ckpt, p / "a.jpg", "--output-dir", p / "o", "--score-thresh", 2],
     "--score-thresh"),
    (lambda p, ckpt: ["--checkpoint", ckpt, p / "a.png", "--output-dir", p], "would overwrite"),
])
def test_bad_input_is_one_line_and_exit_2(toy, tmp_path, make_args, expected):
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "a.jpg", 32, 32, seed=4)
    _write_image(tmp_path / "a.png", 32, 32, seed=4)  # OUTPUT_DIR/a.png would be this file
    (tmp_path / "empty").mkdir()
    result = _run(RECIPE, *make_args(tmp_path, checkpoint), overrides=overrides)
    assert expected in _one_error_line(result)
