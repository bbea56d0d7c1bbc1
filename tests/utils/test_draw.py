"""draw_boxes: draws outlines in the colour given, leaves the input untouched."""
import numpy as np
import pytest

from defrcn.utils.draw import draw_boxes


def test_outline_and_copy():
    image = np.zeros((50, 80, 3), np.uint8)
    drawn = draw_boxes(image, np.array([[10, 20, 60, 45]]), ["dog"], color=(0, 0, 255), width=1)
    assert not image.any()
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert tuple(drawn[45, 35]) == (0, 0, 255)  # bottom edge
    assert tuple(drawn[30, 60]) == (0, 0, 255)  # right edge
    assert tuple(drawn[30, 35]) == (0, 0, 0)  # inside stays
    assert drawn[:20, 10:40].any()  # caption above the box


def test_bad_input():
    with pytest.raises(ValueError, match="1 boxes but 2 labels"):
        draw_boxes(np.zeros((5, 5, 3), np.uint8), [[0, 0, 1, 1]], ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        draw_boxes(np.zeros((5, 5, 3), np.float32), [], [])
