"""C4 ROI heads (detectron2's Res5ROIHeads as DeFRCN configures it).

Training: proposals + ground truth -> IoU 0.5 matching -> balanced sampling of a fixed
number of RoIs per image -> ROIAlign 7x7 on res4 -> res5 -> mean pool -> predictor ->
softmax CE and L1 box loss. Inference: the same features for the RPN's proposals,
then `postprocess.detect` (per-class decode, score threshold, per-class NMS, top-k).
All shapes are static: every image contributes exactly `batch_size_per_image` RoIs,
with a validity weight for the slots that could not be filled. With an `extent`
(`defrcn.modeling.padding`) ROIAlign samples each image's map as if it ended there.
"""
import mindspore as ms
import mindspore.nn as nn
import mindspore.ops as ops

from defrcn.modeling.box_coding import BoxCoder
from defrcn.modeling.boxes import pairwise_iou
from defrcn.modeling import padding
from defrcn.modeling.matching import match
from defrcn.modeling.nms import nms_block_for_device
from defrcn.modeling.postprocess import detect
from defrcn.modeling.random_keys import hash_uniform
from defrcn.modeling.sampling import sample_balanced

# detectron2 ROI_BOX_HEAD.BBOX_REG_WEIGHTS
ROI_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# RoIs per image pooled and run through res5 at once in inference: bounds the pooled maps and
# res5 activations alive at a time (R-101, 512 x 512, 1 Dec: 2.0 GiB peak with 250, 1.96 with 125).
INFERENCE_CHUNK = 250


def spatial_mean(x):
    """(N, C, H, W) -> (N, C): each map's mean (DeFRCN's Res5ROIHeads: box_features.mean(dim=[2, 3])),
    as a product with a column of 1 / (H * W): MindSpore 2.8's CPU ReduceMean took 39 ms on
    (250, 2048, 4, 4), this 11 ms."""
    num, channels, height, width = x.shape
    cells = height * width
    weights = ops.full((cells, 1), 1.0 / cells, dtype=x.dtype)
    return ops.matmul(x.reshape(num * channels, cells), weights).reshape(num, channels)


class Res5ROIHeads(nn.Cell):
    """RoI pooling, the res5 box head and the box predictor, with losses and inference.

    Args (keyword-only):
        pooler: ROIPooler over the res4 feature (its bin_stride matching res5's input_stride).
        res5: the res5 stage (e.g. ResNet layer4), (R, C4, 7, 7) -> (R, C5, 4, 4), or
            (R, C4, 4, 4) -> (R, C5, 4, 4) for a res5 that reads its input at stride 2.
        predictor: BoxPredictor over the mean-pooled res5 feature.
        num_classes: foreground classes C (background is index C).
        batch_size_per_image: RoIs sampled per image in training (512 in DeFRCN).
        positive_fraction: target share of foreground RoIs (0.25).
        iou_threshold: proposal/gt IoU at or above which a RoI is foreground (0.5).
        score_thresh, nms_thresh, detections_per_image, pre_nms_topk: inference settings.
        sample_salt: separates the sampling streams of data-parallel ranks.
        inference_chunk: RoIs per image through pooling and res5 at once in inference.
        nms_block: NMS block size (`defrcn.modeling.nms.nms_sorted`: exact at any size);
            None: what the device needs (`nms_block_for_device`).
    """

    def __init__(self, *, pooler, res5, predictor, num_classes, batch_size_per_image=512,
                 positive_fraction=0.25, iou_threshold=0.5, score_thresh=0.05, nms_thresh=0.5,
                 detections_per_image=100, pre_nms_topk=4096, sample_salt=0,
                 inference_chunk=INFERENCE_CHUNK, nms_block=None):
        super().__init__()
        self.pooler = pooler
        self.feature_stride = round(1.0 / pooler.spatial_scale)
        self.res5 = res5
        self.box_predictor = predictor
        self.num_classes = num_classes
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.iou_threshold = iou_threshold
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_image = detections_per_image
        self.pre_nms_topk = pre_nms_topk
        self.sample_salt = sample_salt
        self.inference_chunk = int(inference_chunk)
        self.nms_block = nms_block_for_device() if nms_block is None else int(nms_block)
        self.box_coder = BoxCoder(ROI_BOX_WEIGHTS)

    def _box_features(self, features, boxes, valid_cells=None):
        """features (B, C, H, W), boxes (B, N, 4) -> pooled vectors (B*N, C5); `valid_cells`
        (B, 2): the rows and columns of each image's map the pooler samples (None: all)."""
        num = boxes.shape[1]
        if self.training or num <= self.inference_chunk:
            return self._box_features_once(features, boxes, valid_cells)
        # Inference: pool and run res5 chunk by chunk, each chunk ordered after the previous
        # one, so the pooled maps and res5 activations of only one chunk are alive at a time.
        batch = boxes.shape[0]
        parts = []
        previous = None
        for start in range(0, num, self.inference_chunk):
            chunk = boxes[:, start:min(start + self.inference_chunk, num)]
            if previous is not None:
                chunk = ops.depend(chunk, previous)
            previous = self._box_features_once(features, chunk, valid_cells)
            parts.append(previous.reshape(batch, chunk.shape[1], -1))
        return ops.concat(parts, axis=1).reshape(batch * num, -1)

    def _box_features_once(self, features, boxes, valid_cells):
        return spatial_mean(self.res5(self.pooler(features, boxes, valid_cells)))

    def label_and_sample(self, proposals, proposal_valid, gt_boxes, gt_classes, gt_valid, step):
        """Match proposals (plus the gt boxes) to gt and sample a fixed set per image.

        Returns, each with a leading (B, S) shape, S = batch_size_per_image:
        boxes (B, S, 4), classes (B, S) int32 in [0, C] (C = background),
        target boxes (B, S, 4), sample weights (B, S) float (0 for unfilled slots).
        """
        boxes_out, classes_out, targets_out, weights_out = [], [], [], []
        for b in range(proposals.shape[0]):
            # gt boxes are appended to the proposals (PROPOSAL_APPEND_GT)
            cand = ops.concat((proposals[b], gt_boxes[b]), axis=0)
            cand_valid = ops.concat((proposal_valid[b], gt_valid[b]), axis=0)
            iou = pairwise_iou(gt_boxes[b], cand)
            matched, labels = match(iou, gt_valid[b], (self.iou_threshold,), (0, 1), False)
            labels = ops.where(cand_valid > 0, labels, ops.full_like(labels, -1))
            keys = hash_uniform(labels.shape[0], step, 7919 * self.sample_salt + 2 * b + 1)
            idx, sample_labels, sample_weight = sample_balanced(
                labels, self.batch_size_per_image, self.positive_fraction, keys)
            gt_idx = ops.gather(matched, idx, 0)
            classes = ops.gather(gt_classes[b], gt_idx, 0).astype(ms.int32)
            background = ops.full_like(classes, self.num_classes)
            classes = ops.where(sample_labels > 0, classes, background)
            boxes_out.append(ops.gather(cand, idx, 0))
            classes_out.append(classes)
            targets_out.append(ops.gather(gt_boxes[b], gt_idx, 0))
            weights_out.append(sample_weight.astype(ms.float32))
        return (ops.stack(boxes_out), ops.stack(classes_out), ops.stack(targets_out),
                ops.stack(weights_out))

    def losses(self, logits, deltas, boxes, classes, targets, weights):
        """Softmax CE over sampled RoIs and L1 box loss over the foreground ones.

        Both are divided by the number of sampled RoIs (detectron2's fast_rcnn losses).
        """
        num = ops.maximum(weights.sum(), 1.0)
        ce = ops.cross_entropy(logits, classes, reduction="none")
        loss_cls = (ce * weights).sum() / num
        foreground = ops.logical_and(classes < self.num_classes, weights > 0).astype(ms.float32)
        safe_classes = ops.minimum(classes, self.num_classes - 1)
        one_hot = ops.one_hot(safe_classes, self.num_classes, 1.0, 0.0)
        per_class = deltas.reshape(deltas.shape[0], self.num_classes, 4)
        pred = (per_class * one_hot.expand_dims(2)).sum(axis=1)
        # Only foreground rows have a box target (detectron2 indexes them); the others get a unit
        # box for both ends, so an image without ground truth (matched to a zero padding row) or an
        # empty slot cannot put log(0) or 0 / 0 into the loss.
        is_fg = (foreground > 0).expand_dims(1)
        unit = ops.concat((ops.zeros_like(boxes[:, :2]), ops.ones_like(boxes[:, 2:])), axis=1)
        target_deltas = self.box_coder.encode(ops.where(is_fg, boxes, unit), ops.where(is_fg, targets, unit))
        loss_box = (ops.abs(pred - target_deltas).sum(axis=1) * foreground).sum() / num
        return loss_cls, loss_box

    def construct(self, features, proposals, proposal_valid, image_sizes,
                  gt_boxes=None, gt_classes=None, gt_valid=None, step=None, extent=None):
        valid_cells = None if extent is None else padding.valid_cells(extent, self.feature_stride)
        if self.training:
            boxes, classes, targets, weights = self.label_and_sample(
                ops.stop_gradient(proposals), proposal_valid, gt_boxes, gt_classes, gt_valid, step)
            feats = self._box_features(features, boxes, valid_cells)
            logits, deltas = self.box_predictor(feats, step)
            flat = boxes.shape[0] * boxes.shape[1]
            return self.losses(logits, deltas, boxes.reshape(flat, 4), classes.reshape(flat),
                               targets.reshape(flat, 4), weights.reshape(flat))
        feats = self._box_features(features, proposals, valid_cells)
        logits, deltas = self.box_predictor(feats)
        return detect(
            logits, deltas, proposals, proposal_valid, image_sizes, self.box_coder,
            num_classes=self.num_classes, score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh, detections_per_image=self.detections_per_image,
            pre_nms_topk=self.pre_nms_topk, nms_block=self.nms_block)
