import json
import random

import pytest

from defrcn.data import split_making as sm
from defrcn.data.fewshot_coco import load_fewshot_coco
from defrcn.errors import InputError

SHOTS = [1, 2, 3, 5, 10]
CATS = [{"id": 25, "name": "kite"}, {"id": 4, "name": "ball"}, {"id": 11, "name": "traffic cone"}]


def fake_coco(n_images=40, seed=123):
    rng = random.Random(seed)
    images = [{"id": 1000 + i, "file_name": f"{i}.jpg", "width": 64, "height": 64} for i in range(n_images)]
    anns = []
    for image in images:
        for cat in CATS:
            for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
                anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": cat["id"],
                             "bbox": [1, 1, 10, 10], "iscrowd": 0})
        anns.append({"id": len(anns) + 1, "image_id": image["id"], "category_id": 4, "bbox": [0, 0, 9, 9],
                     "iscrowd": 1})
    return {"info": {"v": 1}, "licenses": [], "images": images, "annotations": anns, "categories": CATS}


def boxes_of(data, cat_id, image_ids):
    return sum(1 for a in data["annotations"] if a["category_id"] == cat_id and a["image_id"] in image_ids
               and not a["iscrowd"])


def test_parse_int_list():
    assert sm.parse_int_list("0-9", "--seeds") == list(range(10))
    assert sm.parse_int_list("0,3,5", "--seeds") == [0, 3, 5]
    assert sm.parse_int_list("5,1-3,2", "--shots") == [1, 2, 3, 5]
    for bad in ("a", "5-2", "-1", ""):
        with pytest.raises(InputError, match="--seeds"):
            sm.parse_int_list(bad, "--seeds")


def test_coco_splits_have_exactly_k_boxes_nested_and_seeded():
    data = fake_coco()
    plans = {seed: sm.sample_coco_splits(data, SHOTS, seed) for seed in range(5)}
    for plan in plans.values():
        for cat in CATS:
            previous = []
            for k in SHOTS:
                chosen = plan[(k, cat["id"])]
                assert len(set(chosen)) == len(chosen)
                assert boxes_of(data, cat["id"], set(chosen)) == k
                assert chosen[:len(previous)] == previous  # the K-shot set holds the smaller-K sets
                previous = chosen
    assert sm.sample_coco_splits(data, SHOTS, 3) == plans[3]
    assert len({tuple(plan[(10, 4)]) for plan in plans.values()}) == 5  # each seed picks differently
    assert list(plans[0]) == [(k, c) for c in (4, 11, 25) for k in SHOTS]  # classes in ascending id


def test_dead_ends_are_avoided_and_impossible_counts_are_errors():
    groups = {"a": [0, 0], "b": [0, 0], "c": [0, 0, 0]}  # TFA may take a 2-box image for K=3 and loop forever
    for seed in range(20):
        assert sm.sample_coco_class(groups, [3], random.Random(seed)) == {3: ["c"]}
    groups = {"a": [0], "b": [0, 0], "c": [0, 0, 0]}
    for seed in range(20):  # K=1 must take "a"; K=3 then needs "b"; K=6 adds "c"
        assert sm.sample_coco_class(groups, [1, 3, 6], random.Random(seed)) == {1: ["a"], 3: ["a", "b"],
                                                                                6: ["a", "b", "c"]}
    with pytest.raises(InputError, match="class 'kite': 7 shots requested but it has only 6 boxes in 3 images"):
        sm.sample_coco_class(groups, [1, 7], random.Random(0), "kite")
    with pytest.raises(InputError, match="class 'kite': cannot pick nested sets of exactly 1, 2"):
        sm.sample_coco_class(groups, [1, 2], random.Random(0), "kite")


def test_voc_lists_are_nested_and_hold_at_least_k_objects():
    rng = random.Random(7)
    files = [(f"datasets/VOC2007/JPEGImages/{i:06d}.jpg", rng.choice([1, 1, 2, 4])) for i in range(30)]
    counts = dict(files)
    results = [sm.sample_voc_class(files, SHOTS, random.Random(seed)) for seed in range(4)]
    for result in results:
        previous = []
        for k in SHOTS:
            lines = result[k]
            assert len(set(lines)) == len(lines) <= k and sum(counts[line] for line in lines) >= k
            assert lines[:len(previous)] == previous
            previous = lines
    assert sm.sample_voc_class(files, SHOTS, random.Random(2)) == results[2]
    assert len({tuple(r[10]) for r in results}) == 4
    with pytest.raises(InputError, match="class 'cow': 30 shots requested but it has only 3 objects"):
        sm.sample_voc_class([("x", 1), ("y", 2)], [1, 30], random.Random(0), "cow")


def test_written_coco_files_follow_tfa_layout_and_read_back(tmp_path):
    data = fake_coco()
    (tmp_path / "train.json").write_text(json.dumps(data))
    count = sm.write_coco_splits(tmp_path / "train.json", [1, 5], [0, 2], tmp_path / "out")
    assert count == 2 * 2 * 3
    top = tmp_path / "out" / "full_box_5shot_traffic cone_trainval.json"
    saved = json.loads(top.read_text())
    assert list(saved) == ["info", "licenses", "images", "annotations", "categories"]
    assert saved["categories"] == CATS and saved["info"] == {"v": 1}
    assert len(saved["annotations"]) == 5 and {a["category_id"] for a in saved["annotations"]} == {11}
    assert {a["image_id"] for a in saved["annotations"]} == {i["id"] for i in saved["images"]}
    assert (tmp_path / "out" / "seed2" / "full_box_1shot_kite_trainval.json").is_file()
    assert not (tmp_path / "out" / "seed0").exists()
    records = load_fewshot_coco(tmp_path / "out", ["kite", "ball"], 5, 2, [tmp_path], check_images=False)
    assert sum(len(r["annotations"]) for r in records) == 10


def test_written_files_depend_only_on_the_seed(tmp_path):
    data = fake_coco()
    (tmp_path / "train.json").write_text(json.dumps(data))
    sm.write_coco_splits(tmp_path / "train.json", [2], [1], tmp_path / "a", classes=["ball"])
    sm.write_coco_splits(tmp_path / "train.json", [2], [1, 4], tmp_path / "b")
    name = "full_box_2shot_ball_trainval.json"
    assert (tmp_path / "a" / "seed1" / name).read_text() == (tmp_path / "b" / "seed1" / name).read_text()
    assert (tmp_path / "b" / "seed4" / name).read_text() != (tmp_path / "b" / "seed1" / name).read_text()
