"""defrcn.data.records.DatasetMeta: the class list and its ids, checked when made."""
import pytest

from defrcn.data.records import DatasetMeta


def meta(**changes):
    values = dict(name="toy", class_names=["cat", "dog", "owl"], category_ids=[5, 9, 12],
                  base_classes=["cat", "dog"], novel_classes=["owl"])
    values.update(changes)
    return DatasetMeta(**values)


def test_contiguous_ids_follow_the_class_list():
    toy = meta()
    assert toy.num_classes == 3
    assert [toy.contiguous_id(name) for name in ("cat", "dog", "owl")] == [0, 1, 2]
    assert [toy.is_novel(i) for i in range(3)] == [False, False, True]
    assert toy.evaluator == "coco" and toy.json_file is None


def test_unknown_class_is_a_key_error_naming_the_data_set():
    with pytest.raises(KeyError, match="toy: no class named 'emu'"):
        meta().contiguous_id("emu")


def test_class_names_and_ids_must_pair_up():
    with pytest.raises(ValueError, match="toy: 3 class names but 2 category ids"):
        meta(category_ids=[5, 9])


def test_evaluator_is_coco_or_voc():
    assert meta(evaluator="voc").evaluator == "voc"
    with pytest.raises(ValueError, match="toy: evaluator must be 'coco' or 'voc', got 'lvis'"):
        meta(evaluator="lvis")


def test_lists_default_to_empty_and_are_not_shared():
    first = DatasetMeta("a", ["x"], [1])
    second = DatasetMeta("b", ["y"], [2])
    first.novel_classes.append("x")
    assert second.novel_classes == [] and first.is_novel(0)
