"""TensorBoardWriter: scalars per period and images, read back from the event files with a
small tfrecord reader (tensorboard itself is not in the pinned stack)."""
import io as bytes_io

import numpy as np
import pytest
from PIL import Image

from defrcn.callbacks.tensorboard import TensorBoardWriter
from defrcn.utils.draw import draw_boxes
from defrcn.utils.tb_events import read_events, scalars

LOSS_NAMES = ("loss_mse", "loss_l1")


def test_scalars_every_period(tmp_path, tiny_training):
    made = []

    def callbacks(optimizer):
        made.append(TensorBoardWriter(logdir=str(tmp_path), loss_names=LOSS_NAMES, period=2, lr_fn=lambda it: 0.5 / it))
        return made

    tiny_training(callbacks, max_iter=5)
    made[0].add_metrics({"AP": 12.5, "per_class": {"a": 1.0}, "name": "x"}, 5)
    made[0].close()
    found = scalars(read_events(tmp_path))
    assert set(found) == {"loss/total_loss", "loss/loss_mse", "loss/loss_l1", "lr", "eval/AP"}
    assert [step for step, _ in found["loss/total_loss"]] == [2, 4]
    assert found["lr"] == [(2, 0.25), (4, 0.125)]
    for (_, total), (_, mse), (_, l1) in zip(found["loss/total_loss"], found["loss/loss_mse"],
                                             found["loss/loss_l1"]):
        assert total == pytest.approx(mse + l1, rel=1e-5)
    assert found["eval/AP"] == [(5, 12.5)]


def test_images_with_boxes(tmp_path):
    writer = TensorBoardWriter(logdir=str(tmp_path), loss_names=LOSS_NAMES, period=1, lr_fn=lambda it: 0.0)
    image = np.zeros((40, 60, 3), np.uint8)
    drawn = draw_boxes(image, [[5, 10, 30, 35]], ["cat"], scores=[0.87], color=(0, 255, 0))
    writer.add_images("eval/detections", [drawn, image], step=3)
    with pytest.raises(ValueError, match="must be \\(H, W, 3\\) uint8"):
        writer.add_images("bad", [np.zeros((4, 4), np.float32)], step=3)
    writer.close()
    images = {value.tag: (event.step, value.image) for event in read_events(tmp_path)
              for value in event.summary.value if value.HasField("image")}
    assert set(images) == {"eval/detections/0", "eval/detections/1"}
    step, encoded = images["eval/detections/0"]
    assert step == 3 and (encoded.height, encoded.width) == (40, 60)
    decoded = np.asarray(Image.open(bytes_io.BytesIO(encoded.encoded_image_string)).convert("RGB"))
    np.testing.assert_array_equal(decoded, drawn)
