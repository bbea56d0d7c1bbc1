"""tools/export.py: a MINDIR file that MindSpore loads back and that computes what the Python
model computes; bad input is one line and exit 2."""
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = "recipes/toy_base.py"
# A tiny toy detector with every detection valid (score threshold 0) so all outputs are compared.
SMALL = ["model.depth=18", "input.canvases=[[128,128]]", "input.min_size_test=128",
         "input.max_size_test=128", "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
         "model.roi.score_thresh_test=0.0"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(overrides, checkpoint path): a synthetic data set and random weights."""
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
    return overrides, checkpoint


def _run(*args, overrides=()):
    command = [sys.executable, "tools/export.py", *map(str, args)]
    for item in overrides:
        command += ["--set", item]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_mindir_runs_like_the_python_model(toy, tmp_path):
    import mindspore as ms
    from mindspore import Tensor, nn

    from defrcn.inference.predict import load_model_for_inference, preprocess_image

    overrides, checkpoint = toy
    out = tmp_path / "exported" / "toy_detector.mindir"
    result = _run(RECIPE, "--checkpoint", checkpoint, "--format", "MINDIR", "--output", out, overrides=overrides)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no MindSpore noise, no traceback
    assert sorted(os.listdir(out.parent)) == [out.name], "exactly --output, no suffix, no temp files"

    graph = nn.GraphCell(ms.load(str(out)))
    cfg, model, _ = load_model_for_inference(os.path.join(REPO, RECIPE), checkpoint, overrides)
    image = np.random.RandomState(7).randint(0, 256, (96, 128, 3), np.uint8)
    images, sizes, _ = preprocess_image(cfg, image)
    expected = [o.asnumpy() for o in model(Tensor(images), Tensor(sizes))]
    got = [o.asnumpy() for o in graph(Tensor(images), Tensor(sizes))]
    slots = cfg.model.roi.detections_per_image
    assert [g.shape for g in got] == [e.shape for e in expected] == [(1, slots, 4)] + [(1, slots)] * 3
    boxes, scores, classes, valid = expected
    assert valid.sum() > 0 and np.ptp(scores[valid > 0]) > 0, "a meaningful comparison needs detections"
    # Same CPU kernels on the same inputs: identical in practice; the tolerances only allow
    # for a different fusion order (1e-3 px on boxes, 1e-5 on scores).
    np.testing.assert_allclose(got[0], boxes, atol=1e-3)
    np.testing.assert_allclose(got[1], scores, atol=1e-5)
    np.testing.assert_array_equal(got[2], classes)
    np.testing.assert_array_equal(got[3], valid)


@pytest.mark.parametrize("make_args, expected", [
    (lambda p, ckpt: ["--checkpoint", ckpt, "--format", "ONNX", "--output", p / "m.onnx"], "only MINDIR"),
    (lambda p, ckpt: ["--checkpoint", ckpt, "--output", p], "is a directory"),  # --output is a file
])
def test_bad_input_is_one_line_and_exit_2(toy, tmp_path, make_args, expected):
    _, checkpoint = toy
    result = _run(RECIPE, *make_args(tmp_path, checkpoint))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not any(name.endswith((".mindir", ".onnx")) for name in os.listdir(tmp_path))
