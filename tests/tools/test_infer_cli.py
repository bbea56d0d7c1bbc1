"""tools/infer.py: labelled PNGs and JSON detections for images of any size; bad input is
one line and exit 2."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

RECIPE = "recipes/toy_base.py"


@pytest.fixture
def toy(toy_detector):
    """(overrides, checkpoint, data root) of the session's random toy detector."""
    return toy_detector.overrides, toy_detector.checkpoint, toy_detector.root


def _write_image(path, height, width, seed):
    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)


def test_writes_png_and_json_per_image_of_any_aspect(toy, run_tool, tmp_path):
    overrides, checkpoint, data_root = toy
    folder = tmp_path / "images"
    folder.mkdir()
    _write_image(folder / "landscape.jpg", 96, 128, seed=1)  # H x W
    (folder / "notes.txt").write_text("not an image: folders expand to .jpg/.jpeg/.png only")
    _write_image(tmp_path / "portrait.png", 140, 90, seed=2)
    out = tmp_path / "out"
    result = run_tool("infer", RECIPE, "--checkpoint", checkpoint, folder, tmp_path / "portrait.png",
                      "--output-dir", out, "--score-thresh", 0, sets=overrides)
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


def test_frozen_bn_model_is_folded_and_predicts_what_the_plain_one_does(toy, run_tool, tmp_path):
    """tools/infer.py folds frozen BN into the convolutions after loading the weights. A
    model with frozen BN (folded) and the same weights read into trainable BN in inference
    mode (never folded) compute the same function, so their detections must agree."""
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "image.jpg", 112, 128, seed=3)
    records = {}
    for norm in ("bn", "frozen_bn"):
        out = tmp_path / norm
        result = run_tool("infer", RECIPE, "--checkpoint", checkpoint, tmp_path / "image.jpg", "--output-dir", out,
                          "--score-thresh", 0, sets=overrides + [f"model.norm={norm}"])
        assert result.returncode == 0, result.stderr
        records[norm] = json.loads((out / "image.json").read_text())["detections"]
    plain, folded = records["bn"][:10], records["frozen_bn"][:10]
    assert len(plain) == 10 and len(folded) == 10
    np.testing.assert_allclose([d["score"] for d in folded], [d["score"] for d in plain], atol=1e-3)
    np.testing.assert_allclose([d["bbox"] for d in folded], [d["bbox"] for d in plain], atol=0.05)
    assert [d["category"] for d in folded] == [d["category"] for d in plain]


def test_memory_is_planned_and_detections_are_those_of_the_default_setting(toy, run_tool, tmp_path):
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "image.jpg", 96, 128, seed=4)
    runs = {}
    for memory_level in ("-", "O0"):  # the tool's own setting; MindSpore's default, set first
        out = tmp_path / memory_level
        result = run_tool("infer", RECIPE, "--checkpoint", checkpoint, tmp_path / "image.jpg", "--output-dir", out,
                          "--score-thresh", 0, sets=overrides, memory_level=memory_level)
        assert result.returncode == 0, result.stderr
        runs[memory_level] = (result.stdout.strip().splitlines()[-1],
                              json.loads((out / "image.json").read_text())["detections"])
    assert runs["-"][0] == "memory_optimize_level 1" and runs["O0"][0] == "memory_optimize_level 0"
    assert runs["-"][1] and runs["-"][1] == runs["O0"][1]


@pytest.mark.skipif(shutil.which("g++") is None, reason="AKG links its kernels with g++")
def test_fused_convolution_tails_give_the_detections_of_the_stock_kernels(toy, run_tool, tmp_path):
    """With test.kernel_fusion=on the tool fuses each convolution's BiasAdd/Add/ReLU on CPU
    (MindSpore's AKG kernels, written under MS_COMPILER_CACHE_PATH when it is set); "off" and
    "auto" on the toy's small canvas run the stock kernels. Frozen BN, as DeFRCN's recipes have
    it: folded into the convolutions, it leaves a BiasAdd."""
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "image.jpg", 96, 128, seed=6)
    records = {}
    for fusion in ("on", "off", "auto"):
        out, kernels = tmp_path / f"fusion_{fusion}", tmp_path / f"kernels_{fusion}"
        env = dict(os.environ, MS_COMPILER_CACHE_PATH=str(kernels))
        result = run_tool("infer", RECIPE, "--checkpoint", checkpoint, tmp_path / "image.jpg", "--output-dir", out,
                          "--score-thresh", 0, env=env,
                          sets=overrides + ["model.norm=frozen_bn", f"test.kernel_fusion={fusion}"])
        assert result.returncode == 0, result.stderr
        records[fusion] = json.loads((out / "image.json").read_text())["detections"]
        built = os.listdir(kernels / "akg_kernel_meta") if (kernels / "akg_kernel_meta").is_dir() else []
        assert any(name.startswith("Fused_BiasAdd") for name in built) == (fusion == "on"), built
    assert len(records["on"]) >= 10 and records["on"] == records["off"] == records["auto"]


def test_detections_do_not_depend_on_the_canvas(toy, run_tool, tmp_path):
    """The same image (resized to 102 x 128) in three canvases: the detections of the image
    at its own size, as detectron2 computes them, every time."""
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "image.jpg", 96, 120, seed=5)
    records = []
    for canvas in ("[[128,128]]", "[[160,192]]", "[[256,256]]"):
        out = tmp_path / canvas.strip("[]").replace(",", "x")
        result = run_tool("infer", RECIPE, "--checkpoint", checkpoint, tmp_path / "image.jpg", "--output-dir", out,
                          "--score-thresh", 0, sets=overrides + [f"input.canvases={canvas}"])
        assert result.returncode == 0, result.stderr
        records.append(json.loads((out / "image.json").read_text())["detections"])
    assert len(records[0]) >= 10
    for other in records[1:]:
        assert [d["category"] for d in other] == [d["category"] for d in records[0]]
        np.testing.assert_allclose([d["score"] for d in other], [d["score"] for d in records[0]],
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([d["bbox"] for d in other], [d["bbox"] for d in records[0]], atol=1e-2)


def test_unreadable_image_is_one_line_and_exit_2(toy, run_tool, one_line_error, tmp_path):
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "good.jpg", 64, 64, seed=3)
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    result = run_tool("infer", RECIPE, "--checkpoint", checkpoint, tmp_path / "good.jpg", tmp_path / "broken.jpg",
                      "--output-dir", tmp_path / "out", sets=overrides)
    line = one_line_error(result)
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
def test_bad_input_is_one_line_and_exit_2(toy, run_tool, one_line_error, tmp_path, make_args, expected):
    overrides, checkpoint, _ = toy
    _write_image(tmp_path / "a.jpg", 32, 32, seed=4)
    _write_image(tmp_path / "a.png", 32, 32, seed=4)  # OUTPUT_DIR/a.png would be this file
    (tmp_path / "empty").mkdir()
    result = run_tool("infer", RECIPE, *make_args(tmp_path, checkpoint), sets=overrides)
    assert expected in one_line_error(result)
