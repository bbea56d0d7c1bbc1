"""The region of a static canvas that detectron2 would have computed on.

detectron2 batches images with `ImageList.from_tensors`: each image's content at the
top-left, zeros up to the batch's largest height and width, rounded up to the backbone's
`size_divisibility` (0 for the C4 ResNet DeFRCN uses: no rounding). Every convolution then
sees zero padding at the border of that tensor. Here images sit in a fixed canvas, which
is usually larger, so positions past that border hold computed values instead of zeros.
The detector therefore works with an *extent* per image (the height and width of the
tensor detectron2 would have built) and zeroes, before every operation that looks at
neighbours, the map positions outside it; anchors outside it are not used and ROIAlign
clamps to it. The results then do not depend on the canvas.

A map of stride s computed from an extent of n pixels has ceil(n / s) valid positions
(convolutions with padding k // 2 and stride 2 give ceil(n / 2) outputs).
"""
import mindspore as ms
import mindspore.ops as ops

__all__ = ["apply_mask", "padded_extent", "region_mask", "valid_cells"]


def padded_extent(image_sizes, size_divisibility=0, batch_max=True):
    """(B, 2) float32 extents (height, width) from the content sizes (B, 2).

    batch_max=True gives every image the batch's largest size (training batches, as
    detectron2 pads them); False keeps each image's own size (inference one image at a time,
    as DeFRCN evaluates). Sizes are rounded up to a multiple of `size_divisibility` (> 1).
    """
    extent = image_sizes
    if batch_max:
        extent = ops.broadcast_to(image_sizes.max(axis=0, keepdims=True), image_sizes.shape)
    if size_divisibility > 1:
        extent = ops.ceil(extent / size_divisibility) * size_divisibility
    return extent


def valid_cells(extent, stride):
    """(B, 2) float32: valid rows and columns of a stride-`stride` map (ceil(extent / stride))."""
    return ops.ceil(extent / float(stride))


def region_mask(extent, height, width, stride):
    """(B, 1, height, width) float32: 1 inside the extent at this stride, 0 outside."""
    cells = valid_cells(extent, stride)
    batch = extent.shape[0]
    rows = ops.arange(height, dtype=ms.float32).reshape(1, height, 1) < cells[:, 0].reshape(batch, 1, 1)
    cols = ops.arange(width, dtype=ms.float32).reshape(1, 1, width) < cells[:, 1].reshape(batch, 1, 1)
    return ops.logical_and(rows, cols).astype(ms.float32).reshape(batch, 1, height, width)


def apply_mask(x, mask):
    """x (B, C, H, W) with the positions where `mask` (B, 1, H, W) is 0 set to 0.

    The mask is tiled to x's channels so the product has no broadcast: MindSpore 2.8's CPU
    Mul holds about five maps' worth of memory when it broadcasts over channels, and only
    the output when both shapes are equal (1.1 GiB less at 800 x 1333 in the ResNet trunk).
    """
    return x * ops.tile(mask, (1, x.shape[1], 1, 1))
