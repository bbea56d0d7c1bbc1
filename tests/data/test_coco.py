import json
import logging

import pytest
from PIL import Image

from defrcn.data.coco import load_coco_json, read_json
from defrcn.errors import InputError

CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "train"}, {"id": 12, "name": "kite"}]


def write_image(path, width=40, height=30):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 20, 200)).save(path)


def write_json(path, images, annotations, categories=CATEGORIES):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def ann(ann_id, image_id, category_id, bbox, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


@pytest.fixture
def images_dir(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / "img" / name)
    return tmp_path / "img"


IMAGES = [{"id": 10, "file_name": "a.jpg", "width": 40, "height": 30},
          {"id": 20, "file_name": "b.jpg", "width": 40, "height": 30},
          {"id": 30, "file_name": "c.jpg", "width": 40, "height": 30}]


def test_reads_boxes_as_xyxy_with_contiguous_ids_by_name(tmp_path, images_dir):
    anns = [ann(1, 10, 7, [1, 2, 10, 5]), ann(2, 10, 3, [0, 0, 4, 4]), ann(3, 20, 12, [5, 5, 3, 3]),
            ann(4, 30, 3, [2, 2, 5, 5], iscrowd=1)]
    js = write_json(tmp_path / "a.json", IMAGES, anns)
    records = load_coco_json(js, ["train", "car"], [images_dir])
    assert [r["image_id"] for r in records] == [10]  # image 20 has only kite, 30 only a crowd box
    rec = records[0]
    assert rec["file_name"] == str(images_dir / "a.jpg") and (rec["height"], rec["width"]) == (30, 40)
    assert rec["annotations"] == [
        {"bbox": [1.0, 2.0, 11.0, 7.0], "category_id": 0, "difficult": False},
        {"bbox": [0.0, 0.0, 4.0, 4.0], "category_id": 1, "difficult": False}]
    kept = load_coco_json(js, ["car", "train", "kite"], [images_dir], keep_empty=True)
    assert [r["image_id"] for r in kept] == [10, 20, 30] and kept[2]["annotations"] == []


def test_lenient_mode_clips_and_drops_degenerate_boxes_with_a_count(tmp_path, images_dir, caplog):
    anns = [ann(1, 10, 3, [30, 20, 20, 20]), ann(2, 10, 3, [5, 5, 0, 4]), ann(3, 10, 3, [50, 5, 4, 4])]
    js = write_json(tmp_path / "a.json", IMAGES, anns)
    with caplog.at_level(logging.INFO, logger="defrcn.data.coco"):
        records = load_coco_json(js, ["car"], [images_dir])
    assert records[0]["annotations"][0]["bbox"] == [30.0, 20.0, 40.0, 30.0]
    assert len(records[0]["annotations"]) == 1
    assert "2 degenerate" in caplog.text


def test_image_folders_are_searched_in_order_and_size_read_when_absent(tmp_path):
    write_image(tmp_path / "val" / "x.jpg", 24, 16)
    js = write_json(tmp_path / "a.json", [{"id": 1, "file_name": "x.jpg"}], [ann(1, 1, 3, [1, 1, 4, 4])])
    (rec,) = load_coco_json(js, ["car"], [tmp_path / "trainval", tmp_path / "val"])
    assert rec["file_name"] == str(tmp_path / "val" / "x.jpg") and (rec["height"], rec["width"]) == (16, 24)


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("annotations, images, message", [
    ([ann(1, 10, 99, [1, 1, 2, 2])], IMAGES, "unknown category id 99"),
    ([ann(1, 77, 3, [1, 1, 2, 2])], IMAGES, "unknown image id 77"),
    ([ann(1, 10, 3, [1, 1, 2])], IMAGES, "bbox must be 4 numbers"),
    ([], IMAGES + [IMAGES[0]], "duplicate image id 10"),
])
def test_corrupt_content_is_fatal_in_both_modes(tmp_path, images_dir, annotations, images, message, strict):
    js = write_json(tmp_path / "a.json", images, annotations)
    with pytest.raises(InputError, match=message) as err:
        load_coco_json(js, ["car"], [images_dir], strict=strict)
    assert str(js) in str(err.value)


@pytest.mark.parametrize("bbox, message", [
    ([1, 1, 0, 5], "non-positive box size"), ([1, 1, 5, -2], "non-positive box size"),
    ([30, 20, 12, 5], "outside image"), ([-3, 0, 5, 5], "outside image")])
def test_strict_mode_rejects_bad_boxes(tmp_path, images_dir, bbox, message):
    js = write_json(tmp_path / "a.json", IMAGES, [ann(5, 10, 3, bbox)])
    with pytest.raises(InputError, match=message) as err:
        load_coco_json(js, ["car"], [images_dir], strict=True)
    assert str(err.value).startswith(f"{js}: annotation 5")


def test_strict_mode_tolerates_one_pixel_overhang(tmp_path, images_dir):
    js = write_json(tmp_path / "a.json", IMAGES, [ann(5, 10, 3, [-0.5, 0, 40.9, 30.5])])
    (rec,) = load_coco_json(js, ["car"], [images_dir], strict=True)
    assert rec["annotations"][0]["bbox"] == [0.0, 0.0, 40.0, 30.0]


def test_missing_and_corrupt_files_name_the_file(tmp_path, images_dir):
    with pytest.raises(InputError, match="file not found") as err:
        read_json(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(err.value)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(InputError, match=r"bad.json: not valid JSON \(line 2"):
        read_json(bad)
    (tmp_path / "nokey.json").write_text('{"images": [], "annotations": []}')
    with pytest.raises(InputError, match="missing list 'categories'"):
        read_json(tmp_path / "nokey.json")


def test_missing_image_and_unknown_class_name_are_input_errors(tmp_path, images_dir):
    js = write_json(tmp_path / "a.json", [{"id": 1, "file_name": "gone.jpg", "width": 4, "height": 4}],
                    [ann(1, 1, 3, [0, 0, 2, 2])])
    with pytest.raises(InputError, match="image not found") as err:
        load_coco_json(js, ["car"], [images_dir])
    assert str(images_dir / "gone.jpg") in str(err.value)
    with pytest.raises(InputError, match="class 'boat' is not among the categories"):
        load_coco_json(js, ["boat"], [images_dir])


def test_strict_mode_reads_missing_sizes_before_checking_boxes(tmp_path):
    write_image(tmp_path / "img" / "x.jpg", 24, 16)
    js = write_json(tmp_path / "a.json", [{"id": 1, "file_name": "x.jpg"}], [ann(1, 1, 3, [20, 1, 9, 4])])
    with pytest.raises(InputError, match="outside image 1 of size 24x16"):
        load_coco_json(js, ["car"], [tmp_path / "img"], strict=True)
