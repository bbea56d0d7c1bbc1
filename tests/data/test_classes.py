import pytest

from defrcn.data import classes


def _ids(spec):
    out = []
    for part in spec:
        lo, hi = part if isinstance(part, tuple) else (part, part)
        out.extend(range(lo, hi + 1))
    return out


# TFA / DeFRCN builtin_meta.py
BASE_IDS = _ids([8, 10, 11, 13, 14, 15, (22, 25), 27, 28, (31, 43), (46, 61), 65, 70, (73, 82), (84, 90)])
NOVEL_IDS = [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 20, 21, 44, 62, 63, 64, 67, 72]


def test_coco_has_80_classes_in_ascending_id_order():
    ids = [cid for cid, _ in classes.COCO_CATEGORIES]
    assert len(ids) == 80 and ids == sorted(set(ids)) and ids[-1] == 90
    assert sorted(BASE_IDS + NOVEL_IDS) == ids


def test_coco_base_and_novel_split():
    base, novel, all_order = classes.coco_split_classes()
    assert [classes.coco_category_id(n) for n in novel] == NOVEL_IDS
    assert [classes.coco_category_id(n) for n in base] == BASE_IDS
    assert all_order == list(classes.COCO_CLASSES)
    assert novel[0] == "person" and novel[-1] == "tv" and "potted plant" in novel
    assert all_order.index("bottle") == 39 and all_order.index("tv") == 62  # contiguous 80-class ids of builtin_meta.py
    with pytest.raises(KeyError):
        classes.coco_category_id("unicorn")


def test_voc_splits_match_fact_sheet():
    base, novel, all_order = classes.voc_split_classes(1)
    assert novel == ["bird", "bus", "cow", "motorbike", "sofa"]
    assert base[:3] == ["aeroplane", "bicycle", "boat"] and base[-1] == "tvmonitor"
    assert classes.voc_split_classes(2)[2][:2] == ["bicycle", "bird"]
    assert classes.voc_split_classes(3)[1] == ["boat", "cat", "motorbike", "sheep", "sofa"]
    for split in (1, 2, 3):
        base, novel, all_order = classes.voc_split_classes(split)
        assert all_order == base + novel and len(base) == 15 and len(novel) == 5
        assert sorted(all_order) == list(classes.VOC_CLASSES)
        assert base == [c for c in classes.VOC_CLASSES if c not in novel]  # base keeps alphabetical order
    assert list(classes.VOC_CLASSES) == sorted(classes.VOC_CLASSES)
    with pytest.raises(ValueError):
        classes.voc_split_classes(4)
