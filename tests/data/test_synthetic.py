"""The synthetic data set: deterministic, COCO-valid, base/novel split as designed."""
import json

import numpy as np
import pytest
from PIL import Image

from defrcn.data import synthetic
from defrcn.errors import InputError

SIZE = 128


def _write(root, seed=0):
    synthetic.write_synthetic_dataset(str(root), seed=seed, train_images=14, test_images=6,
                                      size=SIZE)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("synthetic"))


def _json(root, split):
    return json.loads((root / "annotations" / f"{split}.json").read_text())


def test_same_seed_gives_identical_files(dataset, tmp_path):
    again = _write(tmp_path / "again")
    for split in ("train", "test"):
        path = f"annotations/{split}.json"
        assert (dataset / path).read_bytes() == (again / path).read_bytes()
    for image in sorted((dataset / "images" / "train").iterdir()):
        assert image.read_bytes() == (again / "images" / "train" / image.name).read_bytes()


def test_other_seed_gives_other_data(dataset, tmp_path):
    other = _write(tmp_path / "other", seed=1)
    assert _json(dataset, "train")["annotations"] != _json(other, "train")["annotations"]


def test_categories_are_non_contiguous_and_named(dataset):
    categories = _json(dataset, "train")["categories"]
    ids = [c["id"] for c in categories]
    assert len(set(ids)) == len(ids) == len(synthetic.SYNTHETIC_CLASSES)
    assert ids != list(range(1, len(ids) + 1)) and ids != list(range(len(ids)))
    names = [c["name"] for c in categories]
    info = _json(dataset, "train")["info"]
    assert 6 <= len(info["base_classes"]) <= 8 and 2 <= len(info["novel_classes"]) <= 3
    assert sorted(info["base_classes"] + info["novel_classes"]) == sorted(names)


def test_boxes_lie_inside_images_and_are_big_enough(dataset):
    for split in ("train", "test"):
        coco = _json(dataset, split)
        images = {im["id"]: im for im in coco["images"]}
        assert coco["annotations"]
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            im = images[ann["image_id"]]
            assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
            assert max(w, h) >= 0.8 * synthetic.MIN_OBJECT_FRACTION * SIZE
            assert ann["area"] == w * h and ann["iscrowd"] == 0
        for im in coco["images"]:
            with Image.open(dataset / "images" / split / im["file_name"]) as pil:
                assert pil.size == (im["width"], im["height"]) and pil.mode == "RGB"


def test_train_images_hold_base_only_or_novel_only(dataset):
    coco = _json(dataset, "train")
    novel_names = set(coco["info"]["novel_classes"])
    novel_ids = {c["id"] for c in coco["categories"] if c["name"] in novel_names}
    kinds = {}
    for ann in coco["annotations"]:
        kinds.setdefault(ann["image_id"], set()).add(ann["category_id"] in novel_ids)
    assert all(len(k) == 1 for k in kinds.values())
    seen = {a["category_id"] for a in coco["annotations"]}
    assert novel_ids <= seen  # every novel class appears in train
    assert any(k == {False} for k in kinds.values())


def test_object_pixels_differ_from_the_background():
    rng = np.random.default_rng(0)
    image, objects = synthetic.render_image(rng, SIZE, [0, 1])
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert len(objects) == 2
    (ci, (x, y, w, h)) = objects[0]
    centre = image[y + h // 2, x + w // 2].astype(int)
    assert abs(centre - np.array(synthetic.SYNTHETIC_CLASSES[ci].colour)).max() < 80


def test_a_file_as_out_dir_is_an_input_error(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        synthetic.write_synthetic_dataset(str(path), train_images=2, test_images=1)
