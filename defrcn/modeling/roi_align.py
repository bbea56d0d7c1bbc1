"""ROIAlign as two matrix products: exact detectron2 ROIAlign / ROIAlignV2 from stock ops.

Bilinear sampling on a regular sub-grid is separable: the value of one output bin is

    out[c, i, j] = sum_y sum_x  Wy[i, y] * F[c, y, x] * Wx[j, x]

where Wy[i, y] averages, over the bin's sample rows, the bilinear weight each sample gives
feature row y (detectron2's border rules: a sample outside [-1, H] contributes nothing, one
in [-1, 0) or [H-1, H] is clamped to the edge), and Wx likewise over columns. So a RoI's
P x P output is Wy @ F @ Wx^T, computed for all RoIs of an image as two batched matmuls.
This costs R * C * H * W * P multiply-adds however small the RoIs are, but it runs at matmul
speed, where MindSpore's CPU `ops.ROIAlign` kernel took 4.4 s for 1000 RoIs on a
1024 x 32 x 32 map (torchvision 0.27 s; this module 0.2-0.3 s), and it gives detectron2's
adaptive sampling (sampling_ratio 0: ceil(roi_size / P) points per bin and axis) exactly,
which the kernel cannot. Its gradient (to the features) is the transposed products.
"""

import math

import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops

from defrcn.modeling.broadcast import expand_all

__all__ = ["axis_weights", "roi_align_grouped", "max_samples_per_bin", "swap_last_two_axes", "ROIS_PER_CALL",
           "INFERENCE_ROIS_PER_CALL"]

# RoIs per image pooled at once. The gradient to the map sums the chunks' parts, so the training
# size also fixes the gradient's last bits; inference, with no such sum, takes smaller calls
# (R-101, 256 -> 128: peak RSS at 512 x 512 1,629 -> 1,537 MiB, at 800 x 1333 2,134 -> 2,014;
# 128 -> 64: 800 x 1333 1,708-1,710 -> 1,642-1,645, 512 x 512 1,483-1,487 -> 1,489-1,492, same
# time; 32 pooled the 800 x 1333 image in 1,657-1,660).
ROIS_PER_CALL = 256
INFERENCE_ROIS_PER_CALL = 64


def max_samples_per_bin(length, output_size, sampling_ratio):
    """The static number of sample slots per bin along an axis of `length` feature cells.

    Adaptive sampling needs ceil(roi_size / output_size) points; RoIs inside the map are at
    most `length` cells (+1 for the unaligned RoI clamp), so that bounds it. Larger RoIs
    (boxes reaching far outside the map, which proposals and ground truth never do) get this
    many points instead of more.
    """
    if sampling_ratio > 0:
        return int(sampling_ratio)
    return int(math.ceil((length + 1) / output_size))


def axis_weights(start, size, length, output_size, sampling_ratio, max_samples, limit=None):
    """Per-bin sampling weights along one axis.

    Args:
        start, size: (..., 1) float32 RoI start and extent in feature cells (already offset
            and, for unaligned RoIAlign, clamped).
        length: feature map extent along the axis (H or W).
        limit: optional float32 tensor broadcastable to (..., 1, 1): the map ends there for
            the border rules (cells past it get no weight), e.g. per image.
        output_size: bins along the axis (P).
        sampling_ratio: points per bin; 0 = ceil(size / output_size) (adaptive).
        max_samples: static number of sample slots (see max_samples_per_bin).

    Returns:
        (..., P, length) float32: weight of each feature row/column in each bin, already
        divided by the bin's sample count.
    """
    bin_size = size / output_size  # (..., 1)
    if sampling_ratio > 0:
        grid = ops.full_like(bin_size, float(sampling_ratio))
    else:
        grid = ops.ceil(bin_size)
    grid = ops.minimum(grid, float(max_samples))
    safe_grid = ops.maximum(grid, 1.0)
    bins = ops.arange(output_size, dtype=ms.float32).reshape(output_size, 1)  # (P, 1)
    slots = ops.arange(max_samples, dtype=ms.float32).reshape(1, max_samples)  # (1, S)
    start = start.expand_dims(-1)  # (..., 1, 1)
    bin_size = bin_size.expand_dims(-1)
    grid = grid.expand_dims(-1)
    safe_grid = safe_grid.expand_dims(-1)
    # sample coordinates (..., P, S) and which slots are real samples
    coords = start + bins * bin_size + (slots + 0.5) * bin_size / safe_grid
    end = float(length) if limit is None else limit
    used = ops.logical_and(slots < grid, ops.logical_and(coords >= -1.0, coords <= end))
    coords = ops.minimum(ops.maximum(coords, 0.0), end - 1.0)
    cells = ops.arange(length, dtype=ms.float32)  # (L,)
    # (..., P, S, L) ops on equal shapes (`expand_all`: a broadcast op keeps 4 x its output)
    points, cells = expand_all(coords.expand_dims(-1), cells)
    hat = ops.relu(1.0 - ops.abs(points - cells))
    hat = ops.mul(*expand_all(hat, used.astype(ms.float32).expand_dims(-1)))
    return _divide(*expand_all(hat.sum(axis=-2), safe_grid))


class _SeparableProducts(nn.Cell):
    """pooled = (Wa @ M) @ Wb^T per RoI, with a hand-written backward to M only.

    construct(mat (B, A, C*L), weight_a (B, N*P, A), weight_b (B*N, P, L)) -> (B*N, P*C, P).
    Autodiff would keep the (B*N, P*C, L) intermediate alive for the weights' gradient, which
    is never used (they come from boxes); this backward needs only the two weights.
    """

    def construct(self, mat, weight_a, weight_b):
        batch_rois, size, length = weight_b.shape
        partial = ops.bmm(weight_a, mat).reshape(batch_rois, -1, length)
        return ops.bmm(partial, weight_b.transpose(0, 2, 1))

    def bprop(self, mat, weight_a, weight_b, out, dout):
        batch = mat.shape[0]
        d_partial = ops.bmm(dout, weight_b).reshape(batch, weight_a.shape[1], -1)
        d_mat = ops.bmm(weight_a.transpose(0, 2, 1), d_partial)
        return d_mat, ops.zeros_like(weight_a), ops.zeros_like(weight_b)


_divide = ops.RealDiv()  # `/` without the CPU Div kernel's per-element offsets (boxes.py)
_bmm_transpose_a = ops.BatchMatMul(transpose_a=True)
_bmm_transpose_b = ops.BatchMatMul(transpose_b=True)


def swap_last_two_axes(x):
    """(B, M, K) -> (B, K, M), as a batched product with an identity matrix (exact).

    MindSpore 2.8's CPU Transpose kernel keeps an int64 offset per element (twice a float32
    tensor) from graph compilation on, for every Transpose node: a 48 MiB transpose held 114 MiB
    and the pooled RoI maps of an image 0.4 GiB. A product with the identity of the shorter axis
    costs B * M * K * min(M, K) multiply-adds and holds nothing but its output.
    """
    batch, rows, cols = x.shape
    if rows <= cols:  # x^T @ I_rows
        eye = ops.broadcast_to(ops.eye(rows, rows, x.dtype).expand_dims(0), (batch, rows, rows))
        return _bmm_transpose_a(x, eye)
    eye = ops.broadcast_to(ops.eye(cols, cols, x.dtype).expand_dims(0), (batch, cols, cols))
    return _bmm_transpose_b(eye, x)  # I_cols @ x^T


_products = _SeparableProducts()


def roi_align_grouped(features, boxes, output_size, spatial_scale, sampling_ratio=0, aligned=True,
                      rois_per_call=ROIS_PER_CALL, valid_cells=None, bin_stride=1):
    """ROIAlign of boxes grouped by image.

    Args:
        features: (B, C, H, W) float32.
        boxes: (B, N, 4) float32 [x0, y0, x1, y1] in image pixels, N boxes per image.
        output_size, spatial_scale, sampling_ratio, aligned: as detectron2's ROIAlign.
        rois_per_call: boxes per image pooled at once on a map at least as wide as tall
            (memory; the pooled values do not depend on it, the gradient's last bits do).
        valid_cells: optional (B, 2) float32 rows and columns of each image's map: sampling
            treats the map as ending there (detectron2 on a map of that size).
        bin_stride: compute only every `bin_stride`-th bin along each axis (bins 0, s, 2s, ...),
            each with the value it has in the full P x P grid.

    Returns:
        (B*N, C, P', P') float32, P' = ceil(P / bin_stride). No gradient flows into `boxes`.
    """
    batch, channels, height, width = features.shape
    num = boxes.shape[1]
    size = output_size
    boxes = ops.stop_gradient(boxes) * spatial_scale
    if aligned:
        boxes = boxes - 0.5
    x0, y0, x1, y1 = boxes[..., 0:1], boxes[..., 1:2], boxes[..., 2:3], boxes[..., 3:4]
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = ops.maximum(roi_w, 1.0), ops.maximum(roi_h, 1.0)
    limit_y = limit_x = None
    if valid_cells is not None:
        limit_y = valid_cells[:, 0].reshape(batch, 1, 1, 1)
        limit_x = valid_cells[:, 1].reshape(batch, 1, 1, 1)
    weight_y = axis_weights(y0, roi_h, height, size, sampling_ratio,
                            max_samples_per_bin(height, size, sampling_ratio), limit_y)  # (B, N, P, H)
    weight_x = axis_weights(x0, roi_w, width, size, sampling_ratio,
                            max_samples_per_bin(width, size, sampling_ratio), limit_x)  # (B, N, P, W)
    if bin_stride > 1:  # a bin's weights depend on its own index only
        weight_y, weight_x = weight_y[:, :, ::bin_stride], weight_x[:, :, ::bin_stride]
        size = weight_y.shape[2]
    weight_y = ops.stop_gradient(weight_y)
    weight_x = ops.stop_gradient(weight_x)
    # The map's columns are contracted first, so the map is needed as (B, W, C*H): a swap of the
    # last two axes of its (B, C*H, W) view. Per RoI: (Pj, W) @ (W, C*H) = (Pj, C, H), then
    # @ (H, Pi) = (Pj, C, Pi), and a last swap gives (C, Pi, Pj).
    mat = swap_last_two_axes(features.reshape(batch, channels * height, width))
    # RoIs in chunks, each after the previous one: the (chunk, Pj*C, H) intermediate of one
    # chunk is alive at a time (training at 512 x 512, batch 2: 940 MB for all 1024 at once).
    # A map taller than wide gets fewer RoIs per chunk, which bounds it as a square map would.
    per_call = max(1, rois_per_call * min(height, width) // height)
    parts = []
    previous = None
    for begin in range(0, num, per_call):
        end = min(begin + per_call, num)
        first_part = weight_x[:, begin:end].reshape(batch, (end - begin) * size, width)
        if previous is not None:
            first_part = ops.depend(first_part, previous)
        second_part = weight_y[:, begin:end].reshape(batch * (end - begin), size, height)
        previous = _products(mat, first_part, second_part)
        parts.append(previous.reshape(batch, end - begin, -1))
    pooled = parts[0] if len(parts) == 1 else ops.concat(parts, axis=1)
    pooled = swap_last_two_axes(pooled.reshape(batch * num, size, channels * size))  # (B*N, C*Pi, Pj)
    return pooled.reshape(batch * num, channels, size, size)
