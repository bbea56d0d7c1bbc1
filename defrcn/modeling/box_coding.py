"""Box <-> regression-delta coding (detectron2's Box2BoxTransform convention).

width = x1 - x0, centre = x0 + 0.5 * width (no +1). Deltas are (dx, dy, dw, dh) scaled by
`weights`; dw and dh are clamped at `scale_clamp` before exp when decoding.
"""
import math

import mindspore as ms
from mindspore import ops

__all__ = ["BoxCoder", "DEFAULT_SCALE_CLAMP", "RPN_BOX_WEIGHTS", "ROI_BOX_WEIGHTS"]

# detectron2 `_DEFAULT_SCALE_CLAMP`: stops exp() from blowing up a box beyond 1000 / 16 times.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)
# detectron2 defaults MODEL.RPN.BBOX_REG_WEIGHTS and MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS.
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def _centres_and_sizes(boxes):
    widths = boxes[..., 2] - boxes[..., 0]
    heights = boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + 0.5 * widths, boxes[..., 1] + 0.5 * heights, widths, heights


@ms.jit_class
class BoxCoder:
    """Encode target boxes relative to reference boxes and decode them back.

    Usable inside a Cell's construct in GRAPH mode (it is a `jit_class`).
    """

    def __init__(self, weights, scale_clamp=DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = float(scale_clamp)

    def encode(self, reference, target):
        """Deltas (N, 4) that turn reference boxes (N, 4) into target boxes (N, 4)."""
        wx, wy, ww, wh = self.weights
        ref_cx, ref_cy, ref_w, ref_h = _centres_and_sizes(reference)
        tgt_cx, tgt_cy, tgt_w, tgt_h = _centres_and_sizes(target)
        dx = wx * (tgt_cx - ref_cx) / ref_w
        dy = wy * (tgt_cy - ref_cy) / ref_h
        dw = ww * ops.log(tgt_w / ref_w)
        dh = wh * ops.log(tgt_h / ref_h)
        return ops.stack([dx, dy, dw, dh], axis=-1)

    def decode(self, deltas, reference):
        """Boxes (N, 4k) from deltas (N, 4k) applied to reference boxes (N, 4).

        k > 1 is class-specific regression: columns 4j..4j+3 are the deltas for class j.
        """
        wx, wy, ww, wh = self.weights
        num_rows = deltas.shape[0]
        per_box = deltas.reshape(num_rows, -1, 4)
        ref_cx, ref_cy, ref_w, ref_h = _centres_and_sizes(reference.astype(deltas.dtype))
        ref_cx = ref_cx[:, None]
        ref_cy = ref_cy[:, None]
        ref_w = ref_w[:, None]
        ref_h = ref_h[:, None]
        dx = per_box[..., 0] / wx
        dy = per_box[..., 1] / wy
        dw = ops.clamp(per_box[..., 2] / ww, max=self.scale_clamp)
        dh = ops.clamp(per_box[..., 3] / wh, max=self.scale_clamp)
        centre_x = dx * ref_w + ref_cx
        centre_y = dy * ref_h + ref_cy
        half_w = 0.5 * ops.exp(dw) * ref_w
        half_h = 0.5 * ops.exp(dh) * ref_h
        boxes = ops.stack(
            [centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=-1
        )
        return boxes.reshape(num_rows, -1)
