"""Eval pictures: ground truth and detections drawn on test images, and PeriodicEval writing
them to the TensorBoard event file at the evaluated iteration."""
import io as bytes_io
import struct

import numpy as np
from PIL import Image
from tensorboardX.proto import event_pb2

from defrcn.callbacks.eval_hook import IMAGES_TAG, PeriodicEval
from defrcn.inference.eval_images import GT_COLOUR, PRED_COLOUR, MetricsWithImages, draw_eval_images
from defrcn.callbacks.tensorboard import TensorBoardWriter
from defrcn.data.records import DatasetMeta

META = DatasetMeta("stub", ["cat", "dog"], [5, 9], base_classes=["cat"], novel_classes=["dog"])


def _records(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.full((60, 80, 3), 128, np.uint8)).save(path)
    return [
        {"file_name": str(tmp_path / "missing.jpg"), "image_id": 7, "height": 60, "width": 80,
         "annotations": []},
        {"file_name": str(path), "image_id": 3, "height": 60, "width": 80,
         "annotations": [{"bbox": [10, 10, 30, 40], "category_id": 0}]},
    ]


DETECTIONS = [
    {"image_id": 3, "category_id": 9, "bbox": [50, 20, 20, 30], "score": 0.9},  # XYWH, dog
    {"image_id": 3, "category_id": 5, "bbox": [2, 45, 10, 10], "score": 0.1},  # below threshold
]


def test_draws_ground_truth_and_confident_detections(tmp_path):
    images = draw_eval_images(DETECTIONS, _records(tmp_path), META, count=4, score_thresh=0.5)
    assert len(images) == 1  # the missing file is skipped, not an error
    image = images[0]
    assert image.shape == (60, 80, 3) and image.dtype == np.uint8
    assert tuple(image[40, 10]) == GT_COLOUR  # left edge of the ground-truth box (x 10, y 10-40)
    assert tuple(image[45, 50]) == PRED_COLOUR  # left edge of the detection (x 50, y 20-50)
    assert tuple(image[55, 2]) == (128, 128, 128)  # the low-scoring detection is not drawn


def test_count_limits_the_pictures(tmp_path):
    records = _records(tmp_path)
    assert len(draw_eval_images(DETECTIONS, records + records[1:], META, count=1)) == 1
    assert len(draw_eval_images(DETECTIONS, records + records[1:], META, count=5)) == 2


def _events(logdir):
    events = []
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[offset + 12:offset + 12 + length])
            events.append(event)
            offset += 16 + length
    return events


def test_periodic_eval_writes_pictures_to_tensorboard(tmp_path):
    picture = draw_eval_images(DETECTIONS, _records(tmp_path), META)[0]
    writer = TensorBoardWriter(logdir=str(tmp_path / "tb"), loss_names=("loss_a",), period=1, lr_fn=lambda it: 0.0)
    hook = PeriodicEval(period=0, eval_fn=lambda it: MetricsWithImages({"AP": 1.5}, [picture]), max_iter=10,
                        writer=writer)
    assert hook.evaluate(10) == {"AP": 1.5}
    writer.close()
    found = {value.tag: (event.step, value) for event in _events(tmp_path / "tb")
             for value in event.summary.value}
    assert found["eval/AP"][1].simple_value == 1.5
    step, value = found[f"{IMAGES_TAG}/0"]
    assert step == 10
    decoded = Image.open(bytes_io.BytesIO(value.image.encoded_image_string)).convert("RGB")
    np.testing.assert_array_equal(np.asarray(decoded), picture)


def test_plain_metrics_write_no_pictures(tmp_path):
    writer = TensorBoardWriter(logdir=str(tmp_path / "tb"), loss_names=("loss_a",), period=1, lr_fn=lambda it: 0.0)
    PeriodicEval(period=0, eval_fn=lambda it: {"AP": 2.0}, max_iter=4, writer=writer).evaluate(4)
    writer.close()
    tags = {value.tag for event in _events(tmp_path / "tb") for value in event.summary.value}
    assert tags == {"eval/AP"}
