"""build_pcb / PCB.rescore: class ids mapped by name, gFSOD base classes untouched, the "self" path."""
import dataclasses
import glob
from pathlib import Path

import numpy as np
import pytest

from defrcn.data.split_making import write_coco_splits
from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES, write_synthetic_dataset
from defrcn.config.recipe import load_recipe
from defrcn.data.spec import resolve_data_spec
from defrcn.inference.predict import build_recipe_pcb
from defrcn.pcb import build_pcb, default_cache_dir
from defrcn.pcb.calibration import cosine_similarity, select_for_calibration

REPO = Path(__file__).resolve().parents[2]


class BoxFeatures:
    """Embedding = the box itself plus one (deterministic, box-dependent)."""

    dim = 5
    tag = "box"
    fingerprint = "box-v1"

    def __init__(self):
        self.calls = 0

    def embed(self, image, boxes):
        self.calls += 1
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        return np.concatenate([boxes, np.ones((len(boxes), 1), np.float32)], axis=1)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_synthetic_dataset(str(root), train_images=40, test_images=10, size=128)
    write_coco_splits(root / "annotations" / "train.json", [1, 2], [0], root / "fewshot", strict=True,
                      image_dirs=[root / "images" / "train"])
    return root


def _spec(cfg):
    return resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes)


def _recipe(root, tmp_path, *extra):
    return load_recipe(REPO / "recipes" / "toy_2shot.py",
                       [f"data.root={root}", f"output_dir={tmp_path / 'out'}", *extra])


def test_rescore_maps_classes_by_name_and_leaves_gfsod_base_classes_alone(toy_root, tmp_path):
    recipe = _recipe(toy_root, tmp_path)
    test = recipe.dataset(recipe.cfg, "test")
    # a test meta whose contiguous ids differ from the support set's: reversed class order
    reversed_meta = dataclasses.replace(test.meta, class_names=test.meta.class_names[::-1],
                                        category_ids=test.meta.category_ids[::-1])
    features = BoxFeatures()
    cfg = recipe.cfg
    pcb = build_pcb(_spec(cfg), cfg.test.pcb, features, test_meta=reversed_meta,
                    cache_dir=default_cache_dir(cfg.test.pcb, cfg.output_dir))
    assert glob.glob(str(tmp_path / "out" / "pcb" / "*.npz"))  # cached under OUTPUT/pcb
    novel, base = NOVEL_CLASS_NAMES[0], BASE_CLASS_NAMES[0]
    names = reversed_meta.class_names
    boxes = np.array([[10, 10, 60, 50], [20, 30, 90, 100], [5, 5, 40, 40], [0, 0, 20, 20]], np.float32)
    scores = np.array([0.9, 0.7, 0.5, 0.03], np.float32)
    classes = np.array([names.index(novel), names.index(base), names.index(novel), names.index(novel)])
    new = pcb.rescore(test.records[0], boxes, scores, classes)
    proto = pcb.prototypes.vectors[pcb.prototypes.class_names.index(novel)]
    emb = features.embed(None, boxes)
    cos = cosine_similarity(emb, np.broadcast_to(proto, emb.shape))
    np.testing.assert_allclose(new, [0.45 + 0.5 * cos[0], 0.7, 0.25 + 0.5 * cos[2], 0.03], rtol=1e-6)
    assert new[0] != 0.9


def test_fsod_rescores_every_class_and_skips_the_image_when_nothing_qualifies(toy_root, tmp_path):
    recipe = _recipe(toy_root, tmp_path, "data.setting=fsod", "model.num_classes=0")
    test = recipe.dataset(recipe.cfg, "test")
    features = BoxFeatures()
    pcb = build_pcb(_spec(recipe.cfg), recipe.cfg.test.pcb, features, test_meta=test.meta)
    assert pcb.test_class_names == list(NOVEL_CLASS_NAMES) and (pcb.rows >= 0).all()
    calls = features.calls
    low = pcb.rescore(test.records[0], np.zeros((2, 4)), np.array([0.05, 0.01]), np.array([0, 1]))
    np.testing.assert_array_equal(low, np.array([0.05, 0.01], np.float32))
    assert features.calls == calls  # no embedding for an image without detections to rescore
    boxes = np.array([[10, 10, 60, 50], [20, 30, 90, 100]], np.float32)
    assert (pcb.rescore(test.records[0], boxes, [0.9, 0.8], [0, 2]) != np.float32([0.9, 0.8])).all()


class ManyBoxFeatures(BoxFeatures):
    """BoxFeatures with `embed_many`; records the images of each call."""

    def __init__(self):
        super().__init__()
        self.many_calls = []

    def embed_many(self, pairs):
        pairs = list(pairs)
        self.many_calls.append([image.shape for image, _ in pairs])
        return [super(ManyBoxFeatures, self).embed(image, boxes) for image, boxes in pairs]


@pytest.mark.parametrize("features", [BoxFeatures(), ManyBoxFeatures()], ids=["embed", "embed_many"])
def test_rescore_many_equals_rescore_of_each_image(toy_root, tmp_path, features):
    recipe = _recipe(toy_root, tmp_path)
    test = recipe.dataset(recipe.cfg, "test")
    pcb = build_pcb(_spec(recipe.cfg), recipe.cfg.test.pcb, features, test_meta=test.meta)
    rng = np.random.RandomState(5)
    images = []
    for index, record in enumerate(test.records[:5]):
        count = [4, 0, 3, 2, 5][index]
        xy = rng.rand(count, 2) * 60
        boxes = np.concatenate([xy, xy + 5 + rng.rand(count, 2) * 50], axis=1).astype(np.float32)
        scores = rng.uniform(0.0, 1.0, count).astype(np.float32)
        if index == 3:
            scores[:] = 0.01  # nothing to rescore in this image
        images.append((record, boxes, scores, rng.randint(0, len(test.meta.class_names), count)))
    many = pcb.rescore_many(images)
    if isinstance(features, ManyBoxFeatures):  # one call, for the images with something to rescore
        todo = sum(select_for_calibration(i[2], i[3], pcb.rows, pcb.lower, pcb.upper).any() for i in images)
        assert len(features.many_calls[-1]) == todo >= 2
    assert len(many) == len(images)
    for new, image in zip(many, images):
        np.testing.assert_array_equal(new, pcb.rescore(*image))


def test_self_feature_model_end_to_end(toy_root, tmp_path):
    # 1 shot on 128-pixel canvases: a few seconds of ResNet-18 on a CPU
    recipe = load_recipe(REPO / "recipes" / "toy_1shot.py",
                         [f"data.root={toy_root}", f"output_dir={tmp_path / 'out'}", "input.min_size_test=128",
                          "input.max_size_test=128", "input.canvases=[[128, 128]]"])
    cfg = recipe.cfg
    assert cfg.test.pcb.model == "self"
    model = recipe.model(cfg)
    test = recipe.dataset(cfg, "test")
    pcb = build_recipe_pcb(cfg, model, test.meta)
    assert pcb.prototypes.vectors.shape == (len(test.meta.class_names), 512)
    assert np.isfinite(pcb.prototypes.vectors).all()
    novel = test.meta.class_names.index(NOVEL_CLASS_NAMES[1])
    new = pcb.rescore(test.records[1], np.array([[8, 8, 70, 60]], np.float32), [0.6], [novel])
    assert np.isfinite(new).all() and new[0] != np.float32(0.6) and -0.5 <= new[0] <= 1.0
