"""The bad-input corpus, through the real command-line tools: every case is answered with
exactly one line on stderr naming the file or key and the problem, exit code 2, no
traceback, and nothing under the case's folder written or changed.

One row per case: (id, setup(case) -> argv of a tool, expected fragments of the line).
`case` is a folder with a private copy of the tiny synthetic data set (`case.root`) and an
output folder (`case.out`) holding a file, so "nothing written" covers both. Many of these
are also tested one by one next to their modules (tests/data, tests/tools); this is the one
place that runs them all through the CLIs.
"""
import json
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from defrcn.testing import original_defrcn_state, torchvision_resnet_shapes, write_torch_file

pytestmark = pytest.mark.slow
TRAIN = "recipes/toy_base.py"


def _train(case, *extra, recipe=TRAIN):
    sets = [f"data.root={case.root}", *case.tools.tiny]  # tiny: a case that trains compiles fast
    return ["train", recipe, "--output-dir", case.out, "--no-eval",
            *[arg for item in sets for arg in ("--set", item)], *extra]


def _edit_json(case, edit):
    path = case.root / "annotations" / "train.json"
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))
    return path


def _first_annotation(**fields):
    return lambda content: content["annotations"][0].update(fields)


def corrupt_json(case):
    (case.root / "annotations" / "train.json").write_text('{"images": [1, 2,, ]}')
    return _train(case)


def truncated_json(case):
    path = case.root / "annotations" / "train.json"
    path.write_text(path.read_text()[:500])
    return _train(case)


def zero_size_box(case):
    _edit_json(case, _first_annotation(bbox=[10, 10, 0, 20]))
    return _train(case)


def negative_box(case):
    _edit_json(case, _first_annotation(bbox=[10, 10, 20, -5]))
    return _train(case)


def box_outside_image(case):
    _edit_json(case, _first_annotation(bbox=[100, 100, 200, 60]))
    return _train(case)


def unknown_category(case):
    _edit_json(case, _first_annotation(category_id=999))
    return _train(case)


def duplicate_image_id(case):
    _edit_json(case, lambda c: c["images"][1].update(id=c["images"][0]["id"]))
    return _train(case)


def missing_image(case):
    (case.root / "images" / "train" / "000000.jpg").unlink()
    return _train(case)


def unreadable_image(case):
    (case.root / "images" / "train" / "000000.jpg").write_bytes(b"not a jpeg at all")
    return _train(case)


def empty_data_set(case):
    _edit_json(case, lambda c: (c.update(images=[], annotations=[])))
    return _train(case)


def split_class_not_in_data_set(case):
    return _train(case, "--set", 'data.novel_classes=["unicorn"]', "--set", "model.num_classes=7",
                  recipe="recipes/toy_1shot.py")


def more_shots_than_instances(case):
    return ["split", "custom", "--annotations", case.root / "annotations" / "train.json",
            "--shots", "1000", "--seeds", "0", "--output-dir", case.out / "fewshot"]


def recipe_that_raises(case):
    recipe = case.out / "broken_recipe.py"
    recipe.write_text("raise ValueError('this recipe is broken on purpose')\n")
    return ["train", recipe, "--output-dir", case.out / "run"]


def wrong_set_type(case):
    return _train(case, "--set", "solver.max_iter=many")


def unknown_set_key(case):
    return _train(case, "--set", "solver.max_iters=10")


def eval_other_class_count(case):
    return ["eval", TRAIN, "--checkpoint", case.nine_class_ckpt, "--set", f"data.root={case.root}",
            "--output-dir", case.out]


def surgery_other_model(case):
    return ["surgery", "--checkpoint", case.nine_class_ckpt, "--method", "randinit",
            "--recipe", "recipes/toy_10shot.py", "--set", f"data.root={case.root}",
            "--output", case.out / "surgery.ckpt"]


def train_init_other_model(case):
    return _train(case, recipe=TRAIN) + ["--init", str(case.nine_class_ckpt)]


def _torchvision_resnet18():
    """{torchvision name: array} of a ResNet-18 state dict."""
    import numpy as np

    return {name: np.full(shape, 0.5, np.float32) for name, shape in torchvision_resnet_shapes(18).items()}


def _truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def convert_not_a_resnet(case):
    import numpy as np

    source = case.out / "not_resnet.pth"
    write_torch_file(source, {"encoder.weight": np.zeros((4, 4), np.float32), "head.bias": np.zeros(4, np.float32)})
    return ["convert", "torchvision", source, case.out / "converted.ckpt"]


def convert_truncated_pth(case):
    source = case.out / "resnet18.pth"
    write_torch_file(source, _torchvision_resnet18())
    return ["convert", "torchvision", _truncated(source), case.out / "converted.ckpt"]


def convert_truncated_legacy_pth(case):
    source = case.out / "resnet18_legacy.pth"
    write_torch_file(source, _torchvision_resnet18(), legacy=True)
    return ["convert", "torchvision", _truncated(source), case.out / "converted.ckpt"]


def convert_truncated_pkl(case):
    import numpy as np

    source = case.out / "R-18.pkl"
    with open(source, "wb") as handle:
        pickle.dump({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}}, handle, protocol=2)
    return ["convert", "detectron2", _truncated(source), case.out / "converted.ckpt"]


def convert_wrong_shape(case):
    import numpy as np

    state = _torchvision_resnet18()
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    source = case.out / "resnet18.pth"
    write_torch_file(source, state)
    return ["convert", "torchvision", source, case.out / "converted.ckpt"]


def convert_torchvision_as_detectron2(case):
    source = case.out / "resnet18.pth"
    write_torch_file(source, _torchvision_resnet18())
    return ["convert", "detectron2", source, case.out / "converted.ckpt"]


def convert_detectron2_as_torchvision(case):
    import numpy as np

    source = case.out / "R-18.pkl"
    with open(source, "wb") as handle:
        pickle.dump({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}}, handle, protocol=2)
    return ["convert", "torchvision", source, case.out / "converted.ckpt"]


def convert_defrcn_other_class_count(case):
    # an original DeFRCN R-18 detector for 7 classes: none of the toy's lists (6 base, 3 novel, 9 all)
    source = case.out / "model_final.pth"
    write_torch_file(source, {"model": original_defrcn_state(18, 7, num_anchors=12)})
    return ["convert", "defrcn", source, case.out / "converted.ckpt", "--recipe", TRAIN, "--set",
            f"data.root={case.root}"]


CASES = [
    ("corrupt_json", corrupt_json, ["train.json", "not valid JSON"]),
    ("truncated_json", truncated_json, ["train.json", "not valid JSON"]),
    ("zero_size_box", zero_size_box, ["train.json", "annotation", "non-positive box size"]),
    ("negative_box", negative_box, ["train.json", "annotation", "non-positive box size"]),
    ("box_outside_image", box_outside_image, ["train.json", "outside image"]),
    ("unknown_category", unknown_category, ["train.json", "unknown category id 999"]),
    ("duplicate_image_id", duplicate_image_id, ["train.json", "duplicate image id"]),
    ("missing_image", missing_image, ["000000.jpg", "not found"]),
    ("unreadable_image", unreadable_image, ["000000.jpg", "cannot read image"]),
    ("empty_data_set", empty_data_set, ["train.json", "no image"]),
    ("split_class_not_in_data_set", split_class_not_in_data_set, ["unicorn", "not a category"]),
    ("more_shots_than_instances", more_shots_than_instances, ["1000 shots requested but it has only"]),
    ("recipe_that_raises", recipe_that_raises, ["broken_recipe.py", "ValueError", "broken on purpose"]),
    ("wrong_set_type", wrong_set_type, ["solver.max_iter", "many"]),
    ("unknown_set_key", unknown_set_key, ["solver.max_iters"]),
    ("eval_other_class_count", eval_other_class_count, ["nine_classes.ckpt", "trained for 9 classes"]),
    ("surgery_other_model", surgery_other_model, ["nine_classes.ckpt", "6 base classes"]),
    ("train_init_other_model", train_init_other_model, ["--init", "nine_classes.ckpt", "9 classes"]),
    ("convert_not_a_resnet", convert_not_a_resnet, ["not_resnet.pth", "not a torchvision ResNet"]),
    ("convert_truncated_pth", convert_truncated_pth, ["resnet18.pth", "not a readable weights file"]),
    ("convert_truncated_legacy_pth", convert_truncated_legacy_pth,
     ["resnet18_legacy.pth", "not a readable weights file"]),
    ("convert_truncated_pkl", convert_truncated_pkl, ["R-18.pkl", "not a readable weights file"]),
    ("convert_wrong_shape", convert_wrong_shape,
     ["resnet18.pth", "layer1.0.conv1.weight: shape (64, 64, 1, 1) where torchvision ResNet-18 has"]),
    ("convert_torchvision_as_detectron2", convert_torchvision_as_detectron2,
     ["resnet18.pth", "a PyTorch file", "tools/convert.py torchvision"]),
    ("convert_detectron2_as_torchvision", convert_detectron2_as_torchvision,
     ["R-18.pkl", "a plain pickle", "tools/convert.py detectron2"]),
    ("convert_defrcn_other_class_count", convert_defrcn_other_class_count, ["model_final.pth", "7"]),
]


@pytest.fixture(scope="module")
def nine_class_checkpoint(tools, toy_checkpoint):
    """The toy fine-tune model's weights (9 classes): the wrong model for toy_base (6)."""
    return toy_checkpoint("recipes/toy_1shot.py", f"data.root={tools.data_root}", name="nine_classes.ckpt")


def _snapshot(folder):
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(folder).rglob("*")}


@pytest.fixture(scope="module")
def runs(tools, nine_class_checkpoint, tmp_path_factory):
    """Every case set up in a folder of its own and its tool run, two at a time (a run is
    mostly the tool's single-threaded start-up): {name: (result or the exception of the run,
    the folder's snapshot before, after)}."""
    prepared = {}
    for name, setup, _ in CASES:
        folder = tmp_path_factory.mktemp(name)
        case = SimpleNamespace(tools=tools, root=folder / "data", out=folder / "out",
                               nine_class_ckpt=nine_class_checkpoint)
        shutil.copytree(tools.data_root, case.root)
        case.out.mkdir()
        (case.out / "keep.txt").write_text("an earlier file\n")
        argv = setup(case)
        prepared[name] = (folder, argv, _snapshot(folder))

    def run(name):
        folder, argv, before = prepared[name]
        try:
            result = tools.run(argv[0], *argv[1:], timeout=180)
        except Exception as error:  # a timeout: reported by its own case's test
            result = error
        return name, (result, before, _snapshot(folder))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, prepared))


@pytest.mark.parametrize("name, fragments", [(row[0], row[2]) for row in CASES], ids=[row[0] for row in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(runs, name, fragments):
    result, before, after = runs[name]
    if isinstance(result, Exception):
        raise result
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "[WARNING]" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    print(f"{name}: {lines[0]}")  # the corpus's messages, with pytest -s
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert after == before, "the tool wrote or changed files"
