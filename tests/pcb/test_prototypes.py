"""PCB prototypes: support set = the fine-tune split, mean embeddings, the on-disk cache."""
import glob
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from defrcn.data.split_making import write_coco_splits
from defrcn.data.synthetic import write_synthetic_dataset
from defrcn.config.recipe import load_recipe
from defrcn.data.spec import resolve_data_spec
from defrcn.errors import InputError
from defrcn.pcb.prototypes import (compute_prototypes, load_or_compute_prototypes, load_support_set,
                                   support_digest)

REPO = Path(__file__).resolve().parents[2]


class FakeFeatures:
    """Embedding = (x0, y0, x1, y1, area, image height); records every call."""

    dim = 6
    tag = "fake"

    def __init__(self, fingerprint="fake-v1"):
        self.fingerprint = fingerprint
        self.calls = []

    def embed(self, image, boxes):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.calls.append((image.shape, boxes.copy()))
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return np.concatenate([boxes, area[:, None], np.full((len(boxes), 1), image.shape[0])], axis=1)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_synthetic_dataset(str(root), train_images=40, test_images=10, size=128)
    write_coco_splits(root / "annotations" / "train.json", [1, 2], [0, 1], root / "fewshot", strict=True,
                      image_dirs=[root / "images" / "train"])
    return root


def _spec(cfg):
    return resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)


def _recipe(root, setting="tfa", seed=0, fewshot_dir=""):
    name = "toy_2shot.py"
    overrides = [f"data.root={root}", f"data.split_seed={seed}", f"data.setting={setting}", "model.num_classes=0"]
    if fewshot_dir:
        overrides.append(f"data.fewshot_dir={fewshot_dir}")
    return load_recipe(REPO / "recipes" / name, overrides)


def _boxes_by_file(records, meta):
    out = []
    for r in records:
        for a in r["annotations"]:
            out.append((r["file_name"], meta.class_names[a["category_id"]], tuple(np.float32(a["bbox"]).tolist())))
    return sorted(out)


@pytest.mark.parametrize("setting", ["tfa", "fsod"])
def test_support_set_is_the_fine_tuning_training_set(toy_root, setting):
    recipe = _recipe(toy_root, setting=setting, seed=1)
    train = recipe.dataset(recipe.cfg, "train")
    records, meta = load_support_set(_spec(recipe.cfg))
    assert meta.class_names == train.meta.class_names
    assert _boxes_by_file(records, meta) == _boxes_by_file(train.records, train.meta)
    per_class = {}
    for _, name, _ in _boxes_by_file(records, meta):
        per_class[name] = per_class.get(name, 0) + 1
    assert set(per_class) == set(meta.class_names) and min(per_class.values()) >= 2  # K = 2 each
    # what the fake feature model is asked to embed: exactly these boxes, on the original images
    fake = FakeFeatures()
    compute_prototypes(fake, records, meta)
    embedded = sorted(tuple(b) for _, boxes in fake.calls for b in boxes.tolist())
    assert embedded == sorted(b for _, _, b in _boxes_by_file(records, meta))
    assert all(shape == (128, 128, 3) for shape, _ in fake.calls)


def test_prototype_is_the_mean_of_its_support_embeddings(toy_root):
    records, meta = load_support_set(_spec(_recipe(toy_root).cfg))
    protos = compute_prototypes(FakeFeatures(), records, meta)
    assert protos.class_names == [n for n in meta.class_names]
    for name, vector, count in zip(protos.class_names, protos.vectors, protos.counts):
        boxes = np.array([b for _, n, b in _boxes_by_file(records, meta) if n == name], np.float32)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        expected = np.concatenate([boxes.mean(0), [area.mean(), 128.0]])
        assert count == len(boxes)
        np.testing.assert_allclose(vector, expected, rtol=1e-6)


def test_cache_is_reused_and_invalidated_by_a_new_split_or_model(toy_root, tmp_path):
    split_dir = tmp_path / "fewshot"
    shutil.copytree(toy_root / "fewshot", split_dir)
    cfg = _recipe(toy_root, fewshot_dir=split_dir).cfg
    cache = tmp_path / "cache"

    records, meta = load_support_set(_spec(cfg))
    first = FakeFeatures()
    protos = load_or_compute_prototypes(first, records, meta, cache)
    files = glob.glob(str(cache / "*.npz"))
    assert first.calls and len(files) == 1
    assert os.path.basename(files[0]).startswith(f"{meta.name}_fake_")

    again = FakeFeatures()
    cached = load_or_compute_prototypes(again, *load_support_set(_spec(cfg)), cache)
    assert again.calls == []  # nothing embedded: read from the cache
    assert cached.class_names == protos.class_names
    np.testing.assert_array_equal(cached.vectors, protos.vectors)
    np.testing.assert_array_equal(cached.counts, protos.counts)

    # the seed-0 split files now hold seed 1's draw: same names, new content
    for path in glob.glob(str(split_dir / "seed1" / "*.json")):
        shutil.copy(path, split_dir / os.path.basename(path))
    changed = FakeFeatures()
    records2, meta2 = load_support_set(_spec(cfg))
    assert support_digest(records2, meta2) != support_digest(records, meta)
    new = load_or_compute_prototypes(changed, records2, meta2, cache)
    assert changed.calls and not np.allclose(new.vectors, protos.vectors)
    assert len(glob.glob(str(cache / "*.npz"))) == 2

    other_model = FakeFeatures(fingerprint="fake-v2")
    load_or_compute_prototypes(other_model, records2, meta2, cache)
    assert other_model.calls


def test_a_corrupt_cache_file_is_recomputed(toy_root, tmp_path):
    records, meta = load_support_set(_spec(_recipe(toy_root).cfg))
    load_or_compute_prototypes(FakeFeatures(), records, meta, tmp_path)
    (path,) = glob.glob(str(tmp_path / "*.npz"))
    Path(path).write_bytes(b"not an npz")
    fake = FakeFeatures()
    protos = load_or_compute_prototypes(fake, records, meta, tmp_path)
    assert fake.calls and len(protos.class_names) == meta.num_classes


def test_base_training_recipe_has_no_support_set(toy_root):
    cfg = load_recipe(REPO / "recipes" / "toy_base.py", [f"data.root={toy_root}"]).cfg
    with pytest.raises(InputError, match="data.setting"):
        load_support_set(_spec(cfg))


def test_records_of_one_image_file_are_embedded_in_one_pass(toy_root):
    # a VOC image listed for two classes is two records of one file: one pass, each box counted
    records, meta = load_support_set(_spec(_recipe(toy_root).cfg))
    first, second = records[0], records[1]
    twin = dict(second, file_name=first["file_name"], height=first["height"], width=first["width"])
    doubled = [first, twin] + records[2:]
    fake = FakeFeatures()
    protos = compute_prototypes(fake, doubled, meta)
    assert len(fake.calls) == len({r["file_name"] for r in doubled if r.get("annotations")})
    rows = np.concatenate([np.asarray(e, np.float64) for e in (
        FakeFeatures().embed(np.zeros((r["height"], r["width"], 3), np.uint8), [a["bbox"] for a in r["annotations"]])
        for r in doubled)])
    classes = np.array([a["category_id"] for r in doubled for a in r["annotations"]])
    for name, vector, count in zip(protos.class_names, protos.vectors, protos.counts):
        mine = classes == meta.class_names.index(name)
        assert count == mine.sum()
        np.testing.assert_allclose(vector, rows[mine].mean(0), rtol=1e-6)
