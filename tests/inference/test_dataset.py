"""run_inference maps boxes and ids back to the data set; make_eval_fn on a stub model."""
import numpy as np
import pytest

from defrcn.data.records import DatasetMeta
from defrcn.engine.evaluate import make_eval_fn
from defrcn.errors import InputError
from defrcn.inference.dataset import detections_of_predictions, predict_dataset, run_inference
from defrcn.recipes.common.builders import Data

META = DatasetMeta("stub", ["cat", "dog", "owl"], [5, 9, 12], base_classes=["cat", "dog"],
                   novel_classes=["owl"])
RECORDS = [
    {"file_name": "a.jpg", "image_id": 101, "height": 100, "width": 200,
     "annotations": [{"bbox": [10, 20, 50, 60], "category_id": 0, "difficult": False}]},
    {"file_name": "b.jpg", "image_id": 205, "height": 50, "width": 50,
     "annotations": [{"bbox": [5, 5, 25, 45], "category_id": 2, "difficult": False}]},
]


class StubModel:
    """Fixed canvas-pixel detections for a batch of 3 rows (row 2 is padding)."""

    def __init__(self):
        self.training = True

    def set_train(self, mode=True):
        self.training = mode

    def __call__(self, images, image_sizes):
        assert not self.training
        boxes = np.zeros((3, 2, 4), np.float32)
        boxes[0] = [[20, 40, 100, 120], [0, 0, 1000, 30]]  # image a at scale 2; 2nd box clipped
        boxes[1] = [[20, 20, 100, 180], [4, 4, 8, 8]]  # image b at scale 4
        scores = np.array([[0.9, 0.3], [0.8, 0.1], [0.7, 0.7]], np.float32)
        classes = np.array([[0, 1], [2, 0], [1, 1]], np.int32)
        valid = np.array([[1, 1], [1, 0], [1, 1]], np.float32)  # image b's 2nd is padding
        return boxes, scores, classes, valid


class StubLoader:
    """One batch: image a (scale 2), image b (scale 4), a padding row."""

    def get_dataset_size(self):
        return 1

    def create_dict_iterator(self, num_epochs=1, output_numpy=True):
        yield {"images": np.zeros((3, 3, 8, 8), np.float32),
               "image_sizes": np.full((3, 2), 8, np.float32),
               "image_ids": np.array([0, 1, -1], np.int32),
               "scales": np.array([2.0, 4.0, 1.0], np.float32)}


def test_boxes_and_ids_mapped_back_to_the_data_set():
    model = StubModel()
    dets = run_inference(model, StubLoader(), RECORDS, META, progress=False)
    assert not model.training
    assert dets == [
        {"image_id": 101, "category_id": 5, "bbox": [10.0, 20.0, 40.0, 40.0], "score": pytest.approx(0.9)},
        {"image_id": 101, "category_id": 9, "bbox": [0.0, 0.0, 200.0, 15.0], "score": pytest.approx(0.3)},
        {"image_id": 205, "category_id": 12, "bbox": [5.0, 5.0, 20.0, 40.0], "score": pytest.approx(0.8)},
    ]


def test_rescore_hook_sees_original_boxes_and_contiguous_classes():
    seen = []

    def rescore(record, boxes, scores, classes):
        seen.append((record["image_id"], boxes.copy(), scores.copy(), classes.copy()))
        return scores * 0.5

    dets = run_inference(StubModel(), StubLoader(), RECORDS, META, progress=False, rescore=rescore)
    assert [s[0] for s in seen] == [101, 205]
    np.testing.assert_allclose(seen[1][1], [[5, 5, 25, 45]])
    assert seen[0][3].tolist() == [0, 1]
    assert [d["score"] for d in dets] == pytest.approx([0.45, 0.15, 0.4])


def test_rescore_many_sees_every_image_with_detections_at_once_and_equals_rescore():
    def rescore(record, boxes, scores, classes):
        return scores * 0.5 + boxes[:, 0] * 0.01 + classes

    calls = []

    def rescore_many(images):
        calls.append([record["image_id"] for record, _, _, _ in images])
        return [rescore(*image) for image in images]

    one = run_inference(StubModel(), StubLoader(), RECORDS, META, progress=False, rescore=rescore)
    many = run_inference(StubModel(), StubLoader(), RECORDS, META, progress=False, rescore_many=rescore_many)
    assert calls == [[101, 205]]
    assert many == one


def test_predictions_once_give_the_detections_with_and_without_rescoring():
    predictions = predict_dataset(StubModel(), StubLoader(), RECORDS, progress=False)
    assert [(p[0]["image_id"], len(p[1])) for p in predictions] == [(101, 2), (205, 1)]
    plain = detections_of_predictions(predictions, META)
    halved = detections_of_predictions(predictions, META, rescore=lambda r, b, s, c: s * 0.5)
    assert plain == run_inference(StubModel(), StubLoader(), RECORDS, META, progress=False)
    assert [d["score"] for d in halved] == pytest.approx([0.45, 0.15, 0.4])
    assert detections_of_predictions(predictions, META) == plain  # the predictions were not changed


def test_eval_fn_returns_metrics_and_restores_train_mode():
    model = StubModel()
    eval_fn = make_eval_fn(None, model, Data(StubLoader(), RECORDS, META))
    metrics = eval_fn(10)
    assert model.training
    # image a's cat and image b's owl are exact hits; the dog is a false positive (no dog gt)
    assert metrics["per_class"]["cat"] == pytest.approx(100.0)
    assert metrics["nAP"] == pytest.approx(100.0)
    assert {"AP", "AP50", "bAP", "nAP75", "per_class"} <= set(metrics)
