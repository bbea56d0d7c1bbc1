"""RoI pooling over one feature map: detectron2's ROIAlign / ROIAlignV2.

Two implementations behind one Cell (`impl`):
- "matmul" (default, every device): `defrcn.modeling.roi_align`, two batched matrix products
  per image. Exact, adaptive sampling (sampling_ratio 0) included; on this 2-core CPU 0.25 s
  for 1000 RoIs on a 1024 x 32 x 32 map against 4.4 s for the stock kernel.
- "kernel": MindSpore's `ops.ROIAlign`. What its 2.8.0 CPU kernel does, checked against the
  numpy reference in tests/modeling/test_pooler.py:
  - start = x0 * scale; end = (x1 + roi_end_mode) * scale. roi_end_mode=1 adds one input
    pixel and never clamps; roi_end_mode=0 clamps the RoI to at least 1x1 feature cell.
  - bilinear sampling is detectron2's (zero outside [-1, H] x [-1, W], clamped at the border).
  - sample_num = 0 uses floor(roi / out) (detectron2 uses ceil) and returns NaN when a RoI is
    smaller than the output grid: unusable, so adaptive sampling is replaced by
    KERNEL_ADAPTIVE_SAMPLES fixed points per bin and axis.
  - a RoI whose x0 and x1 are both within 1e-3 of 0 is skipped (output uninitialised); such
    RoIs are nudged.
  For aligned=True the pooler passes start x0 - 0.5/scale and end x1 - 0.5/scale - 1 with
  roi_end_mode=1, which gives exactly x * scale - 0.5 for both corners.
"""

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops

from defrcn.modeling.roi_align import INFERENCE_ROIS_PER_CALL, ROIS_PER_CALL, roi_align_grouped

__all__ = ["ROIPooler", "KERNEL_ADAPTIVE_SAMPLES", "POOLER_IMPLS"]

POOLER_IMPLS = ("matmul", "kernel")
# Points per bin and axis the "kernel" implementation uses for sampling_ratio 0: what
# detectron2's adaptive rule gives for RoIs of 7-14 feature cells (7x7 output).
KERNEL_ADAPTIVE_SAMPLES = 2
# ops.ROIAlign skips a RoI whose x0 and x1 are both closer than this to 0.
_KERNEL_SKIP_TOLERANCE = 1e-3


class ROIPooler(nn.Cell):
    """ROIAlign of boxes on one feature map.

    Args:
        output_size: pooled height = width (DeFRCN: 7).
        spatial_scale: feature size / image size (1/16 for res4).
        sampling_ratio: points per bin and axis; 0 = adaptive, ceil(roi_size / output_size).
        aligned: True = detectron2 ROIAlignV2 (box corner c maps to c * scale - 0.5);
            False = legacy ROIAlign (c * scale, RoI clamped to at least one cell).
        impl: "matmul" or "kernel" (see the module docstring).
        bin_stride: only every `bin_stride`-th bin along each axis (bins 0, s, 2s, ...), for a
            head that reads its input at that stride (`ResNetRes5.input_stride`); each bin has
            the value it has in the full grid. The "matmul" implementation computes only those.

    construct(features (B, C, H, W) float32, boxes (B, N, 4) float32 [x0, y0, x1, y1] in image
    pixels, N per image, valid_cells=None) -> (B*N, C, P, P), P = ceil(output_size / bin_stride),
    image-major.
    No gradient flows into `boxes`. `valid_cells` (B, 2) float32: each image's map ends at
    these rows and columns for sampling ("matmul" only; the kernel samples the whole map).
    """

    def __init__(self, output_size=7, spatial_scale=1.0 / 16, sampling_ratio=0, aligned=True, impl="matmul",
                 bin_stride=1):
        super().__init__()
        if impl not in POOLER_IMPLS:
            raise ValueError(f"pooler impl must be one of {POOLER_IMPLS}, got {impl!r}")
        if int(bin_stride) < 1:
            raise ValueError(f"pooler bin_stride must be >= 1, got {bin_stride!r}")
        self.bin_stride = int(bin_stride)
        self.output_size = int(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.impl = impl
        if impl == "kernel":
            sample_num = self.sampling_ratio if self.sampling_ratio > 0 else KERNEL_ADAPTIVE_SAMPLES
            roi_end_mode = 1 if self.aligned else 0
            self.roi_align = ops.ROIAlign(self.output_size, self.output_size, self.spatial_scale,
                                          sample_num, roi_end_mode)
            half_cell = 0.5 / self.spatial_scale if self.aligned else 0.0
            # Offsets in image pixels added to (x0, y0) and (x1, y1) before the kernel scales them.
            self.start_offset = -half_cell
            self.end_offset = -half_cell - float(roi_end_mode)

    def construct(self, features, boxes, valid_cells=None):
        if self.impl == "matmul":  # stops the gradient into boxes itself
            rois_per_call = ROIS_PER_CALL if self.training else INFERENCE_ROIS_PER_CALL
            return roi_align_grouped(features, boxes, self.output_size, self.spatial_scale,
                                     self.sampling_ratio, self.aligned, rois_per_call=rois_per_call,
                                     valid_cells=valid_cells, bin_stride=self.bin_stride)
        pooled = self._kernel(features, ops.stop_gradient(boxes))
        if self.bin_stride > 1:  # the primitive: the indexing form's gradient fails in PyNative on CPU
            step = self.bin_stride
            pooled = ops.StridedSlice()(pooled, (0, 0, 0, 0), tuple(pooled.shape), (1, 1, step, step))
        return pooled

    def _kernel(self, features, boxes):
        batch, num = boxes.shape[0], boxes.shape[1]
        batch_index = ops.broadcast_to(ops.arange(batch, dtype=ms.float32).reshape(batch, 1, 1), (batch, num, 1))
        rois = ops.concat((batch_index, boxes), axis=2).reshape(batch * num, 5)
        x0 = rois[:, 1:2] + self.start_offset
        y0 = rois[:, 2:3] + self.start_offset
        x1 = rois[:, 3:4] + self.end_offset
        y1 = rois[:, 4:5] + self.end_offset
        skipped = ops.logical_and(ops.abs(x0) < _KERNEL_SKIP_TOLERANCE, ops.abs(x1) < _KERNEL_SKIP_TOLERANCE)
        x0 = ops.where(skipped, x0 - 2 * _KERNEL_SKIP_TOLERANCE, x0)
        return self.roi_align(features, ops.concat((rois[:, 0:1], x0, y0, x1, y1), axis=1))

    def extend_repr(self):
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, impl={self.impl}, "
                f"bin_stride={self.bin_stride}")
