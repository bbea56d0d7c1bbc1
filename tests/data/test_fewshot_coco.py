import json

import pytest
from PIL import Image

from defrcn.data.fewshot_coco import fewshot_file_name, load_fewshot_coco, seed_dir
from defrcn.errors import InputError

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 10, "name": "traffic light"}, {"id": 18, "name": "dog"}]


def write_split_file(folder, shots, name, images, annotations):
    folder.mkdir(parents=True, exist_ok=True)
    data = {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": CATEGORIES}
    (folder / fewshot_file_name(shots, name)).write_text(json.dumps(data))


def image(image_id, name):
    return {"id": image_id, "file_name": name, "width": 50, "height": 40}


def box(ann_id, image_id, cat, x):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, 2, 6, 8], "iscrowd": 0}


@pytest.fixture
def coco_root(tmp_path):
    for folder, name in (("trainval2014", "1.jpg"), ("trainval2014", "2.jpg"), ("val2014", "3.jpg")):
        (tmp_path / "coco" / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (50, 40)).save(tmp_path / "coco" / folder / name)
    return tmp_path


def image_dirs(root):
    return [root / "coco" / d for d in ("trainval2014", "val2014", "train2014")]


def write_seed(folder):
    # image 2 is chosen for both classes; car's 1-shot file holds two boxes (no cut to K)
    write_split_file(folder, 1, "car", [image(1, "1.jpg"), image(2, "2.jpg")],
                     [box(1, 1, 3, 1), box(2, 2, 3, 5), box(9, 2, 3, 20)])
    write_split_file(folder, 1, "traffic light", [image(2, "2.jpg"), image(3, "3.jpg")],
                     [box(3, 2, 10, 30), box(4, 3, 10, 8)])


@pytest.mark.parametrize("seed0_folder", ["", "seed0"])
def test_merges_class_files_by_image_and_accepts_both_seed0_layouts(coco_root, seed0_folder):
    split = coco_root / "cocosplit"
    write_seed(split / seed0_folder if seed0_folder else split)
    records = load_fewshot_coco(split, ["traffic light", "car"], 1, 0, image_dirs(coco_root))
    by_id = {r["image_id"]: r for r in records}
    assert sorted(by_id) == [1, 2, 3]
    assert [(a["category_id"], a["bbox"][0]) for a in by_id[2]["annotations"]] == [(0, 30.0), (1, 5.0), (1, 20.0)]
    assert by_id[3]["file_name"] == str(coco_root / "coco" / "val2014" / "3.jpg")
    assert sum(len(r["annotations"]) for r in records) == 5  # 3 car boxes kept although K = 1


def test_seed_folders_and_missing_files_are_named(coco_root):
    split = coco_root / "cocosplit"
    write_seed(split / "seed2")
    records = load_fewshot_coco(split, ["car"], 1, 2, image_dirs(coco_root))
    assert [r["image_id"] for r in records] == [1, 2]
    with pytest.raises(InputError, match="seed 3 not found"):
        load_fewshot_coco(split, ["car"], 1, 3, image_dirs(coco_root))
    with pytest.raises(InputError) as err:
        load_fewshot_coco(split, ["car", "dog"], 1, 2, image_dirs(coco_root))
    assert str(split / "seed2" / "full_box_1shot_dog_trainval.json") in str(err.value)
    with pytest.raises(InputError, match="full_box_5shot_car_trainval.json"):
        load_fewshot_coco(split, ["car"], 5, 2, image_dirs(coco_root))


def test_seed0_prefers_the_seed0_folder(tmp_path):
    (tmp_path / "seed0").mkdir()
    assert seed_dir(tmp_path, 0) == str(tmp_path / "seed0")
    assert seed_dir(tmp_path / "seed0", 0) == str(tmp_path / "seed0")
    with pytest.raises(InputError, match="split folder not found"):
        seed_dir(tmp_path / "nope", 0)
