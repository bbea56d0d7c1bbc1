import json

import pytest
from PIL import Image

from defrcn.data import custom
from defrcn.data.fewshot_coco import fewshot_file_name
from defrcn.errors import InputError

CATEGORIES = [{"id": 40, "name": "star"}, {"id": 5, "name": "ring"}, {"id": 17, "name": "cross"}]


def write_custom(root, part, images, annotations, categories=CATEGORIES, folder=None):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for img in images:
        path = root / "images" / (part if folder is None else folder) / img["file_name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (img["width"], img["height"])).save(path)
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / f"{part}.json").write_text(json.dumps(data))


IMAGES = [{"id": 901, "file_name": "sub/a.png", "width": 32, "height": 24},
          {"id": 7, "file_name": "b.png", "width": 32, "height": 24}]
ANNS = [{"id": 1, "image_id": 901, "category_id": 40, "bbox": [1, 1, 5, 5]},
        {"id": 2, "image_id": 7, "category_id": 5, "bbox": [2, 2, 8, 8]},
        {"id": 3, "image_id": 7, "category_id": 17, "bbox": [10, 4, 8, 8]}]


def test_classes_are_sorted_by_category_id(tmp_path):
    write_custom(tmp_path, "train", IMAGES, ANNS)
    assert custom.read_classes(custom.annotation_file(tmp_path, "train")) == (["ring", "cross", "star"], [5, 17, 40])


def test_images_found_in_part_folder_or_images_root(tmp_path):
    write_custom(tmp_path, "train", IMAGES, ANNS)
    write_custom(tmp_path, "test", IMAGES, ANNS, folder="")  # test images directly under ROOT/images
    train = custom.load_custom(tmp_path, "train", ["ring", "star"])
    assert [r["file_name"] for r in train] == [str(tmp_path / "images" / "train" / "sub" / "a.png"),
                                               str(tmp_path / "images" / "train" / "b.png")]
    assert [[a["category_id"] for a in r["annotations"]] for r in train] == [[1], [0]]
    test = custom.load_custom(tmp_path, "test", ["cross"], keep_empty=True)
    assert test[0]["file_name"] == str(tmp_path / "images" / "sub" / "a.png") and test[0]["annotations"] == []


def test_custom_data_is_strict(tmp_path):
    write_custom(tmp_path, "train", IMAGES, ANNS + [{"id": 9, "image_id": 7, "category_id": 5, "bbox": [30, 2, 8, 8]}])
    with pytest.raises(InputError, match="annotation 9: box .* outside image 7"):
        custom.load_custom(tmp_path, "train", ["ring"])
    write_custom(tmp_path, "train", IMAGES, ANNS)
    (tmp_path / "images" / "train" / "b.png").unlink()
    with pytest.raises(InputError, match="b.png: image not found"):
        custom.load_custom(tmp_path, "train", ["ring"])
    with pytest.raises(InputError, match="annotations/train.json: class 'circle' is not a category"):
        custom.load_custom(tmp_path, "train", ["circle"])
    with pytest.raises(InputError, match="test.json: file not found"):
        custom.load_custom(tmp_path, "test", ["ring"])


def test_fewshot_files_read_from_root_fewshot(tmp_path):
    write_custom(tmp_path, "train", IMAGES, ANNS)
    (tmp_path / "fewshot" / "seed1").mkdir(parents=True)
    for name, ann in (("star", ANNS[0]), ("cross", ANNS[2])):
        image = next(i for i in IMAGES if i["id"] == ann["image_id"])
        data = {"images": [image], "annotations": [ann], "categories": CATEGORIES}
        (tmp_path / "fewshot" / "seed1" / fewshot_file_name(1, name)).write_text(json.dumps(data))
    records = custom.load_fewshot_custom(tmp_path, ["cross", "star"], 1, 1)
    assert [(r["image_id"], r["annotations"][0]["category_id"]) for r in records] == [(7, 0), (901, 1)]
    with pytest.raises(InputError, match="fewshot/full_box_1shot_cross_trainval.json"):
        custom.load_fewshot_custom(tmp_path, ["cross"], 1, 0)
