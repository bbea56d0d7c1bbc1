"""One side of the device self-check (`defrcn.apps.selfcheck`): run every stage, save the results.

    python -m defrcn.apps.selfcheck_side --work DIR --side device --device GPU --mode graph

Reads `DIR/spec.json`, `DIR/weights.ckpt` and `DIR/inputs.npz` (written by the parent),
sets this process's MindSpore device and writes one `DIR/<side>/<group>.npz` per group of
stages as soon as it is computed, with `DIR/<side>/status.json` (versions, seconds and
error of each group): a group that fails or a crash part-way leaves the others readable.

Groups, in order (each Cell below is its own graph in graph mode):
- features: res4, the two GDL affine outputs, the RPN head on the RPN affine output;
- roi: ROIAlign, res5 (mean-pooled), class logits and box deltas on the given boxes;
- proposals: the RPN's proposals from the given head outputs (top-k, decoding, NMS);
- detections: post-processing of the given predictor outputs (softmax, per-class NMS, top-k);
- train: the four losses, chosen gradients and their momentum-SGD update with the given
  training proposals (the parameters are put back afterwards);
- e2e_inference: the detector itself on the images;
- e2e_train: one `TrainStep` with momentum SGD; its losses and each chosen parameter's change.
"""
import argparse
import json
import os
import sys
import time
import traceback

import numpy as np

GROUPS = ("features", "roi", "proposals", "detections", "train", "e2e_inference", "e2e_train")
# one step of momentum SGD at LR 1: each parameter's change (read back as new - old) stays far
# above the float32 resolution of the parameter itself
SGD_LR = 1.0


def _stage_cells(model, spec):
    """The Cells of the isolated stages, sharing the model's sub-Cells (no parameter renamed)."""
    import mindspore.nn as nn
    from mindspore import ops

    from defrcn.modeling.padding import apply_mask, padded_extent, region_mask, valid_cells
    from defrcn.modeling.postprocess import detect
    from defrcn.modeling.rpn import RPN

    size_div = model.size_divisibility
    heads = model.roi_heads

    class Features(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.backbone, self.rpn_branch, self.roi_branch = model.backbone, model.rpn_branch, model.roi_branch
            self.rpn_head = model.proposal_generator.head
            self.stride = model.proposal_generator.anchor_generator.stride

        def construct(self, images, image_sizes):
            extent = padded_extent(image_sizes, size_div, batch_max=False)
            res4 = self.backbone(images, extent)
            rpn_in, roi_in = self.rpn_branch(res4), self.roi_branch(res4)
            # the RPN zeroes its input outside the extent before the head (RPN.construct)
            mask = region_mask(extent, rpn_in.shape[2], rpn_in.shape[3], self.stride)
            objectness, deltas = self.rpn_head(apply_mask(rpn_in, mask))
            return res4, rpn_in, roi_in, objectness, deltas

    class RoI(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.pooler, self.res5, self.box_predictor = heads.pooler, heads.res5, heads.box_predictor
            self.stride = heads.feature_stride

        def construct(self, features, boxes, image_sizes):
            cells = valid_cells(padded_extent(image_sizes, size_div, batch_max=False), self.stride)
            pooled = self.pooler(features, boxes, cells)
            pooled_res5 = self.res5(pooled).mean(axis=(2, 3))
            logits, deltas = self.box_predictor(pooled_res5)
            return pooled, pooled_res5, logits, deltas

    class GivenHead(nn.Cell):
        """Stands in for the RPN head: returns the given objectness and deltas."""

        def __init__(self, objectness, deltas):
            super().__init__()
            self.objectness, self.deltas = objectness, deltas

        def construct(self, x):
            return self.objectness, self.deltas

    class Proposals(nn.Cell):
        def __init__(self, objectness, deltas):
            super().__init__()
            # a second RPN with the model's settings (it has no parameters but its head's)
            self.rpn = RPN(in_channels=spec["channels"], **spec["model"]["rpn"])
            self.rpn.head = GivenHead(objectness, deltas)

        def construct(self, features, image_sizes):
            extent = padded_extent(image_sizes, size_div, batch_max=False)
            return self.rpn(features, image_sizes, None, None, None, extent)

    class Detections(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.box_coder = heads.box_coder
            self.num_classes, self.score_thresh = heads.num_classes, heads.score_thresh
            self.nms_thresh, self.pre_nms_topk = heads.nms_thresh, heads.pre_nms_topk
            self.detections_per_image = heads.detections_per_image

        def construct(self, logits, deltas, proposals, proposal_valid, image_sizes):
            return detect(logits, deltas, proposals, proposal_valid, image_sizes, self.box_coder,
                          num_classes=self.num_classes, score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                          detections_per_image=self.detections_per_image, pre_nms_topk=self.pre_nms_topk)

    class Training(nn.Cell):
        """DeFRCN.construct in training, the ROI heads given the proposals instead of the RPN's."""

        def __init__(self):
            super().__init__(auto_prefix=False)
            self.backbone, self.rpn_branch, self.roi_branch = model.backbone, model.rpn_branch, model.roi_branch
            self.proposal_generator, self.roi_heads = model.proposal_generator, model.roi_heads

        def construct(self, images, image_sizes, gt_boxes, gt_classes, gt_valid, proposals, proposal_valid,
                      step):
            extent = padded_extent(image_sizes, size_div, batch_max=True)
            features = self.backbone(images, extent)
            _, _, loss_rpn_cls, loss_rpn_loc = self.proposal_generator(
                self.rpn_branch(features), image_sizes, gt_boxes, gt_valid, step, extent)
            loss_cls, loss_box_reg = self.roi_heads(
                self.roi_branch(features), proposals, proposal_valid, image_sizes, gt_boxes, gt_classes,
                gt_valid, step, extent)
            total = loss_rpn_cls + loss_rpn_loc + loss_cls + loss_box_reg
            return total, loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg

    class StepWithGrads(nn.Cell):
        """One momentum-SGD step of `optimizer`'s parameters; returns the losses and their gradients."""

        def __init__(self, network, optimizer):
            super().__init__(auto_prefix=False)
            self.network, self.optimizer = network, optimizer
            self.value_and_grad = ops.value_and_grad(network, None, optimizer.parameters, has_aux=True)

        def construct(self, *inputs):
            values, grads = self.value_and_grad(*inputs)
            return ops.depend(values, self.optimizer(grads)), grads

    return dict(Features=Features, RoI=RoI, Proposals=Proposals, Detections=Detections, Training=Training,
                StepWithGrads=StepWithGrads)


def _full_float32(device):
    """Convolutions and matrix products in full float32: no TF32 (GPU), no HF32 or float16 (Ascend)."""
    import mindspore as ms

    if device == "GPU":
        ms.device_context.gpu.op_precision.conv_allow_tf32(False)
        ms.device_context.gpu.op_precision.matmul_allow_tf32(False)
    elif device == "Ascend":
        precision = ms.device_context.ascend.op_precision
        try:
            precision.precision_mode("must_keep_origin_dtype")
        except RuntimeError:  # set once per process, e.g. by the runtime set-up already
            pass
        precision.conv_allow_hf32(False)
        precision.matmul_allow_hf32(False)


def _numpy(values):
    return [v.asnumpy() for v in values]


class Side:
    """Runs the groups of one side and records them (see the module docstring)."""

    def __init__(self, work, side, device, mode):
        self.work, self.folder = work, os.path.join(work, side)
        os.makedirs(self.folder, exist_ok=True)
        with open(os.path.join(work, "spec.json")) as f:
            self.spec = json.load(f)
        self.inputs = dict(np.load(os.path.join(work, "inputs.npz")))
        self.status = {"device": device, "mode": mode, "groups": {}}
        self.device, self.mode = device, mode
        self.outputs = {}

    def _write_status(self):
        from defrcn.utils.atomic import write_json_atomic

        write_json_atomic(os.path.join(self.folder, "status.json"), self.status, indent=1)

    def setup(self, fp32):
        import mindspore as ms

        from defrcn.engine.runtime import setup_runtime

        setup_runtime(self.device, pynative=self.mode == "pynative")  # the device as training sets it up
        if fp32:
            _full_float32(self.device)
        ms.set_seed(self.spec["seed"])
        self.status.update(mindspore=ms.__version__, fp32=bool(fp32))
        self._write_status()

        from defrcn.checkpoint.io import load_checkpoint, load_into
        from defrcn.modeling.detector import build_detector

        self.model = build_detector(**self.spec["model"], verbose=False)
        weights = load_checkpoint(os.path.join(self.work, "weights.ckpt"))
        missing, unexpected, mismatch = load_into(self.model, weights)
        if missing or unexpected or mismatch:
            raise RuntimeError(f"weights do not fit the model: missing {missing[:2]}, unexpected {unexpected[:2]}, "
                               f"shape {mismatch[:2]}")
        self.cells = _stage_cells(self.model, self.spec)
        params = {p.name: p for p in self.model.get_parameters()}
        self.grad_params = [params[name] for name in self.spec["grad_params"]]

    def tensor(self, key):
        import mindspore as ms

        return ms.Tensor(self.inputs[key])

    def run(self, groups):
        for group in groups:
            entry = {"state": "started"}
            self.status["groups"][group] = entry
            self._write_status()
            start = time.perf_counter()
            try:
                arrays = getattr(self, f"group_{group}")()
            except Exception as error:  # noqa: BLE001 - recorded; the other groups still run
                message = " ".join(str(error).split())[:400]
                entry.update(state="error", error=f"{type(error).__name__}: {message}",
                             traceback=traceback.format_exc()[-4000:])
            else:
                np.savez(os.path.join(self.folder, f"{group}.npz"), **arrays)
                entry["state"] = "done"
            entry["seconds"] = round(time.perf_counter() - start, 2)
            self._write_status()

    def _eval(self):
        self.model.set_train(False)

    def group_features(self):
        self._eval()
        cell = self.cells["Features"]()
        cell.set_train(False)
        res4, rpn_in, roi_in, objectness, deltas = cell(self.tensor("images"), self.tensor("image_sizes"))
        self.outputs["roi_in"] = roi_in
        return dict(zip(("res4", "rpn_affine", "roi_affine", "rpn_objectness", "rpn_deltas"),
                        _numpy((res4, rpn_in, roi_in, objectness, deltas))))

    def group_roi(self):
        if "roi_in" not in self.outputs:
            raise RuntimeError("needs the ROI branch features (group 'features' failed)")
        self._eval()
        cell = self.cells["RoI"]()
        cell.set_train(False)
        out = cell(self.outputs["roi_in"], self.tensor("roi_boxes"), self.tensor("image_sizes"))
        return dict(zip(("roi_align", "res5", "class_logits", "box_deltas"), _numpy(out)))

    def group_proposals(self):
        import mindspore as ms

        cell = self.cells["Proposals"](self.tensor("given_objectness"), self.tensor("given_rpn_deltas"))
        cell.set_train(False)
        batch, _, height, width = self.inputs["given_objectness"].shape
        features = ms.Tensor(np.zeros((batch, self.spec["channels"], height, width), np.float32))
        boxes, valid = cell(features, self.tensor("image_sizes"))
        return dict(boxes=boxes.asnumpy(), valid=valid.asnumpy())

    def group_detections(self):
        cell = self.cells["Detections"]()
        cell.set_train(False)
        out = cell(self.tensor("given_logits"), self.tensor("given_box_deltas"), self.tensor("given_proposals"),
                   self.tensor("given_proposal_valid"), self.tensor("image_sizes"))
        return dict(zip(("boxes", "scores", "classes", "valid"), _numpy(out)))

    def _train_inputs(self):
        return [self.tensor(k) for k in ("images", "image_sizes", "gt_boxes", "gt_classes", "gt_valid")]

    def group_train(self):
        import mindspore as ms

        from defrcn.solver.optim import build_sgd

        before = [p.asnumpy().copy() for p in self.grad_params]
        optimizer = build_sgd(self.grad_params, [SGD_LR] * 2)
        cell = self.cells["StepWithGrads"](self.cells["Training"](), optimizer)
        cell.set_train(True)
        try:
            values, grads = cell(*self._train_inputs(), self.tensor("train_proposals"),
                                 self.tensor("train_proposal_valid"), ms.Tensor(0, ms.int32))
            out = {f"loss/{n}": v for n, v in zip(self.spec["loss_names"], _numpy(values[1:]))}
            out.update({f"grad/{p.name}": g for p, g in zip(optimizer.parameters, _numpy(grads))})
            out.update({f"update/{p.name}": p.asnumpy() - b for p, b in zip(self.grad_params, before)})
        finally:
            self._eval()
            for param, value in zip(self.grad_params, before):
                param.set_data(ms.Tensor(value))  # the end-to-end groups start from the same weights
        return out

    def group_e2e_inference(self):
        self._eval()
        out = self.model(self.tensor("images"), self.tensor("image_sizes"))
        return dict(zip(("boxes", "scores", "classes", "valid"), _numpy(out)))

    def group_e2e_train(self):
        from defrcn.solver.optim import build_sgd
        from defrcn.engine.train_step import TrainStep

        before = [p.asnumpy().copy() for p in self.grad_params]
        step = TrainStep(self.model, build_sgd(self.model, [SGD_LR] * 2))
        step.set_train(True)
        values = step(*self._train_inputs())
        self._eval()
        out = {f"loss/{n}": v for n, v in zip(self.spec["loss_names"], _numpy(values[1:]))}
        out.update({f"update/{n}": p.asnumpy() - b
                    for n, p, b in zip(self.spec["grad_params"], self.grad_params, before)})
        return out


def main(argv=None):
    parser = argparse.ArgumentParser(description="One side of tools/selfcheck.py (run by it).")
    parser.add_argument("--work", required=True)
    parser.add_argument("--side", required=True)
    parser.add_argument("--device", required=True, choices=("CPU", "GPU", "Ascend"))
    parser.add_argument("--mode", default="graph", choices=("graph", "pynative"))
    parser.add_argument("--fp32", action="store_true")
    parser.add_argument("--groups", default=",".join(GROUPS))
    args = parser.parse_args(argv)
    side = Side(args.work, args.side, args.device, args.mode)
    try:
        side.setup(args.fp32)
    except Exception as error:  # noqa: BLE001 - reported through status.json
        side.status["setup_error"] = f"{type(error).__name__}: {' '.join(str(error).split())[:400]}"
        side.status["traceback"] = traceback.format_exc()[-4000:]
        side._write_status()
        return 1
    side.run([g for g in args.groups.split(",") if g])
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # MindSpore 2.8 prints Cell.__del__ noise at interpreter exit (defrcn.engine.cli)
