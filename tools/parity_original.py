"""The original DeFRCN side of `tools/parity.py` (run by a PyTorch interpreter, not the project's).

    /tmp/peer/bin/python tools/parity_original.py --defrcn-src /tmp/src/DeFRCN \
        --detectron2-src /tmp/src/detectron2 --work DIR

Reads `DIR/request.json` and `DIR/inputs.npz` written by `tools/parity.py`, builds
er-muyue/DeFRCN's `GeneralizedRCNN` (R-101 C4) from its own config files with random
weights whose frozen-BN statistics are calibrated on one image (so proposals and
detections exist: with random statistics nothing scores above the threshold), saves the weights as .pth
for the project's converter, and records every stage of inference, training (losses and
gradients) and the PCB rescoring into `DIR/original_*.npz`.

It imports only torch, torchvision, detectron2 and DeFRCN (from the given source folders)
plus numpy. The patches it applies at run time (the original was written for detectron2
v0.3 and Python <= 3.9) are listed in PATCHES and in docs/parity.md.
"""
import argparse
import json
import os
import sys

import numpy as np

PATCHES = []


def _patch(text):
    PATCHES.append(text)


def apply_patches():
    """Run-time fixes so DeFRCN (written for detectron2 v0.3, Python 3.7) runs on today's
    detectron2 / Python 3.11; each only restores behaviour, none changes arithmetic."""
    import collections
    import collections.abc

    if not hasattr(collections, "Mapping"):
        # defrcn/evaluation/testing.py:5 `from collections import Mapping` (gone in Python 3.10)
        collections.Mapping = collections.abc.Mapping
        _patch("collections.Mapping = collections.abc.Mapping: defrcn/evaluation/testing.py:5 imports "
               "Mapping from collections (removed in Python 3.10); needed to import defrcn.evaluation")

    import defrcn.modeling.roi_heads.roi_heads as roi_heads_module
    from detectron2.modeling.backbone.resnet import ResNet

    def make_stage(block_class, num_blocks, first_stride=None, **kwargs):
        # detectron2 v0.3 ResNet.make_stage turned the deprecated first_stride into
        # stride_per_block = [first_stride, 1, 1, ...] (modeling/backbone/resnet.py at v0.3:516-518)
        if first_stride is not None:
            kwargs["stride_per_block"] = [first_stride] + [1] * (num_blocks - 1)
        return ResNet.make_stage(block_class, num_blocks, **kwargs)

    roi_heads_module.make_stage = make_stage

    import defrcn.modeling.roi_heads.fast_rcnn as fast_rcnn_module
    import detectron2.layers.nms as nms_module
    import detectron2.modeling.proposal_generator.proposal_utils as proposal_utils
    from torchvision.ops import boxes as box_ops

    def batched_nms(boxes, scores, idxs, iou_threshold):
        # detectron2 layers/nms.py:22 casts boxes to float32 (for fp16); torchvision's NMS then
        # refuses float64 scores. Identical in float32; lets the float64 reference run work.
        return box_ops.batched_nms(boxes, scores.to(boxes.dtype), idxs, iou_threshold)

    for module in (nms_module, proposal_utils, fast_rcnn_module):
        module.batched_nms = batched_nms
    _patch("defrcn.modeling.roi_heads.roi_heads.make_stage wrapped: roi_heads.py:318 calls "
           "make_stage(BottleneckBlock, 3, first_stride=2, ...); detectron2 after v0.3 dropped "
           "first_stride, the wrapper maps it to stride_per_block=[2, 1, 1] as v0.3 did")
    _patch("detectron2.layers.batched_nms (as used by proposal_utils.py and DeFRCN fast_rcnn.py) without "
           "its boxes.float() cast (detectron2 layers/nms.py:22): a no-op in float32, needed only by the "
           "float64 reference run of the original")


def sorted_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- random, BN-calibrated weights


def calibrate_frozen_bn(model, run, norm_types, rng_seed):
    """Set every frozen BN's statistics from its own input during one forward pass `run()`
    (pre-hooks fire in execution order, so each layer sees already-calibrated inputs), and
    give each an affine near identity: weight 1 + 0.1 N, bias 0.1 N."""
    import torch

    gen = torch.Generator().manual_seed(rng_seed)
    done = set()
    handles = []

    def hook(module, inputs):
        if id(module) in done:
            return
        x = inputs[0].detach()
        dims = [0] + list(range(2, x.dim()))
        module.running_mean.copy_(x.mean(dim=dims))
        module.running_var.copy_(x.var(dim=dims, unbiased=False) + 1e-3)
        c = module.running_mean.numel()
        module.weight.data.copy_(1.0 + 0.1 * torch.randn(c, generator=gen))
        module.bias.data.copy_(0.1 * torch.randn(c, generator=gen))
        done.add(id(module))

    for module in model.modules():
        if isinstance(module, norm_types):
            handles.append(module.register_forward_pre_hook(hook))
    with torch.no_grad():
        run()
    for h in handles:
        h.remove()
    total = sum(1 for m in model.modules() if isinstance(m, norm_types))
    return len(done), total


def randomize_heads(model, seed):
    """Affines near identity, RPN head with a spread of objectness, done before BN calibration."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for affine in (model.affine_rpn, model.affine_rcnn):
            c = affine.weight.numel()
            affine.weight.copy_((1.0 + 0.1 * torch.randn(c, generator=gen)).view(1, c, 1, 1))
            affine.bias.copy_((0.1 * torch.randn(c, generator=gen)).view(1, c, 1, 1))
        head = model.proposal_generator.rpn_head
        head.objectness_logits.weight.normal_(0, 0.1, generator=gen)
        head.objectness_logits.bias.normal_(0, 0.1, generator=gen)
        head.anchor_deltas.weight.normal_(0, 0.02, generator=gen)


def scale_predictor(model, pooled_rms, seed, hot_classes, cls_logit_std=1.0, box_delta_std=0.3,
                    hot_bias=2.5):
    """cls_score / bbox_pred ~ N(0, s) with s chosen so logits have std ~1 and deltas ~0.3 on
    the calibration image; the `hot_classes` get +2.5 on their bias, so each box has several
    (box, class) pairs above the 0.05 score threshold (several thousand per image: enough to
    reach the project's 4096-pair candidate cap)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    pred = model.roi_heads.box_predictor
    dim = pred.cls_score.weight.shape[1]
    with torch.no_grad():
        pred.cls_score.weight.normal_(0, cls_logit_std / (pooled_rms * dim ** 0.5), generator=gen)
        pred.cls_score.bias.normal_(0, 0.5, generator=gen)
        for c in hot_classes:
            pred.cls_score.bias[c] += hot_bias
        pred.bbox_pred.weight.normal_(0, box_delta_std / (pooled_rms * dim ** 0.5), generator=gen)
        pred.bbox_pred.bias.zero_()


# ---------------------------------------------------------------- hooks recording the stages


class Recorder:
    """Forward hooks on the model's stages; each call's output appended under a name."""

    def __init__(self):
        self.out = {}
        self.handles = []

    def add(self, module, name, pick):
        def hook(mod, inputs, output):
            self.out.setdefault(name, []).append(pick(inputs, output))
        self.handles.append(module.register_forward_hook(hook))

    def clear(self):
        self.out = {}

    def remove(self):
        for h in self.handles:
            h.remove()


def _np(t):
    return t.detach().cpu().numpy()


def attach(model, rec):
    rec.add(model.backbone, "backbone_input_shape", lambda i, o: np.array(i[0].shape))
    rec.add(model.backbone, "res4", lambda i, o: _np(o["res4"]))
    rec.add(model.affine_rpn, "affine_rpn", lambda i, o: _np(o))
    rec.add(model.affine_rcnn, "affine_rcnn", lambda i, o: _np(o))
    rec.add(model.proposal_generator.rpn_head, "rpn_objectness", lambda i, o: _np(o[0][0]))
    rec.add(model.proposal_generator.rpn_head, "rpn_deltas", lambda i, o: _np(o[1][0]))
    rec.add(model.proposal_generator, "proposals", lambda i, o: _np(o[0][0].proposal_boxes.tensor))
    rec.add(model.proposal_generator, "proposal_logits", lambda i, o: _np(o[0][0].objectness_logits))
    rec.add(model.roi_heads.pooler, "roi_align", lambda i, o: _np(o))
    rec.add(model.roi_heads.res5, "res5", lambda i, o: _np(o))
    rec.add(model.roi_heads.box_predictor, "pooled", lambda i, o: _np(i[0]))
    rec.add(model.roi_heads.box_predictor, "class_logits", lambda i, o: _np(o[0]))
    rec.add(model.roi_heads.box_predictor, "box_deltas", lambda i, o: _np(o[1]))


# ---------------------------------------------------------------- runs


def image_input(rgb_uint8, dtype=np.float32):
    """detectron2's dataset mapper gives the model a (3, H, W) float tensor in cfg.INPUT.FORMAT
    (BGR, 0-255); the model normalises it itself (rcnn.py normalize_fn)."""
    import torch

    bgr = np.ascontiguousarray(rgb_uint8[:, :, ::-1].transpose(2, 0, 1)).astype(dtype)
    return torch.from_numpy(bgr)


class Float64:
    """The model in float64 inside the block (the float32 noise floor of the original itself);
    float32 -> float64 -> float32 is exact, so the float32 weights come back unchanged."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        import torch

        self.model.double()
        # rcnn.py normalize_fn closes over float32 mean / std tensors (promoted to float64 by torch)
        self.default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        return self.model

    def __exit__(self, *exc):
        import torch

        torch.set_default_dtype(self.default)
        self.model.float()


def build(cfg_file, req, num_classes_expected):
    import torch
    from defrcn.config import get_cfg
    from defrcn.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(cfg_file)
    cfg.MODEL.DEVICE = "cpu"
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == num_classes_expected, cfg.MODEL.ROI_HEADS.NUM_CLASSES
    # parity settings (the same on the project side, see tools/parity.py TRAIN_SETTINGS):
    # every candidate sampled, no dropout (random masks cannot be matched across frameworks)
    t = req["train"]
    cfg.MODEL.ROI_HEADS.CLS_DROPOUT = False
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = t["post_nms_topk_train"]
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = t["rpn_batch_size_per_image"]
    cfg.MODEL.RPN.POSITIVE_FRACTION = 1.0
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = t["roi_batch_size_per_image"]
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = 1.0
    cfg.freeze()
    torch.manual_seed(req["seed"])
    model = build_model(cfg)
    return cfg, model


def calibrate_detector(model, calib_rgb, seed, hot_classes):
    from detectron2.layers import FrozenBatchNorm2d

    randomize_heads(model, seed + 1)
    pooled = []
    h = model.roi_heads.box_predictor.register_forward_pre_hook(lambda m, i: pooled.append(i[0].detach()))
    model.eval()
    n, total = calibrate_frozen_bn(model, lambda: model([{"image": image_input(calib_rgb)}]),
                                   (FrozenBatchNorm2d,), seed + 2)
    h.remove()
    rms = float(pooled[0].pow(2).mean().sqrt())
    scale_predictor(model, rms, seed + 3, hot_classes)
    return n, total, rms


def force_proposals(model, proposals, dtype):
    """Forward hook replacing the RPN's proposals given to the ROI heads by `proposals` (n, 4);
    its own are recorded (and its losses, in training, kept)."""
    import torch
    from detectron2.structures import Boxes, Instances

    own = []

    def hook(module, inputs, output):
        props, losses = output
        own.append(_np(props[0].proposal_boxes.tensor))
        forced = Instances(props[0].image_size)
        forced.proposal_boxes = Boxes(torch.from_numpy(np.asarray(proposals, dtype)))
        forced.objectness_logits = props[0].objectness_logits.new_zeros(len(proposals))
        return [forced], losses

    return model.proposal_generator.register_forward_hook(hook), own


def run_inference(model, rgb, dtype=np.float32, proposals=None):
    """Every stage of one inference; `proposals` (n, 4): the ROI heads get these instead of the
    RPN's (the float64 run uses the float32 run's, so the ROI stages are comparable)."""
    import torch

    rec = Recorder()
    attach(model, rec)
    model.eval()
    handle = None
    if proposals is not None:
        handle, own = force_proposals(model, proposals, dtype)
    with torch.no_grad():
        outputs = model([{"image": image_input(rgb, dtype)}])
    rec.remove()
    if handle is not None:
        handle.remove()
        rec.out["own_proposals"] = own
    inst = outputs[0]["instances"]
    out = {}
    for name, values in rec.out.items():
        out[name] = np.concatenate(values, 0) if name in ("roi_align", "res5", "pooled", "class_logits",
                                                          "box_deltas") else values[0]
    probs = torch.softmax(torch.from_numpy(out["class_logits"]), -1)[:, :-1]
    out["pairs_above_thresh"] = np.array(int((probs > model.roi_heads.test_score_thresh).sum()))
    out["det_boxes"] = _np(inst.pred_boxes.tensor)
    out["det_scores"] = _np(inst.scores)
    out["det_classes"] = _np(inst.pred_classes)
    return out


GRAD_PARAMS = (
    "affine_rcnn.weight",
    "affine_rpn.weight",
    "backbone.res4.0.conv1.weight",
    "backbone.res4.22.conv3.weight",
    "proposal_generator.rpn_head.conv.weight",
    "roi_heads.res5.0.conv1.weight",
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.bbox_pred.weight",
)


def run_training(model, rgb, gt_boxes, gt_classes, dtype=np.float32, proposals=None):
    """One training forward/backward; `proposals` (n, 4) replaces the RPN's proposals given to
    the ROI heads (its losses are still computed): the float64 run uses the float32 proposals."""
    import torch
    from detectron2.structures import Boxes, Instances
    from detectron2.utils.events import EventStorage

    height, width = rgb.shape[:2]
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.from_numpy(np.asarray(gt_boxes, dtype)))
    inst.gt_classes = torch.from_numpy(np.asarray(gt_classes, np.int64))
    rec = Recorder()
    rec.add(model.proposal_generator, "train_proposals", lambda i, o: _np(o[0][0].proposal_boxes.tensor))
    rec.add(model.roi_heads.box_predictor, "train_num_rois", lambda i, o: np.array(i[0].shape[0]))
    handle = None
    if proposals is not None:
        handle, _ = force_proposals(model, proposals, dtype)
    model.train()
    model.zero_grad(set_to_none=True)
    with EventStorage(0) as storage:
        losses = model([{"image": image_input(rgb, dtype), "instances": inst}])
        total = sum(losses.values())
        total.backward()
        scalars = {k: v.latest() for k, v in storage.histories().items()}
    rec.remove()
    if handle is not None:
        handle.remove()
    out = {f"loss/{k}": np.array(float(v)) for k, v in losses.items()}
    out["train_proposals"] = rec.out["train_proposals"][0]
    out["train_num_rois"] = rec.out["train_num_rois"][0]
    out["num_fg"] = np.array(scalars.get("roi_head/num_fg_samples", -1.0))
    out["num_bg"] = np.array(scalars.get("roi_head/num_bg_samples", -1.0))
    params = dict(model.named_parameters())
    for name in GRAD_PARAMS:
        p = params[name]
        out[f"grad/{name}"] = _np(p.grad) if p.grad is not None else np.zeros(0, np.float32)
        out[f"requires_grad/{name}"] = np.array(bool(p.requires_grad))
    model.zero_grad(set_to_none=True)
    model.eval()
    return out


# ---------------------------------------------------------------- PCB


def pcb_network(seed, calib_rgb, path):
    """torchvision ImageNet ResNet-101, random, BN statistics calibrated on one image; saved as
    a torchvision state dict (what `tools/convert.py torchvision` reads)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet101(weights=None)
    net.eval()
    x = torch.from_numpy(((calib_rgb.astype(np.float32) / 255.0 - [0.485, 0.456, 0.406]) /
                          [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None].astype(np.float32))
    calibrate_frozen_bn(net, lambda: net(x), (torch.nn.BatchNorm2d,), seed + 1)
    torch.save(net.state_dict(), path)
    return net


def run_pcb(cfg_file, req, work, weights_path, query, dets):
    """DeFRCN's PrototypicalCalibrationBlock, built by its own __init__ with the support set given
    through its data loader (the one substitution: build_detection_test_loader)."""
    import cv2  # noqa: F401  (the original reads images with cv2.imread)
    import torch
    import defrcn.evaluation.calibration_layer as calibration_layer
    from defrcn.config import get_cfg
    from detectron2.structures import Boxes, Instances

    support = req["pcb"]["support"]

    class _Loader:
        def __init__(self):
            self.dataset = []
            for item in support:
                inst = Instances((item["height"], item["width"]))  # original size: ratio 1
                inst.gt_boxes = Boxes(torch.tensor(item["boxes"], dtype=torch.float32))
                inst.gt_classes = torch.tensor(item["classes"], dtype=torch.int64)
                self.dataset.append({"file_name": os.path.join(work, item["file"]), "instances": inst})

    calibration_layer.build_detection_test_loader = lambda cfg, name: _Loader()
    _patch("defrcn.evaluation.calibration_layer.build_detection_test_loader replaced by a loader over the "
           "parity support images (test harness: the original reads its registered few-shot data set "
           "there, calibration_layer.py:24); the rest of PrototypicalCalibrationBlock runs unchanged")
    cfg = get_cfg()
    cfg.merge_from_file(cfg_file)
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.PCB_ENABLE = True
    cfg.TEST.PCB_MODELPATH = weights_path
    cfg.freeze()
    pcb = calibration_layer.PrototypicalCalibrationBlock(cfg)
    order = np.argsort(-dets["det_scores"], kind="stable")
    inst = Instances(query["shape"])
    inst.pred_boxes = Boxes(torch.from_numpy(dets["det_boxes"][order].copy()))
    inst.scores = torch.from_numpy(dets["det_scores"][order].copy())
    inst.pred_classes = torch.from_numpy(dets["det_classes"][order].copy())
    out = pcb.execute_calibration([{"file_name": os.path.join(work, query["file"])}], [{"instances": inst}])
    new_scores = _np(out[0]["instances"].scores)
    protos = sorted(pcb.prototypes)
    return {
        "pcb_boxes": dets["det_boxes"][order], "pcb_scores_in": dets["det_scores"][order],
        "pcb_classes": dets["det_classes"][order], "pcb_scores_out": new_scores,
        "pcb_exclude": np.array(pcb.exclude_cls, np.int64),
        "pcb_proto_classes": np.array(protos, np.int64),
        "pcb_prototypes": np.stack([_np(pcb.prototypes[c])[0] for c in protos]),
    }


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defrcn-src", required=True)
    parser.add_argument("--detectron2-src", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    sys.path[:0] = [os.path.abspath(args.detectron2_src), os.path.abspath(args.defrcn_src)]

    import torch
    import torchvision

    torch.set_num_threads(args.threads)
    import detectron2
    apply_patches()
    from defrcn.data import builtin_meta

    work = args.work
    with open(os.path.join(work, "request.json")) as f:
        req = json.load(f)
    inputs = np.load(os.path.join(work, "inputs.npz"))
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "detectron2": getattr(detectron2, "__version__", "?"), "python": sys.version.split()[0],
            "detectron2_file": detectron2.__file__}
    fewshot = builtin_meta._get_coco_fewshot_instances_meta()
    class_names = {"base": list(fewshot["base_classes"]), "all": list(fewshot["thing_classes"])}
    meta["class_names"] = class_names
    calib = inputs[req["calibration_image"]]
    for conf in req["configs"]:
        name = conf["name"]
        print(f"[original] {name}: {conf['config']}", flush=True)
        cfg, model = build(os.path.join(args.defrcn_src, conf["config"]), req, conf["num_classes"])
        rng = np.random.default_rng(req["seed"] + 5)
        if conf["classes"] == "all":  # half novel, half base: PCB rescores the novel ones
            novel = [class_names["all"].index(c) for c in fewshot["novel_classes"]]
            base = [class_names["all"].index(c) for c in fewshot["base_classes"]]
            half = req["hot_classes"] // 2
            hot = list(rng.choice(novel, half, replace=False)) + list(
                rng.choice(base, req["hot_classes"] - half, replace=False))
        else:
            hot = list(rng.choice(conf["num_classes"], req["hot_classes"], replace=False))
        hot = [int(c) for c in hot]
        meta[f"{name}/hot_classes"] = hot
        n, total, rms = calibrate_detector(model, calib, req["seed"], hot)
        meta[f"{name}/bn_calibrated"] = [n, total]
        meta[f"{name}/pooled_rms"] = rms
        meta[f"{name}/class_names"] = class_names[conf["classes"]]
        meta[f"{name}/frozen"] = sorted({k.rsplit(".", 1)[0].split(".0.")[0] for k, p in model.named_parameters()
                                         if not p.requires_grad})[:8]
        torch.save({"model": sorted_state(model)}, os.path.join(work, f"original_{name}.pth"))
        for size in req["sizes"]:
            tag = size["tag"]
            rgb = inputs[f"image_{tag}"]
            res = run_inference(model, rgb)
            print(f"[original] {name} {tag}: input tensor {[int(v) for v in res['backbone_input_shape']]}, "
                  f"{len(res['proposals'])} proposals, {len(res['det_scores'])} detections, "
                  f"{int(res['pairs_above_thresh'])} pairs > 0.05", flush=True)
            gt = (inputs[f"gt_boxes_{tag}"], inputs[f"gt_classes_{conf['classes']}_{tag}"])
            res.update(run_training(model, rgb, *gt))
            print(f"[original] {name} {tag}: train losses " +
                  ", ".join(f"{k[5:]} {float(v):.5f}" for k, v in res.items() if k.startswith("loss/")), flush=True)
            if req.get("fp64", True):
                # the same stages in float64: how far float32 alone moves the original
                with Float64(model):
                    f64 = run_inference(model, rgb, np.float64, proposals=res["proposals"])
                    f64.update(run_training(model, rgb, *gt, dtype=np.float64, proposals=res["train_proposals"]))
                res.update({f"fp64/{k}": v for k, v in f64.items()})
                print(f"[original] {name} {tag}: float64 pass done", flush=True)
            np.savez(os.path.join(work, f"original_{name}_{tag}.npz"), **res)
            if conf.get("pcb") and tag == req["pcb"]["query_size"]:
                weights = os.path.join(work, "pcb_resnet101.pth")
                pcb_network(req["seed"] + 10, inputs[req["pcb"]["calibration_image"]], weights)
                query = {"file": req["pcb"]["query_file"], "shape": tuple(rgb.shape[:2])}
                pcb = run_pcb(os.path.join(args.defrcn_src, conf["config"]), req, work, weights, query, res)
                np.savez(os.path.join(work, "original_pcb.npz"), **pcb)
                print(f"[original] PCB: {len(pcb['pcb_scores_out'])} detections rescored", flush=True)
        del model
    meta["patches"] = PATCHES
    with open(os.path.join(work, "original_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    main()
