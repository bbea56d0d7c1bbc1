"""tools/export.py: a MINDIR file that MindSpore loads back and that computes what the Python
model computes; bad input is one line and exit 2."""
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = "recipes/toy_base.py"


def test_mindir_runs_like_the_python_model(toy_detector, run_tool, tmp_path):
    import mindspore as ms
    from mindspore import Tensor, nn

    from defrcn.inference.predict import load_model_for_inference, preprocess_image

    # every detection valid (score threshold 0) so that all outputs are compared
    overrides = [*toy_detector.overrides, "model.roi.score_thresh_test=0.0"]
    checkpoint = toy_detector.checkpoint
    out = tmp_path / "exported" / "toy_detector.mindir"
    result = run_tool("export", RECIPE, "--checkpoint", checkpoint, "--format", "MINDIR", "--output", out,
                      sets=overrides, timeout=300, memory_level="-")
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # no MindSpore noise, no traceback
    assert result.stdout.strip().splitlines()[-1] == "memory_optimize_level 1"  # planned, as in eval
    assert sorted(os.listdir(out.parent)) == [out.name], "exactly --output, no suffix, no temp files"

    graph = nn.GraphCell(ms.load(str(out)))
    cfg, model, _ = load_model_for_inference(os.path.join(REPO, RECIPE), checkpoint, overrides)
    image = np.random.RandomState(7).randint(0, 256, (96, 128, 3), np.uint8)
    images, sizes, _ = preprocess_image(cfg.input, image)
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
def test_bad_input_is_one_line_and_exit_2(toy_detector, run_tool, one_line_error, tmp_path, make_args,
                                          expected):
    result = run_tool("export", RECIPE, *make_args(tmp_path, toy_detector.checkpoint), timeout=300)
    one_line_error(result, expected)
    assert not any(name.endswith((".mindir", ".onnx")) for name in os.listdir(tmp_path))
