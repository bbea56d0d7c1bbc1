"""The one mapping from a recipe's data settings to a resolved DataSpec."""
import json
import os

import pytest

import defrcn
from defrcn.config.recipe import load_recipe
from defrcn.data.classes import voc_split_classes
from defrcn.data.spec import DataSpec, resolve_data_spec
from defrcn.errors import InputError

RECIPES = os.path.join(os.path.dirname(os.path.dirname(defrcn.__file__)), "recipes")


def custom_root(tmp_path, info=None):
    (tmp_path / "annotations").mkdir()
    content = {"images": [], "annotations": [],
               "categories": [{"id": 9, "name": "cat"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "7"}]}
    if info is not None:
        content["info"] = info
    (tmp_path / "annotations" / "train.json").write_text(json.dumps(content))
    return str(tmp_path)


def _spec(recipe, *overrides):
    cfg = load_recipe(os.path.join(RECIPES, recipe), list(overrides)).cfg
    before = cfg.to_dict()
    spec = resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)
    assert cfg.to_dict() == before  # resolving never edits the settings
    return spec


def test_custom_classes_from_overrides(tmp_path):
    spec = _spec("custom_2shot.py", f"data.root={custom_root(tmp_path)}", "data.novel_classes=7")
    assert spec.base_classes == ("dog", "cat")  # ascending category id
    assert spec.novel_classes == ("7",) and spec.num_classes == 3
    assert spec.model_classes == ("dog", "7", "cat")  # tfa: all, in the data set's order
    assert spec.split_root == os.path.join(str(tmp_path), "fewshot") and spec.shots == 2


def test_custom_classes_from_json_info(tmp_path):
    spec = _spec("custom_base.py", f"data.root={custom_root(tmp_path, info={'novel_classes': ['cat']})}")
    assert spec.novel_classes == ("cat",) and spec.num_classes == 2 and spec.model_classes == ("dog", "7")


def test_custom_unknown_novel_class(tmp_path):
    with pytest.raises(InputError, match="novel class 'cow'"):
        _spec("custom_base.py", f"data.root={custom_root(tmp_path)}", "data.novel_classes=cow")


def test_stated_num_classes_must_agree():
    with pytest.raises(InputError, match="model.num_classes: 80, but setting 'fsod'.* has 20 classes"):
        _spec("coco_fsod_1shot.py", "model.num_classes=80")


@pytest.mark.parametrize("recipe, setting, count", [("coco_base.py", "base", 60), ("coco_fsod_10shot.py", "fsod", 20),
                                                    ("coco_tfa_10shot.py", "tfa", 80)])
def test_model_classes_follow_the_setting(recipe, setting, count):
    spec = _spec(recipe)
    assert (spec.setting, spec.num_classes, spec.benchmark, spec.reader) == (setting, count, "coco", "coco")
    assert spec.split_root == os.path.join("datasets", "cocosplit")
    assert spec.catalog_split("train") == ("train_base" if setting == "base" else "train_fewshot")
    assert spec.catalog_split("test") == "test"
    if setting == "tfa":
        assert set(spec.model_classes) == set(spec.base_classes) | set(spec.novel_classes)
        assert spec.model_classes != spec.base_classes + spec.novel_classes  # COCO id order, interleaved


def test_voc_classes_follow_the_split():
    for split in (1, 2, 3):
        base, novel, all_order = voc_split_classes(split)
        spec = _spec(f"voc_split{split}_tfa_3shot.py")
        assert (list(spec.base_classes), list(spec.novel_classes), list(spec.model_classes)) == \
            (list(base), list(novel), list(all_order))


def test_voc_class_lists_of_another_split_are_refused():
    base, novel, _ = voc_split_classes(1)
    data = dict(benchmark="voc", root="datasets", setting="fsod", base_classes=base, novel_classes=novel,
                voc_split=2, shots=3)
    with pytest.raises(InputError, match="VOC split 2 has the novel classes aeroplane, bottle"):
        resolve_data_spec(data)


def test_shared_class_and_unknown_values_are_one_line():
    data = dict(benchmark="coco", root="d", setting="base", base_classes=["dog", "cat"], novel_classes=["cat"])
    with pytest.raises(InputError, match="share 'cat'"):
        resolve_data_spec(data)
    with pytest.raises(InputError, match="data.setting: unknown 'half'"):
        resolve_data_spec(dict(data, setting="half"))
    with pytest.raises(InputError, match="data.benchmark: unknown 'lvis'"):
        resolve_data_spec(dict(data, benchmark="lvis"))


def test_spec_is_frozen():
    spec = _spec("coco_base.py")
    assert isinstance(spec, DataSpec)
    with pytest.raises(AttributeError):
        spec.setting = "tfa"
