"""RoI pooling over one feature map: detectron2's ROIAlignV2 on MindSpore's `ops.ROIAlign`.

What `ops.ROIAlign` (2.8.0, CPU kernel) does, checked against the numpy reference in
tests/modeling/test_pooler.py:
- start = x0 * scale; end = (x1 + roi_end_mode) * scale. roi_end_mode=1 adds one input pixel
  and never clamps; roi_end_mode=0 clamps the RoI to at least 1x1 feature cell (detectron2's
  aligned=False behaviour).
- bilinear sampling is detectron2's (zero outside [-1, H] x [-1, W], clamped at the border).
- sample_num > 0: that many points per bin and axis. sample_num = 0 uses floor(roi / out)
  (detectron2 uses ceil) and returns NaN when a RoI is smaller than the output grid; unusable.
- a RoI whose x0 and x1 are both within 1e-3 of 0 is skipped and its output left
  uninitialised.

So for aligned=True we pass start x0 - 0.5/scale and end x1 - 0.5/scale - 1 with
roi_end_mode=1, which gives exactly x * scale - 0.5 for both corners (half-pixel centres),
and we nudge the rare RoI the kernel would skip. Adaptive sampling (sampling_ratio=0, i.e.
ceil(roi_size / output_size) points per bin) is not available; it is replaced by
ADAPTIVE_FALLBACK_SAMPLES fixed points (the measured gap is stated in the test file).
"""

import mindspore.nn as nn
import mindspore.ops as ops

__all__ = ["ROIPooler", "ADAPTIVE_FALLBACK_SAMPLES"]

# Points per bin and axis used when adaptive sampling (sampling_ratio=0) is asked for: the
# Mask R-CNN / torchvision MultiScaleRoIAlign default, and what detectron2's adaptive rule
# gives for RoIs of 7-14 feature cells (112-224 px at stride 16, 7x7 output).
ADAPTIVE_FALLBACK_SAMPLES = 2
# The kernel skips a RoI whose x0 and x1 are both closer than this to 0.
_KERNEL_SKIP_TOLERANCE = 1e-3


class ROIPooler(nn.Cell):
    """ROIAlign of boxes on one feature map.

    Args:
        output_size: pooled height = width (DeFRCN: 7).
        spatial_scale: feature size / image size (1/16 for res4).
        sampling_ratio: points per bin and axis; 0 = adaptive, approximated by
            ADAPTIVE_FALLBACK_SAMPLES (see the module docstring).
        aligned: True = detectron2 ROIAlignV2 (box corner c maps to c * scale - 0.5);
            False = legacy ROIAlign (c * scale, RoI clamped to at least one cell).

    construct(features (B, C, H, W) float32, rois (R, 5) float32 [batch_index, x0, y0, x1, y1]
    in image pixels) -> (R, C, output_size, output_size). No gradient flows into `rois`.
    """

    def __init__(self, output_size=7, spatial_scale=1.0 / 16, sampling_ratio=0, aligned=True):
        super().__init__()
        self.output_size = int(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        sample_num = self.sampling_ratio if self.sampling_ratio > 0 else ADAPTIVE_FALLBACK_SAMPLES
        roi_end_mode = 1 if self.aligned else 0
        self.roi_align = ops.ROIAlign(self.output_size, self.output_size, self.spatial_scale,
                                      sample_num, roi_end_mode)
        half_cell = 0.5 / self.spatial_scale if self.aligned else 0.0
        # Offsets in image pixels added to (x0, y0) and (x1, y1) before the kernel scales them.
        self.start_offset = -half_cell
        self.end_offset = -half_cell - float(roi_end_mode)

    def construct(self, features, rois):
        rois = ops.stop_gradient(rois)
        batch_index = rois[:, 0:1]
        x0 = rois[:, 1:2] + self.start_offset
        y0 = rois[:, 2:3] + self.start_offset
        x1 = rois[:, 3:4] + self.end_offset
        y1 = rois[:, 4:5] + self.end_offset
        skipped = ops.logical_and(ops.abs(x0) < _KERNEL_SKIP_TOLERANCE, ops.abs(x1) < _KERNEL_SKIP_TOLERANCE)
        x0 = ops.where(skipped, x0 - 2 * _KERNEL_SKIP_TOLERANCE, x0)
        return self.roi_align(features, ops.concat((batch_index, x0, y0, x1, y1), axis=1))

    def extend_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
