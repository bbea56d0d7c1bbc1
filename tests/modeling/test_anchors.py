import numpy as np
import pytest
import mindspore as ms

from defrcn.modeling.anchors import AnchorGenerator, make_cell_anchors
from defrcn.modeling.rpn import flatten_deltas, flatten_objectness

SIZES = (32, 64, 128, 256, 512)
RATIOS = (0.5, 1.0, 2.0)


pytestmark = pytest.mark.usefixtures("pynative_mode")


def anchors_for(height, width, offset=0.0, sizes=SIZES, ratios=RATIOS):
    generator = AnchorGenerator(sizes, ratios, stride=16, offset=offset)
    feature = ms.Tensor(np.zeros((2, 3, height, width), np.float32))
    return generator, generator(feature).asnumpy()


def test_cell_anchors_sizes_and_ratios():
    cell = make_cell_anchors(SIZES, RATIOS)
    assert cell.shape == (15, 4)
    widths = cell[:, 2] - cell[:, 0]
    heights = cell[:, 3] - cell[:, 1]
    expected_sizes = np.repeat(SIZES, len(RATIOS)).astype(np.float64)
    expected_ratios = np.tile(RATIOS, len(SIZES))
    np.testing.assert_allclose(widths * heights, expected_sizes ** 2, rtol=1e-5)
    np.testing.assert_allclose(heights / widths, expected_ratios, rtol=1e-5)
    np.testing.assert_allclose(cell[:, 0] + cell[:, 2], 0.0, atol=1e-4)  # centred at 0
    np.testing.assert_allclose(cell[:, 1] + cell[:, 3], 0.0, atol=1e-4)
    # detectron2's values for size 32, ratio 0.5: w = sqrt(2048), h = w / 2.
    np.testing.assert_allclose(cell[0], [-22.627417, -11.313708, 22.627417, 11.313708], rtol=1e-5)


def test_anchor_count_and_layout():
    generator, anchors = anchors_for(3, 5)
    assert generator.num_anchors == 15
    assert anchors.shape == (3 * 5 * 15, 4)
    cell = make_cell_anchors(SIZES, RATIOS)
    per_position = anchors.reshape(3, 5, 15, 4)
    for y in range(3):
        for x in range(5):
            shift = np.array([x * 16, y * 16, x * 16, y * 16], np.float32)
            np.testing.assert_allclose(per_position[y, x], cell + shift, atol=1e-4)


def test_offset_moves_centres_by_half_stride():
    _, anchors = anchors_for(2, 2, offset=0.5)
    centres_x = (anchors[:, 0] + anchors[:, 2]) / 2
    centres_y = (anchors[:, 1] + anchors[:, 3]) / 2
    np.testing.assert_allclose(np.unique(centres_x.round(3)), [8, 24])
    np.testing.assert_allclose(np.unique(centres_y.round(3)), [8, 24])


def test_order_matches_flattened_head_output():
    height, width, count = 3, 4, 15
    # A head output whose value names its (anchor, y, x) position.
    a_index, y_index, x_index = np.meshgrid(np.arange(count), np.arange(height), np.arange(width),
                                            indexing="ij")
    code = (a_index * 10000 + y_index * 100 + x_index).astype(np.float32)[None]   # (1, A, H, W)
    flat = flatten_objectness(ms.Tensor(code)).asnumpy()[0]
    _, anchors = anchors_for(height, width)
    cell = make_cell_anchors(SIZES, RATIOS)
    for row in range(flat.shape[0]):
        a, y, x = int(flat[row]) // 10000, int(flat[row]) // 100 % 100, int(flat[row]) % 100
        np.testing.assert_allclose(anchors[row], cell[a] + [x * 16, y * 16, x * 16, y * 16],
                                   atol=1e-4)

    # Deltas: channel 4a + j holds coordinate j of anchor a.
    delta_code = np.repeat(code, 4, axis=1) + np.tile(np.arange(4), count)[None, :, None, None] * 0.25
    flat_deltas = flatten_deltas(ms.Tensor(delta_code.astype(np.float32))).asnumpy()[0]
    assert flat_deltas.shape == (height * width * count, 4)
    np.testing.assert_allclose(flat_deltas, flat[:, None] + np.arange(4) * 0.25)
