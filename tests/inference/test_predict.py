"""defrcn.inference.predict: the test loader's preprocessing, class names per setting,
checkpoint checks, boxes back in original pixels, PCB rescoring wiring."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from defrcn.engine import load_recipe
from defrcn.inference.infer import infer_to_folder
from defrcn.inference.predict import (category_ids_of, load_model_for_inference, predict_image,
                                   preprocess_image)
from defrcn.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(REPO, "recipes", "toy_base.py")
SMALL = ["model.depth=18", "input.canvases=[[128,128]]", "input.min_size_test=128",
         "input.max_size_test=128", "model.rpn.pre_nms_topk_test=200", "model.rpn.post_nms_topk_test=50",
         "model.roi.score_thresh_test=0.0"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(overrides, checkpoint, data root): synthetic data and random toy weights."""
    import mindspore as ms

    from defrcn.checkpoint.io import save_checkpoint
    from defrcn.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("toy")
    write_synthetic_dataset(root / "data", train_images=12, test_images=4, size=128)
    overrides = [f"data.root={root / 'data'}"] + SMALL
    ms.set_seed(0)
    recipe = load_recipe(RECIPE, overrides)
    checkpoint = str(root / "toy.ckpt")
    save_checkpoint(recipe.model(recipe.cfg), checkpoint)
    return overrides, checkpoint, root / "data"


@pytest.fixture(scope="module")
def loaded(toy):
    overrides, checkpoint, _ = toy
    return load_model_for_inference(RECIPE, checkpoint, overrides)


def _image(height, width, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (height, width, 3), np.uint8)


def test_preprocessing_is_the_test_loaders(tmp_path):
    from defrcn.data.pipeline import build_test_loader

    cfg = load_recipe(RECIPE, ["input.canvases=[[96,128],[128,96]]", "input.min_size_test=100",
                               "input.max_size_test=120"]).cfg
    image = _image(140, 90)  # portrait: the (128, 96) canvas; short edge 90 -> 100, long capped at 120
    Image.fromarray(image).save(tmp_path / "p.png")
    record = {"file_name": str(tmp_path / "p.png"), "height": 140, "width": 90, "image_id": 0,
              "annotations": []}
    images, sizes, scale = preprocess_image(cfg.input, image)
    assert images.shape == (1, 3, 128, 96) and images.dtype == np.float32
    np.testing.assert_allclose(scale, 120 / 140, rtol=1e-6)
    np.testing.assert_array_equal(sizes, [[120, 77]])  # 90 * 120/140 = 77.1, aspect kept
    assert not images[0, :, 120:].any() and not images[0, :, :, 77:].any()  # zero padding
    loader = build_test_loader([record], canvases=cfg.input.canvases, min_size=100, max_size=120,
                               pixel_format=cfg.input.format, batch_size=1, max_gt=4, num_workers=1)
    batch = next(loader.create_dict_iterator(num_epochs=1, output_numpy=True))
    np.testing.assert_array_equal(batch["images"], images)
    np.testing.assert_array_equal(batch["image_sizes"], sizes)
    np.testing.assert_allclose(batch["scales"][0], scale, rtol=1e-6)


def test_class_names_follow_the_setting(toy):
    from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES
    from defrcn.data.spec import resolve_data_spec

    _, _, data_root = toy
    categories = json.loads((data_root / "annotations" / "train.json").read_text())["categories"]
    by_id = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    finetune = os.path.join(REPO, "recipes", "toy_1shot.py")
    for recipe, setting, expected in ((RECIPE, "base", list(BASE_CLASS_NAMES)),
                                      (finetune, "fsod", list(NOVEL_CLASS_NAMES)), (finetune, "tfa", by_id)):
        cfg = load_recipe(recipe, [f"data.root={data_root}", f"data.setting={setting}",
                                   "model.num_classes=0"]).cfg
        spec = resolve_data_spec(cfg.data)
        names = list(spec.model_classes)
        assert names == expected and len(names) == spec.num_classes
        ids = category_ids_of(spec, names)
        assert ids == [next(c["id"] for c in categories if c["name"] == n) for n in names]


def test_checkpoint_of_another_class_count_is_one_input_error_line(toy):
    overrides, checkpoint, _ = toy
    with pytest.raises(InputError) as error:  # tfa: 9 classes, the checkpoint has 6
        load_model_for_inference(os.path.join(REPO, "recipes", "toy_1shot.py"), checkpoint, overrides)
    message = str(error.value)
    assert "\n" not in message and checkpoint in message and "box_predictor" in message


def test_missing_checkpoint_is_an_input_error(toy, tmp_path):
    overrides, _, _ = toy
    with pytest.raises(InputError, match="none.ckpt"):
        load_model_for_inference(RECIPE, str(tmp_path / "none.ckpt"), overrides)


def test_predict_image_maps_valid_detections_to_original_pixels(loaded):
    from mindspore import Tensor

    cfg, model, class_names = loaded
    image = _image(140, 90, seed=5)
    boxes, scores, classes = predict_image(model, cfg.input, image)
    assert len(boxes) > 0 and boxes.shape == (len(scores), 4) and classes.shape == scores.shape
    assert (np.diff(scores) <= 0).all() and (classes >= 0).all() and (classes < len(class_names)).all()
    assert (boxes[:, [0, 2]] <= 90).all() and (boxes[:, [1, 3]] <= 140).all() and (boxes >= 0).all()
    # the same detections as the raw model output on the preprocessed canvas, divided by the scale
    images, sizes, scale = preprocess_image(cfg.input, image)
    raw_boxes, raw_scores, _, valid = (o.asnumpy()[0] for o in model(Tensor(images), Tensor(sizes)))
    keep = valid.astype(bool)
    order = np.argsort(-raw_scores[keep], kind="stable")
    np.testing.assert_allclose(scores, raw_scores[keep][order])
    np.testing.assert_allclose(boxes, np.clip(raw_boxes[keep][order] / scale, 0, [90, 140, 90, 140]),
                               rtol=1e-5, atol=1e-4)


def test_pcb_rescores_before_the_threshold(toy, tmp_path, monkeypatch):
    import defrcn.inference.predict

    overrides, checkpoint, _ = toy
    seen = []

    class HalfScores:
        def rescore(self, record, boxes, scores, classes):
            seen.append((record, len(boxes)))
            return np.asarray(scores) / 2

    monkeypatch.setattr(defrcn.inference.predict, "build_recipe_pcb", lambda cfg, model, test_meta=None: HalfScores())
    Image.fromarray(_image(96, 128, seed=6)).save(tmp_path / "x.jpg")
    plain, = infer_to_folder(RECIPE, checkpoint, [tmp_path / "x.jpg"], tmp_path / "plain", score_thresh=0.0,
                             overrides=overrides, progress=False)
    before = json.loads(open(plain).read())["detections"]
    halved = sorted({d["score"] / 2 for d in before})
    assert len(halved) >= 2
    thresh = (halved[len(halved) // 2 - 1] + halved[len(halved) // 2]) / 2  # keeps the upper half
    rescored, = infer_to_folder(RECIPE, checkpoint, [tmp_path / "x.jpg"], tmp_path / "pcb",
                                score_thresh=thresh, pcb=True, overrides=overrides, progress=False)
    after = json.loads(open(rescored).read())["detections"]
    assert seen and seen[0][0] == {"file_name": str(tmp_path / "x.jpg"), "height": 96, "width": 128}
    assert seen[0][1] == len(before), "PCB sees every detection, before the threshold"
    expected = [d["score"] / 2 for d in before if d["score"] / 2 >= thresh]
    assert 0 < len(after) < len(before)
    np.testing.assert_allclose([d["score"] for d in after], expected, atol=1e-5)
