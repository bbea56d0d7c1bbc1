import json

import pytest
from PIL import Image

from defrcn.data.catalog import class_lists, load_dataset
from defrcn.data.classes import COCO_CATEGORIES, COCO_NOVEL_CLASSES
from defrcn.errors import InputError


def save_image(path, size=(48, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def save_json(path, images, annotations, categories):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations,
                                "categories": categories}))


def img(i):
    return {"id": i, "file_name": f"{i}.jpg", "width": 48, "height": 40}


def box(ann_id, image_id, cat, x=1):
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": [x, 2, 5, 5], "iscrowd": 0}


# ---------------------------------------------------------------- custom / toy
CUSTOM_CATS = [{"id": 9, "name": "kite"}, {"id": 2, "name": "ball"}, {"id": 30, "name": "cone"}]


@pytest.fixture
def custom_root(tmp_path):
    for part in ("train", "test"):
        for i in (1, 2, 3):
            save_image(tmp_path / "images" / part / f"{i}.jpg")
    save_json(tmp_path / "annotations" / "train.json", [img(1), img(2), img(3)],
              [box(1, 1, 9), box(2, 2, 2), box(3, 3, 30), box(4, 3, 9, x=20)], CUSTOM_CATS)
    save_json(tmp_path / "annotations" / "test.json", [img(1), img(2), img(3)], [box(1, 1, 30), box(2, 2, 9)], CUSTOM_CATS)
    (tmp_path / "fewshot").mkdir()
    for name, cat, i in (("kite", 9, 1), ("cone", 30, 3), ("ball", 2, 2)):
        save_json(tmp_path / "fewshot" / f"full_box_1shot_{name}_trainval.json", [img(i)], [box(7, i, cat)],
                  CUSTOM_CATS)
    return tmp_path


def test_custom_sets_follow_the_setting(custom_root):
    kw = dict(root=custom_root, novel_classes=["kite"])
    records, meta = load_dataset("custom", "train_base", **kw)
    assert meta.class_names == ["ball", "cone"] and meta.category_ids == [2, 30] and meta.json_file is None
    assert [r["image_id"] for r in records] == [2, 3] and len(records[1]["annotations"]) == 1
    records, meta = load_dataset("toy", "test", setting="tfa", **kw)
    assert meta.class_names == ["ball", "kite", "cone"] and meta.novel_classes == ["kite"]
    assert len(records) == 3 and meta.evaluator == "coco"
    assert meta.json_file == str(custom_root / "annotations" / "test.json")
    records, meta = load_dataset("custom", "test", setting="fsod", **kw)
    assert meta.class_names == ["kite"] and meta.base_classes == []
    records, meta = load_dataset("custom", "train_fewshot", setting="tfa", shots=1, split_seed=0, **kw)
    assert meta.name == "custom_train_fewshot_all_1shot_seed0"
    assert sorted((r["image_id"], r["annotations"][0]["category_id"]) for r in records) == [(1, 1), (2, 0), (3, 2)]
    records, meta = load_dataset("custom", "train_fewshot", setting="fsod", shots=1, **kw)
    assert [r["image_id"] for r in records] == [1] and meta.class_names == ["kite"]


def test_custom_bad_input(custom_root):
    with pytest.raises(InputError, match=r"annotations/train.json: novel class 'plane' is not a category"):
        load_dataset("custom", "train_base", root=custom_root, novel_classes=["plane"])
    with pytest.raises(InputError, match="setting 'fsod' or 'tfa'"):
        load_dataset("custom", "train_fewshot", root=custom_root, novel_classes=["kite"], shots=1)
    with pytest.raises(InputError, match="shots >= 1"):
        load_dataset("custom", "train_fewshot", root=custom_root, novel_classes=["kite"], setting="fsod")
    with pytest.raises(InputError, match="full_box_2shot_kite_trainval.json"):
        load_dataset("custom", "train_fewshot", root=custom_root, novel_classes=["kite"], setting="fsod", shots=2)
    with pytest.raises(InputError, match="test.json: no images with boxes"):
        load_dataset("custom", "test", root=custom_root, setting="fsod", novel_classes=["ball"])
    with pytest.raises(InputError, match="share 'kite'"):
        load_dataset("custom", "test", root=custom_root, base_classes=["kite", "ball"], novel_classes=["kite"])
    with pytest.raises(InputError, match="unknown 'imagenet'"):
        load_dataset("imagenet", "test", root=custom_root)


def test_empty_training_set_is_an_input_error(custom_root):
    save_json(custom_root / "annotations" / "train.json", [img(1)], [box(1, 1, 9)], CUSTOM_CATS)
    with pytest.raises(InputError, match="train.json: no images with boxes of the classes ball, cone"):
        load_dataset("custom", "train_base", root=custom_root, novel_classes=["kite"])


# ---------------------------------------------------------------- COCO
COCO_CATS = [{"id": cid, "name": name} for cid, name in COCO_CATEGORIES]


@pytest.fixture
def coco_root(tmp_path):
    for i in (1, 2):
        save_image(tmp_path / "coco" / "trainval2014" / f"{i}.jpg")
    for i in (4, 5):
        save_image(tmp_path / "coco" / "val2014" / f"{i}.jpg")
    split = tmp_path / "cocosplit"
    save_json(split / "datasplit" / "trainvalno5k.json", [img(1), img(2)],
              [box(1, 1, 1), box(2, 1, 8), box(3, 2, 18)], COCO_CATS)  # person, truck, dog
    save_json(split / "datasplit" / "5k.json", [img(4), img(5)], [box(1, 4, 8)], COCO_CATS)
    for k, name in enumerate(COCO_NOVEL_CLASSES):
        cid = next(c for c, n in COCO_CATEGORIES if n == name)
        save_json(split / "seed1" / f"full_box_1shot_{name}_trainval.json", [img(1)], [box(k, 1, cid, x=k)],
                  COCO_CATS)
    return tmp_path


def test_coco_sets(coco_root):
    records, meta = load_dataset("coco", "train_base", root=coco_root)
    assert meta.num_classes == 60 and meta.category_ids[0] == 8
    assert [(r["image_id"], [a["category_id"] for a in r["annotations"]]) for r in records] == [(1, [0])]
    records, meta = load_dataset("coco", "test", root=coco_root, setting="tfa")
    assert meta.num_classes == 80 and len(records) == 2 and records[1]["annotations"] == []
    assert meta.json_file == str(coco_root / "cocosplit" / "datasplit" / "5k.json")
    assert records[0]["file_name"] == str(coco_root / "coco" / "val2014" / "4.jpg")
    records, meta = load_dataset("coco", "train_fewshot", root=coco_root, setting="fsod", shots=1, split_seed=1)
    assert meta.class_names == list(COCO_NOVEL_CLASSES) and meta.category_ids[-1] == 72
    (rec,) = records  # 20 class files, all on image 1: merged into one record
    assert [a["category_id"] for a in rec["annotations"]] == list(range(20))


def test_coco_class_lists_can_be_narrowed(coco_root):
    assert class_lists("coco", base_classes=["truck"], novel_classes=["dog", "person"]) == (
        ["truck"], ["dog", "person"], ["person", "truck", "dog"])
    records, meta = load_dataset("coco", "test", root=coco_root, setting="base", base_classes=["truck"],
                                 novel_classes=["dog"])
    assert meta.class_names == ["truck"] and meta.category_ids == [8]
    with pytest.raises(InputError, match="'zebu' is not a COCO class"):
        class_lists("coco", novel_classes=["zebu"])


# ---------------------------------------------------------------- VOC
def voc_xml(objects):
    body = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin>"
                   f"<xmax>20</xmax><ymax>30</ymax></bndbox></object>" for n in objects)
    return f"<annotation><size><width>48</width><height>40</height></size>{body}</annotation>"


@pytest.fixture
def voc_root(tmp_path):
    files = {"2007": {"000001": ["bird", "dog"], "000002": ["car"], "000009": ["bus", "cow", "motorbike", "sofa"]},
             "2012": {"2009_000001": ["bird", "boat"]}}
    sets = {"2007": {"trainval": ["000001", "000002", "000009"], "test": ["000002", "000001"]},
            "2012": {"trainval": ["2009_000001"]}}
    for year, items in files.items():
        voc = tmp_path / f"VOC{year}"
        (voc / "Annotations").mkdir(parents=True)
        (voc / "ImageSets" / "Main").mkdir(parents=True)
        for file_id, objects in items.items():
            (voc / "Annotations" / f"{file_id}.xml").write_text(voc_xml(objects))
            save_image(voc / "JPEGImages" / f"{file_id}.jpg")
        for name, ids in sets[year].items():
            (voc / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "vocsplit").mkdir()
    for name in ("bird", "bus", "cow", "motorbike", "sofa"):
        lines = ["datasets/VOC2012/JPEGImages/2009_000001.jpg"] if name == "bird" else \
            ["datasets/VOC2007/JPEGImages/000009.jpg"]
        (tmp_path / "vocsplit" / f"box_1shot_{name}_train.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_voc_sets(voc_root):
    records, meta = load_dataset("voc", "train_base", root=voc_root, voc_split=1)
    assert meta.evaluator == "voc" and meta.num_classes == 15 and meta.category_ids == list(range(1, 16))
    assert [r["image_id"] for r in records] == ["000001", "000002", "2009_000001"]  # 000009: novel objects only
    records, meta = load_dataset("voc", "test", root=voc_root, voc_split=1, setting="tfa")
    assert meta.name == "voc1_test_all" and meta.class_names[15:] == ["bird", "bus", "cow", "motorbike", "sofa"]
    assert [[a["category_id"] for a in r["annotations"]] for r in records] == [[4], [15, 8]]
    records, meta = load_dataset("voc", "train_fewshot", root=voc_root, voc_split=1, setting="fsod", shots=1)
    assert [(r["image_id"], r["annotations"][0]["category_id"]) for r in records] == [
        ("2009_000001", 0), ("000009", 1), ("000009", 2), ("000009", 3), ("000009", 4)]
    with pytest.raises(InputError, match="data.voc_split"):
        load_dataset("voc", "test", root=voc_root)


def test_synthetic_data_set_reads_as_toy(tmp_path):
    from defrcn.data.split_making import write_coco_splits
    from defrcn.data.synthetic import NOVEL_CLASS_NAMES, write_synthetic_dataset

    write_synthetic_dataset(str(tmp_path), seed=0, train_images=40, test_images=4, size=96)
    write_coco_splits(tmp_path / "annotations" / "train.json", [1, 2], [0], tmp_path / "fewshot", strict=True,
                      image_dirs=[tmp_path / "images" / "train"])
    kw = dict(root=tmp_path, novel_classes=list(NOVEL_CLASS_NAMES))
    base, meta = load_dataset("toy", "train_base", **kw)
    assert meta.novel_classes == [] and len(meta.base_classes) == meta.num_classes > 0 and base
    shots, meta = load_dataset("toy", "train_fewshot", setting="tfa", shots=2, **kw)
    assert sum(len(r["annotations"]) for r in shots) == 2 * meta.num_classes
    test, meta = load_dataset("toy", "test", setting="tfa", **kw)
    assert len(test) == 4 and meta.novel_classes == list(NOVEL_CLASS_NAMES)
