"""Region proposal network for a single stride-16 feature map (Faster R-CNN C4).

Static shapes throughout (GRAPH and PyNative mode): every image gives exactly
`post_nms_topk` proposals plus a validity mask.
"""
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal, Zero

from defrcn.modeling.anchors import AnchorGenerator
from defrcn.modeling.box_coding import RPN_BOX_WEIGHTS, BoxCoder
from defrcn.modeling.boxes import clip_boxes, nonempty_mask, pairwise_iou
from defrcn.modeling.broadcast import expand_all
from defrcn.modeling.matching import match
from defrcn.modeling.nms import EXCLUDED_SCORE, nms_block_for_device, nms_sorted
from defrcn.modeling.padding import apply_mask, region_mask
from defrcn.modeling.random_keys import hash_uniform_at
from defrcn.modeling.sampling import sample_balanced

__all__ = ["RPNHead", "RPN", "flatten_objectness", "flatten_deltas", "smooth_l1", "bce_with_logits"]

# detectron2 StandardRPNHead init: N(0, 0.01) weights, zero biases.
HEAD_INIT_STD = 0.01
# detectron2 MODEL.RPN.IOU_LABELS for IOU_THRESHOLDS (low, high).
RPN_IOU_LABELS = (0, -1, 1)
# Row length (map columns) of the anchor key index: anchors keep their sampling key on any
# canvas up to 16384 pixels wide.
KEY_ROW_CELLS = 1024


def flatten_objectness(objectness):
    """(B, A, H, W) -> (B, H * W * A), the anchor order of AnchorGenerator."""
    batch = objectness.shape[0]
    return objectness.transpose(0, 2, 3, 1).reshape(batch, -1)


def flatten_deltas(deltas):
    """(B, 4A, H, W) -> (B, H * W * A, 4); channel 4a + j is coordinate j of anchor a."""
    batch, channels, height, width = deltas.shape
    per_anchor = deltas.reshape(batch, channels // 4, 4, height, width)
    return per_anchor.transpose(0, 3, 4, 1, 2).reshape(batch, -1, 4)


def smooth_l1(diff, beta):
    """Elementwise smooth-L1 of `diff`; beta == 0 is plain L1 (detectron2 convention)."""
    abs_diff = ops.abs(diff)
    if beta <= 0:
        return abs_diff
    return ops.where(abs_diff < beta, 0.5 * diff * diff / beta, abs_diff - 0.5 * beta)


def bce_with_logits(logits, targets):
    """Elementwise numerically stable binary cross-entropy on logits."""
    return ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


class RPNHead(nn.Cell):
    """3x3 conv + ReLU, then 1x1 objectness (A channels) and 1x1 box deltas (4A channels).

    construct(x (B, C, H, W)) -> (objectness (B, A, H, W), deltas (B, 4A, H, W)); delta
    channel 4a + j is coordinate j of anchor a.
    """

    def __init__(self, in_channels, num_anchors):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, pad_mode="pad", padding=1,
                              has_bias=True, weight_init=Normal(HEAD_INIT_STD), bias_init=Zero())
        self.objectness_logits = nn.Conv2d(in_channels, num_anchors, 1, has_bias=True,
                                           weight_init=Normal(HEAD_INIT_STD), bias_init=Zero())
        self.anchor_deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1, has_bias=True,
                                       weight_init=Normal(HEAD_INIT_STD), bias_init=Zero())
        self.relu = nn.ReLU()

    def construct(self, x):
        hidden = self.relu(self.conv(x))
        return self.objectness_logits(hidden), self.anchor_deltas(hidden)


class RPN(nn.Cell):
    """Anchors + head + proposals (+ losses when training).

    construct(features (B, C, H, W), image_sizes (B, 2) float (height, width) of the resized
    content, gt_boxes (B, G, 4) XYXY, gt_valid (B, G), step=None, extent=None):
      training: (proposals (B, post_nms_topk_train, 4), proposal_valid (B, K) float32,
                 loss_objectness, loss_box)
      eval:     (proposals (B, post_nms_topk_test, 4), proposal_valid (B, K) float32)
    Proposals are sorted by objectness, invalid slots hold zero boxes, no gradient flows
    through them. gt_boxes / gt_valid may be None in eval. Pick the mode with set_train().

    With `extent` (B, 2) (`defrcn.modeling.padding`), the head's input is zeroed outside it
    and only the anchors on map positions inside it are used, as if the map ended there.

    Anchor sampling keys come from `hash_uniform_at(anchor key, step, 7919 * sample_salt + 2 * b)`
    (image b; the ROI heads use the odd salts) when `step` (scalar tensor, the training
    iteration) is given, so a resumed run samples exactly as before; the anchor key depends on
    the anchor's map position, not on the map's width, so the samples do not depend on the
    canvas. With step=None a stateful `ops.UniformReal` (seeded by ms.set_seed) is used instead.

    NMS runs in blocks of at most `nms_block` boxes, exactly equal to one greedy NMS
    (`defrcn.modeling.nms.nms_sorted`; Ascend's NMSWithMask takes at most 2864 boxes; None:
    `nms_block_for_device`).
    """

    def __init__(self, *, in_channels, anchor_sizes=(32, 64, 128, 256, 512),
                 anchor_aspect_ratios=(0.5, 1.0, 2.0), anchor_stride=16, anchor_offset=0.0,
                 pre_nms_topk_train=12000, post_nms_topk_train=2000,
                 pre_nms_topk_test=6000, post_nms_topk_test=1000, nms_thresh=0.7,
                 batch_size_per_image=256, positive_fraction=0.5, iou_thresholds=(0.3, 0.7),
                 box_reg_loss="l1", smooth_l1_beta=0.0, loss_weight=1.0, min_size=0.0,
                 box_weights=RPN_BOX_WEIGHTS, sample_salt=0, nms_block=None):
        super().__init__()
        if box_reg_loss not in ("l1", "smooth_l1"):
            raise ValueError(f"RPN: box_reg_loss must be 'l1' or 'smooth_l1', got {box_reg_loss!r}")
        self.anchor_generator = AnchorGenerator(anchor_sizes, anchor_aspect_ratios,
                                                anchor_stride, anchor_offset)
        self.num_anchors = self.anchor_generator.num_anchors
        self.head = RPNHead(in_channels, self.num_anchors)
        self.box_coder = BoxCoder(box_weights)
        self.pre_nms_topk_train = int(pre_nms_topk_train)
        self.post_nms_topk_train = int(post_nms_topk_train)
        self.pre_nms_topk_test = int(pre_nms_topk_test)
        self.post_nms_topk_test = int(post_nms_topk_test)
        self.nms_thresh = float(nms_thresh)
        self.nms_block = nms_block_for_device() if nms_block is None else int(nms_block)
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self.smooth_l1_beta = 0.0 if box_reg_loss == "l1" else float(smooth_l1_beta)
        self.loss_weight = float(loss_weight)
        self.min_size = float(min_size)
        self.sample_salt = int(sample_salt)
        self.uniform = ops.UniformReal()

    def construct(self, features, image_sizes, gt_boxes=None, gt_valid=None, step=None, extent=None):
        anchor_valid = None
        if extent is not None:
            mask = region_mask(extent, features.shape[2], features.shape[3], self.anchor_generator.stride)
            features = apply_mask(features, mask)
            anchor_valid = self._anchor_valid(mask)
        objectness, deltas = self.head(features)
        anchors = self.anchor_generator(features)
        logits = flatten_objectness(objectness)
        deltas = flatten_deltas(deltas)
        proposal_logits = logits
        if anchor_valid is not None:
            proposal_logits = ops.where(anchor_valid, logits, ops.full_like(logits, EXCLUDED_SCORE))

        if self.training:
            pre_topk, post_topk = self.pre_nms_topk_train, self.post_nms_topk_train
        else:
            pre_topk, post_topk = self.pre_nms_topk_test, self.post_nms_topk_test
        proposals, proposal_valid = self._proposals(
            ops.stop_gradient(proposal_logits), ops.stop_gradient(deltas), anchors, image_sizes,
            pre_topk, post_topk)
        if not self.training:
            return proposals, proposal_valid
        loss_objectness, loss_box = self._losses(logits, deltas, anchors, gt_boxes, gt_valid, step,
                                                 anchor_valid, features.shape[3])
        return proposals, proposal_valid, loss_objectness, loss_box

    def _anchor_valid(self, mask):
        """(B, 1, H, W) region mask -> (B, H * W * A) bool, the anchor order."""
        batch, height, width = mask.shape[0], mask.shape[2], mask.shape[3]
        per_anchor = ops.broadcast_to(mask.reshape(batch, height, width, 1),
                                      (batch, height, width, self.num_anchors))
        return per_anchor.reshape(batch, -1) > 0.5

    def _sampling_keys(self, num_total, width, step, salt):
        anchors_per_row = width * self.num_anchors
        index = ops.arange(0, num_total, dtype=ms.int32)
        row = index // anchors_per_row
        column = index - row * anchors_per_row  # not `%`: FloorMod's per-call size limit on Ascend
        key_index = row * (KEY_ROW_CELLS * self.num_anchors) + column
        return hash_uniform_at(key_index, step, salt)

    def _proposals(self, logits, deltas, anchors, image_sizes, pre_topk, post_topk):
        batch, num_total = logits.shape[0], logits.shape[1]
        take = min(pre_topk, num_total)
        all_boxes = []
        all_valid = []
        for image in range(batch):
            scores, order = ops.topk(logits[image], take)
            boxes = self.box_coder.decode(deltas[image][order], anchors[order])
            boxes = clip_boxes(boxes, image_sizes[image, 0], image_sizes[image, 1])
            usable = ops.logical_and(nonempty_mask(boxes, self.min_size),
                                     ops.isfinite(boxes).all(axis=1))
            usable = ops.logical_and(usable, ops.logical_and(ops.isfinite(scores), scores > EXCLUDED_SCORE))
            # Unusable boxes become empty boxes at the origin: they cannot suppress others.
            boxes = ops.where(usable.reshape(-1, 1), boxes, ops.zeros_like(boxes))
            positions, valid = nms_sorted(boxes, usable, self.nms_thresh, post_topk, self.nms_block)
            kept = boxes[positions] * valid.astype(boxes.dtype).reshape(-1, 1)
            all_boxes.append(kept)
            all_valid.append(valid.astype(ms.float32))
        proposals = ops.stop_gradient(ops.stack(all_boxes))
        return proposals, ops.stop_gradient(ops.stack(all_valid))

    def _losses(self, logits, deltas, anchors, gt_boxes, gt_valid, step, anchor_valid, width):
        batch, num_total = logits.shape[0], logits.shape[1]
        loss_objectness = ops.zeros((), ms.float32)
        loss_box = ops.zeros((), ms.float32)
        for image in range(batch):
            iou = pairwise_iou(gt_boxes[image], anchors)
            if anchor_valid is not None:  # anchors outside the extent match nothing
                inside, iou = expand_all(anchor_valid[image].reshape(1, -1), iou)
                iou = ops.where(inside, iou, ops.full_like(iou, -1.0))
            matched_gt, labels = match(iou, gt_valid[image], self.iou_thresholds,
                                       RPN_IOU_LABELS, allow_low_quality_matches=True)
            if anchor_valid is not None:
                labels = ops.where(anchor_valid[image], labels, ops.full_like(labels, -1))
            if step is None:
                keys = self.uniform((num_total,))
            else:
                keys = self._sampling_keys(num_total, width, step, 7919 * self.sample_salt + 2 * image)
            indices, sample_labels, sample_valid = sample_balanced(
                labels, self.batch_size_per_image, self.positive_fraction, keys)
            indices = ops.stop_gradient(indices)
            sample_valid = ops.stop_gradient(sample_valid)
            targets = sample_labels.astype(ms.float32)
            loss_objectness = loss_objectness + (
                bce_with_logits(logits[image][indices], targets) * sample_valid).sum()

            sampled_anchors = anchors[indices]
            sampled_gt = gt_boxes[image][matched_gt[indices]]
            is_fg = targets * sample_valid
            # Background slots get their anchor as target so the encoding stays finite.
            safe_gt = ops.where(is_fg.reshape(-1, 1) > 0, sampled_gt, sampled_anchors)
            target_deltas = ops.stop_gradient(self.box_coder.encode(sampled_anchors, safe_gt))
            box_error = smooth_l1(deltas[image][indices] - target_deltas, self.smooth_l1_beta)
            loss_box = loss_box + (box_error.sum(axis=1) * is_fg).sum()
        normaliser = float(self.batch_size_per_image * batch)
        scale = self.loss_weight / normaliser
        return loss_objectness * scale, loss_box * scale
