"""The DeFRCN detector: Faster R-CNN C4 with gradient-decoupled RPN and ROI branches.

    images -> trunk (stem..res4, stride 16) -> feature
        feature -> GDL(λ_rpn) -> affine -> RPN -> proposals (+ RPN losses)
        feature -> GDL(λ_roi) -> affine -> ROI heads (ROIAlign 7x7, res5, predictor)

`construct(images, image_sizes, gt_boxes, gt_classes, gt_valid)` returns, in training,
`(total_loss, loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg)` and, in inference,
`(boxes, scores, classes, valid)` with a fixed number of detections per image
(boxes in canvas pixels; divide by the loader's `scales` for original pixels).
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops
from mindspore import Parameter, Tensor

from defrcn.modeling.backbone import build_resnet_c4, count_parameters, set_frozen_bn_impl
from defrcn.modeling.gdl import DecoupledBranch
from defrcn.modeling.lean_backward import CONV_BACKWARDS, lean_backward_for_device, use_lean_backward
from defrcn.modeling.padding import padded_extent
from defrcn.modeling.pooler import ROIPooler
from defrcn.modeling.predictor import BoxPredictor
from defrcn.modeling.roi_heads import Res5ROIHeads
from defrcn.modeling.rpn import RPN
from defrcn.modeling.winograd import resolve_res5_conv, use_winograd
from defrcn.utils.heap import ReleasesHeapAfterCompile

LOSS_NAMES = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
# model.frozen_bn_impl: where each frozen BN after a convolution runs (`set_frozen_bn_impl`).
FROZEN_BN_SETTINGS = ("auto", "kernel", "in_conv")


class DeFRCN(ReleasesHeapAfterCompile, nn.Cell):
    """Faster R-CNN C4 with two gradient-decoupled branches (see the module docstring)."""

    loss_names = LOSS_NAMES
    # what `solver.amp_level` converts (defrcn.engine.precision); geometry and losses stay float32
    mixed_precision_cells = ("backbone", "proposal_generator.head", "roi_heads.res5", "roi_heads.box_predictor")

    def __init__(self, *, backbone, rpn_branch, roi_branch, rpn, roi_heads, size_divisibility=0):
        super().__init__()
        self.size_divisibility = int(size_divisibility)
        self.backbone = backbone
        self.rpn_branch = rpn_branch
        self.roi_branch = roi_branch
        self.proposal_generator = rpn
        self.roi_heads = roi_heads
        # training-step counter that seeds the samplers' keys; checkpointed, so resume is exact
        self.sample_step = Parameter(Tensor(0, ms.int32), name="sample_step", requires_grad=False)

    def construct(self, images, image_sizes, gt_boxes=None, gt_classes=None, gt_valid=None):
        # Training batches are padded to their largest image, inference to each image's own
        # size (DeFRCN tests one image at a time): see defrcn.modeling.padding.
        extent = padded_extent(image_sizes, self.size_divisibility, batch_max=self.training)
        features = self.backbone(images, extent)
        rpn_features = self.rpn_branch(features)
        roi_features = self.roi_branch(features)
        if self.training:
            step = self.sample_step * 1
            proposals, proposal_valid, loss_rpn_cls, loss_rpn_loc = self.proposal_generator(
                rpn_features, image_sizes, gt_boxes, gt_valid, step, extent)
            loss_cls, loss_box_reg = self.roi_heads(
                roi_features, proposals, proposal_valid, image_sizes, gt_boxes, gt_classes, gt_valid,
                step, extent)
            total = loss_rpn_cls + loss_rpn_loc + loss_cls + loss_box_reg
            total = ops.depend(total, ops.assign_add(self.sample_step, Tensor(1, ms.int32)))
            return total, loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg
        proposals, proposal_valid = self.proposal_generator(rpn_features, image_sizes, gt_boxes, gt_valid,
                                                            None, extent)
        return self.roi_heads(roi_features, proposals, proposal_valid, image_sizes, None, None, None, None,
                              extent)


def build_detector(*, num_classes, depth=101, norm="frozen_bn", freeze_at=3, stride_in_1x1=True,
                   gdl_scale_rpn=0.0, gdl_scale_roi=0.75, freeze_res5=False, cls_dropout=0.0,
                   pooler_resolution=7, pooler_impl="matmul", rpn=None, roi=None, sample_salt=0,
                   size_divisibility=0, res5_conv="direct", conv_backward="stock", frozen_bn_impl="kernel",
                   verbose=True):
    """Build DeFRCN from plain values (the recipe's `model(cfg)` maps cfg onto these).

    `rpn` and `roi` are dicts of keyword arguments for `RPN` and `Res5ROIHeads`
    (e.g. post_nms_topk_train, batch_size_per_image); unspecified ones keep DeFRCN's values.
    `sample_salt` (the data-parallel rank) gives each rank its own sampling stream.
    `size_divisibility`: the padding multiple the results are computed for (detectron2's
    `Backbone.size_divisibility`, 0 for the C4 ResNet): whatever the canvas, the detector gives
    what detectron2 gives on the image padded to that multiple (and to the batch's largest
    image in training).
    `res5_conv`: "direct" (the stock convolution), "winograd" (res5's 3x3 convolutions on its
    4x4 maps as Winograd F(4x4, 3x3) matmuls, `winograd.py`; same parameters) or "auto"
    (Winograd on CPU).
    `conv_backward`: the backward of the trunk's and the RPN head's trainable 3x3 convolutions:
    "stock", "lean" (keeps only their inputs, `lean_backward.py`; same parameters, gradients
    equal to rounding) or "auto" (lean where the device needs it: CPU).
    `frozen_bn_impl`: how a frozen BatchNorm after a convolution runs: "kernel" (MindSpore's
    batch-norm kernel), "in_conv" (inside the convolution's weight, `set_frozen_bn_impl`) or
    "auto" (in res5's convolutions, whose RoI maps are small; the kernel in the trunk).
    """
    res5_conv = resolve_res5_conv(res5_conv)
    if conv_backward not in CONV_BACKWARDS:
        raise ValueError(f"conv_backward must be one of {', '.join(CONV_BACKWARDS)}, got {conv_backward!r}")
    if frozen_bn_impl not in FROZEN_BN_SETTINGS:
        raise ValueError(f"frozen_bn_impl must be one of {', '.join(FROZEN_BN_SETTINGS)}, got {frozen_bn_impl!r}")
    trunk, res5 = build_resnet_c4(depth, norm=norm, freeze_at=freeze_at, stride_in_1x1=stride_in_1x1)
    set_frozen_bn_impl(trunk, "in_conv" if frozen_bn_impl == "in_conv" else "kernel")
    set_frozen_bn_impl(res5, "kernel" if frozen_bn_impl == "kernel" else "in_conv")
    if res5_conv == "winograd":
        use_winograd(res5)
    if freeze_res5:
        # ROI_HEADS.FREEZE_FEAT (the original's rcnn.py): res5's parameters stop training, yet the
        # box losses still flow back through res5 to the ROI affine and, scaled by the GDL, to res4.
        for param in res5.get_parameters():
            param.requires_grad = False
    channels = trunk.out_channels
    rpn_cell = RPN(in_channels=channels, sample_salt=sample_salt, **(rpn or {}))
    if conv_backward == "lean" or (conv_backward == "auto" and lean_backward_for_device()):
        use_lean_backward(trunk)
        use_lean_backward(rpn_cell)
    predictor = BoxPredictor(res5.out_channels, num_classes, cls_dropout=cls_dropout, sample_salt=sample_salt)
    pooler = ROIPooler(output_size=pooler_resolution, spatial_scale=1.0 / 16, sampling_ratio=0, aligned=True,
                       impl=pooler_impl, bin_stride=res5.input_stride)
    heads = Res5ROIHeads(pooler=pooler, res5=res5, predictor=predictor, num_classes=num_classes,
                         sample_salt=sample_salt, **(roi or {}))
    model = DeFRCN(backbone=trunk,
                   rpn_branch=DecoupledBranch(channels, gdl_scale_rpn),
                   roi_branch=DecoupledBranch(channels, gdl_scale_roi),
                   rpn=rpn_cell, roi_heads=heads, size_divisibility=size_divisibility)
    if verbose:
        counts = count_parameters(model)
        print(f"DeFRCN R-{depth} C4, {num_classes} classes: {counts['total']:,} parameters "
              f"({counts['trainable']:,} trainable, {counts['frozen']:,} frozen)")
    return model
