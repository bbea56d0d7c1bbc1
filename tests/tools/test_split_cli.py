import json
from pathlib import Path

import pytest
from PIL import Image

from defrcn.data.catalog import load_dataset
from defrcn.data.voc import load_fewshot_voc

REPO = Path(__file__).resolve().parents[2]
CATS = [{"id": 7, "name": "kite"}, {"id": 3, "name": "ball"}]


def write_custom(root, annotations=None, images=None):
    images = images or [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in range(1, 7)]
    if annotations is None:
        annotations = [{"id": n + 1, "image_id": 1 + n % 6, "category_id": (3, 7)[n // 6],
                        "bbox": [1 + n, 2, 6, 6], "iscrowd": 0} for n in range(12)]
    (root / "images" / "train").mkdir(parents=True, exist_ok=True)
    for image in images:
        Image.new("RGB", (32, 32)).save(root / "images" / "train" / image["file_name"])
    (root / "annotations").mkdir(exist_ok=True)
    path = root / "annotations" / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATS}))
    return path


def test_custom_splits_are_written_and_read_back(run_tool, tmp_path):
    train = write_custom(tmp_path)
    result = run_tool("split", "custom", "--annotations", train, "--shots", "1,2", "--seeds", "0,3",
                      "--output-dir", tmp_path / "fewshot")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fewshot" / "full_box_2shot_kite_trainval.json").is_file()
    assert (tmp_path / "fewshot" / "seed3" / "full_box_1shot_ball_trainval.json").is_file()
    for seed in (0, 3):
        records, meta = load_dataset("custom", "train_fewshot", root=tmp_path, novel_classes=["kite"],
                                     setting="tfa", shots=2, split_seed=seed)
        assert meta.class_names == ["ball", "kite"]
        assert sorted(a["category_id"] for r in records for a in r["annotations"]) == [0, 0, 1, 1]


def test_voc_splits_are_written_and_read_back(run_tool, tmp_path):
    voc = tmp_path / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (voc / sub).mkdir(parents=True)
    ids = [f"{i:06d}" for i in range(1, 6)]
    for i, file_id in enumerate(ids):
        objects = "".join(f"<object><name>{name}</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>9</xmax>"
                          f"<ymax>9</ymax></bndbox></object>" for name in ["cow"] * (1 + i % 2) + ["dog"])
        (voc / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><size><width>16</width><height>16</height></size>{objects}</annotation>")
        Image.new("RGB", (16, 16)).save(voc / "JPEGImages" / f"{file_id}.jpg")
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("\n".join(ids) + "\n")
    result = run_tool("split", "voc", "--root", tmp_path, "--shots", "1,3", "--seeds", "0-1",
                      "--output-dir", tmp_path / "vocsplit")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / "vocsplit" / "seed1" / "box_3shot_cow_train.txt").read_text().split()
    assert 2 <= len(lines) <= 3 and all(line.startswith("datasets/VOC2007/JPEGImages/") for line in lines)
    records = load_fewshot_voc(tmp_path, tmp_path / "vocsplit", ["cow", "dog"], 3, 1, split=1)
    assert [r["annotations"][0]["category_id"] for r in records] == [0, 0, 0, 1, 1, 1]


def _box(ann_id, cat, bbox, image_id=1):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": 0}


BAD_ANNOTATIONS = {
    "non-positive box": ([_box(1, 7, [2, 2, 0, 5])], "annotation 1: non-positive box size"),
    "box outside image": ([_box(1, 7, [20, 2, 30, 5])], "annotation 1: box [20.0, 2.0, 50.0, 7.0] outside image 1"),
    "unknown category": ([_box(1, 99, [2, 2, 5, 5])], "annotation 1: unknown category id 99"),
    "too few boxes": ([_box(1, 7, [2, 2, 5, 5]), _box(2, 3, [2, 2, 5, 5])],
                      "class 'ball': 2 shots requested but it has only 1 boxes in 1 images"),
}


@pytest.mark.parametrize("case", sorted(BAD_ANNOTATIONS))
def test_bad_custom_annotations_are_one_line_errors(run_tool, one_line_error, tmp_path, case):
    annotations, message = BAD_ANNOTATIONS[case]
    train = write_custom(tmp_path, annotations)
    result = run_tool("split", "custom", "--annotations", train, "--shots", "1,2", "--seeds", "0",
                      "--output-dir", tmp_path / "o")
    one_line_error(result, str(train), message)


def test_bad_files_and_options_are_one_line_errors(run_tool, one_line_error, tmp_path):
    out = tmp_path / "o"
    missing = tmp_path / "nope.json"
    one_line_error(run_tool("split", "coco", "--annotations", missing, "--output-dir", out), str(missing),
                   "file not found")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"images": [\n}')
    one_line_error(run_tool("split", "coco", "--annotations", corrupt, "--output-dir", out), str(corrupt),
                   "not valid JSON")
    train = write_custom(tmp_path / "c")
    one_line_error(run_tool("split", "custom", "--annotations", train, "--classes", "kite,plane", "--output-dir", out),
                   str(train), "class 'plane' is not among the categories")
    (tmp_path / "c" / "images" / "train" / "4.png").unlink()
    one_line_error(run_tool("split", "custom", "--annotations", train, "--output-dir", out), "4.png", "image not found")
    one_line_error(run_tool("split", "coco", "--annotations", train, "--seeds", "x-2", "--output-dir", out), "--seeds")
    one_line_error(run_tool("split", "voc", "--output-dir", out), "--root")
    one_line_error(run_tool("split", "voc", "--root", tmp_path, "--output-dir", out), str(tmp_path), "no VOC2007/")
    one_line_error(run_tool("split", "imagenet", "--output-dir", out), "imagenet")
    assert not out.exists()
