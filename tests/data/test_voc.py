import pytest
from PIL import Image

from defrcn.data.voc import load_fewshot_voc, load_voc, read_voc_xml, voc_year
from defrcn.errors import InputError

# file id -> objects (name, xmin, ymin, xmax, ymax, difficult)
VOC2007 = {
    "000001": [("bird", 10, 20, 30, 40, 0), ("dog", 1, 1, 50, 50, 0)],
    "000002": [("bird", 5, 5, 15, 15, 1), ("bird", 20, 20, 40, 44, 0), ("bird", 2, 3, 9, 9, 0)],
    "000003": [("cow", 3, 4, 20, 30, 0)],
}
VOC2012 = {"2008_000010": [("dog", 4, 4, 30, 30, 1), ("bird", 6, 6, 12, 12, 0)]}


def xml_text(objects, width=64, height=48):
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for n, x0, y0, x1, y1, d in objects)
    return f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>{objs}</annotation>"


def write_voc(root, year, files, sets):
    base = root / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    for file_id, objects in files.items():
        (base / "Annotations" / f"{file_id}.xml").write_text(xml_text(objects))
        Image.new("RGB", (64, 48)).save(base / "JPEGImages" / f"{file_id}.jpg")
    for name, ids in sets.items():
        (base / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(i + "\n" for i in ids))


@pytest.fixture
def voc_root(tmp_path):
    write_voc(tmp_path, 2007, VOC2007, {"trainval": ["000001", "000002"], "test": ["000003", "000001"]})
    write_voc(tmp_path, 2012, VOC2012, {"trainval": ["2008_000010"]})
    return tmp_path


def test_xml_box_convention_and_difficult_flag(voc_root):
    ann = read_voc_xml(voc_root / "VOC2007" / "Annotations" / "000002.xml")
    assert (ann["height"], ann["width"]) == (48, 64)
    assert ann["objects"][0] == ("bird", [4.0, 4.0, 15.0, 15.0], True)  # 1 subtracted from xmin, ymin only
    assert voc_year("2008_000010") == "2012" and voc_year("000010") == "2007"


def test_base_training_set_keeps_base_objects_and_difficult(voc_root):
    records = load_voc([voc_root / "VOC2007", voc_root / "VOC2012"], "trainval", ["cow", "dog"])
    assert [r["image_id"] for r in records] == ["000001", "2008_000010"]  # 000002 has no base object
    assert records[1]["annotations"] == [{"bbox": [3.0, 3.0, 30.0, 30.0], "category_id": 1, "difficult": True}]
    assert records[1]["file_name"] == str(voc_root / "VOC2012" / "JPEGImages" / "2008_000010.jpg")


def test_test_set_keeps_images_without_objects(voc_root):
    records = load_voc([voc_root / "VOC2007"], "test", ["cow"], keep_empty=True)
    assert [(r["image_id"], len(r["annotations"])) for r in records] == [("000003", 1), ("000001", 0)]


def write_list(folder, shots, name, ids):
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"datasets/VOC{voc_year(i)}/JPEGImages/{i}.jpg\n" for i in ids)
    (folder / f"box_{shots}shot_{name}_train.txt").write_text(lines)


@pytest.mark.parametrize("seed0_folder", ["", "seed0"])
def test_fewshot_one_record_per_object_cut_to_k_once(voc_root, seed0_folder):
    split = voc_root / "vocsplit"
    folder = split / seed0_folder if seed0_folder else split
    write_list(folder, 2, "bird", ["000001", "000002", "2008_000010", "000002"])  # 5 birds, a repeated line
    write_list(folder, 2, "dog", ["2008_000010"])
    records = load_fewshot_voc(voc_root, split, ["dog", "bird"], 2, 0, split=1)
    assert [len(r["annotations"]) for r in records] == [1, 1, 1]
    assert records[0]["annotations"][0] == {"bbox": [3.0, 3.0, 30.0, 30.0], "category_id": 0, "difficult": True}
    birds = [(r["image_id"], tuple(r["annotations"][0]["bbox"])) for r in records[1:]]
    assert len(set(birds)) == 2 and all(r["annotations"][0]["category_id"] == 1 for r in records[1:])
    again = load_fewshot_voc(voc_root, split, ["dog", "bird"], 2, 0, split=1)
    assert again == records  # the same K instances on every load (PCB sees what training saw)


def test_fewshot_draw_depends_on_split_and_seed(voc_root):
    split = voc_root / "vocsplit"
    ids = ["000001", "000002", "2008_000010"]
    for seed in range(6):
        write_list(split / (f"seed{seed}" if seed else ""), 1, "bird", ids)
    picks = {tuple(r["annotations"][0]["bbox"]) for seed in range(6)
             for r in load_fewshot_voc(voc_root, split, ["bird"], 1, seed, split=1)}
    assert len(picks) > 1  # 5 candidate instances, 6 seeds: not always the same one


def test_missing_split_file_xml_and_image_are_named(voc_root):
    split = voc_root / "vocsplit"
    with pytest.raises(InputError) as err:
        write_list(split, 1, "bird", ["000001"])
        load_fewshot_voc(voc_root, split, ["bird", "cow"], 1, 0, split=1)
    assert str(split / "box_1shot_cow_train.txt") in str(err.value)
    write_list(split, 1, "cow", ["000404"])
    with pytest.raises(InputError, match="annotation file not found") as err:
        load_fewshot_voc(voc_root, split, ["cow"], 1, 0, split=1)
    assert "000404.xml" in str(err.value)
    (voc_root / "VOC2007" / "Annotations" / "000003.xml").write_text("<annotation><size>")
    with pytest.raises(InputError, match="000003.xml: not valid XML"):
        load_voc([voc_root / "VOC2007"], "test", ["cow"])
    (voc_root / "VOC2007" / "JPEGImages" / "000001.jpg").unlink()
    with pytest.raises(InputError, match="000001.jpg: image not found"):
        load_voc([voc_root / "VOC2007"], "trainval", ["dog"])
    with pytest.raises(InputError, match="val.txt: image set file not found"):
        load_voc([voc_root / "VOC2007"], "val", ["dog"])
