"""Device self-check: a small DeFRCN on DEVICE and on CPU, same weights and batch, compared stage by stage.

    text, departed = run_selfcheck("GPU")            # tools/selfcheck.py --device GPU
    print(text)

MindSpore sets one device per process, so each side runs in its own process
(`python -m defrcn.apps.selfcheck_side`), both at once. This process writes what both
read: a small detector's weights (random, BatchNorm statistics calibrated on the images so
activations have unit scale), a batch of two synthetic images (one filling the canvas, one
smaller, so the padding masks are exercised) and the *given* inputs of the stages whose
result is a selection (top-k, NMS, sampling). Those stages run on the same given inputs on
both sides (RPN head outputs with well-separated scores, predictor outputs, training
proposals): a difference there is the device's, never an upstream float difference
reordering near-equal scores. The continuous stages (features, heads, losses, gradients) run
on each side's own upstream results; their differences are float rounding unless an op is
broken. The whole detector is also run end to end (inference, one SGD training step): there
rounding can legitimately flip a near-tie in the RPN's top-k or NMS, which shows as CASCADE
(not a fault) when every isolated stage agrees.

Row verdicts: OK, DEPARTS (beyond the tolerance), CASCADE, FAILED (a side could not run the
stage). Continuous rows: max |device - reference| over max |reference| against `rtol`
(default 1e-2: unless `fp32`, GPU convolutions run in TF32 and Ascend's in HF32 or float16,
all rounding at about 1e-3). Selections: the same number kept per image, the same boxes in the same order
(IoU >= 0.99), the same classes, scores within `rtol`.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import numpy as np

from defrcn.errors import InputError
from defrcn.utils.device import DEVICES

__all__ = ["run_selfcheck", "compare_folder", "compare", "render", "DEVICES", "MODES", "DEPTHS", "RTOL"]

MODES = ("graph", "pynative")
DEPTHS = (18, 50, 101)
RTOL = 1e-2
MIN_IOU = 0.99
NUM_CLASSES = 4
LOSS_NAMES = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg")
# gradients compared: (parameter, what it is); the same parameters' SGD updates end to end
GRAD_PARAMS = (
    ("backbone.conv1.weight", "stem conv"),
    ("backbone.layer3.0.conv1.weight", "res4 conv"),
    ("rpn_branch.affine.weight", "RPN GDL affine"),
    ("proposal_generator.head.conv.weight", "RPN head conv"),
    ("roi_branch.affine.weight", "ROI GDL affine"),
    ("roi_heads.res5.layer4.0.conv1.weight", "res5 conv"),
    ("roi_heads.box_predictor.cls_score.weight", "cls_score"),
    ("roi_heads.box_predictor.bbox_pred.weight", "bbox_pred"),
)
SIDES = ("reference", "device")
SIDE_TIMEOUT_S = 1800  # graph compilation on Ascend can take minutes


class Row(NamedTuple):
    stage: str
    abs_diff: str
    rel_diff: str
    tolerance: str
    verdict: str
    note: str = ""
    hint: str = ""


# ------------------------------------------------------------------------------ inputs (parent)


def model_spec(depth):
    """Keyword arguments of build_detector: DeFRCN's structure, counts cut for a 128-pixel batch."""
    return dict(num_classes=NUM_CLASSES, depth=depth, norm="frozen_bn", freeze_at=0, gdl_scale_rpn=0.0,
                gdl_scale_roi=0.75, cls_dropout=0.0,
                rpn=dict(pre_nms_topk_train=300, post_nms_topk_train=64, pre_nms_topk_test=200,
                         post_nms_topk_test=32, batch_size_per_image=64),
                roi=dict(batch_size_per_image=32, detections_per_image=20))


def _boxes_in(rng, count, height, width, min_side=12.0):
    min_side = min(min_side, 0.3 * min(height, width))
    wh = rng.uniform(min_side, [0.6 * width, 0.6 * height], (count, 2))
    x0 = rng.uniform(0, width - wh[:, 0])
    y0 = rng.uniform(0, height - wh[:, 1])
    return np.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]], 1).astype(np.float32)


def _scene(rng, height, width, boxes):
    """uint8 (H, W, 3) RGB: smooth background, a textured rectangle per box."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([120 + 60 * np.sin(yy / height * rng.uniform(2, 6) + c)
                    * np.cos(xx / width * rng.uniform(2, 6)) for c in range(3)], -1)
    for x0, y0, x1, y1 in boxes:
        inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        stripes = 40 * np.sin(xx * rng.uniform(0.1, 0.4) + yy * rng.uniform(0.1, 0.4))
        img = np.where(inside[..., None], rng.uniform(0, 255, 3) + stripes[..., None], img)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _jittered(rng, boxes, count, height, width):
    """Boxes near the given ones (IoU mostly above 0.5: foreground RoIs in training)."""
    picks = boxes[rng.integers(0, len(boxes), count)]
    size = np.concatenate([picks[:, 2:] - picks[:, :2]] * 2, 1)
    out = picks + rng.uniform(-0.12, 0.12, picks.shape) * size
    return np.clip(out, 0, [width, height, width, height]).astype(np.float32)


def _distinct(rng, count, scale=1 / 16):
    """`count` distinct values k * scale around 0, shuffled (float32)."""
    return ((rng.permutation(count) - count // 2) * scale).astype(np.float32)


def make_inputs(model, size, seed, num_anchors=15):
    """The batch and the given stage inputs, as numpy arrays (see the module docstring).
    `model`: the build_detector arguments (model_spec)."""
    from defrcn.data.transforms import normalize_to_canvas

    rng = np.random.default_rng(seed)
    contents = [(size, size), (size - 16, size - 32)]  # the second leaves padding on both axes
    max_gt, num_gt = 8, 3
    images, gt_boxes = [], np.zeros((2, max_gt, 4), np.float32)
    gt_classes, gt_valid = np.zeros((2, max_gt), np.int32), np.zeros((2, max_gt), np.float32)
    roi_boxes, train_props, train_valid = [], [], []
    post_train = model["rpn"]["post_nms_topk_train"]
    for b, (h, w) in enumerate(contents):
        boxes = _boxes_in(rng, num_gt, h, w, min_side=24.0)
        gt_boxes[b, :num_gt], gt_valid[b, :num_gt] = boxes, 1.0
        gt_classes[b, :num_gt] = rng.integers(0, NUM_CLASSES, num_gt)
        images.append(normalize_to_canvas(_scene(rng, h, w, boxes), "msra", (size, size)))
        roi_boxes.append(np.concatenate([_boxes_in(rng, 12, h, w), _jittered(rng, boxes, 4, h, w)]))
        props = np.concatenate([_jittered(rng, boxes, post_train // 4, h, w),
                                _boxes_in(rng, post_train - post_train // 4, h, w)])
        valid = np.ones(post_train, np.float32)
        valid[-5:] = 0.0  # unfilled slots, as the RPN leaves them
        props[-5:] = 0.0
        train_props.append(props)
        train_valid.append(valid)
    cells = size // 16
    # distinct scores, multiples of 1/16 (exact in float16 too): top-k and NMS have no tie to break
    objectness = _distinct(rng, 2 * num_anchors * cells * cells)
    num_props = 24
    prop_boxes = np.stack([_boxes_in(rng, num_props, h, w) for h, w in contents])
    prop_valid = np.ones((2, num_props), np.float32)
    prop_valid[:, -4:] = 0.0
    logits = _distinct(rng, 2 * num_props * (NUM_CLASSES + 1), scale=1 / 32)
    return dict(
        images=np.stack(images), image_sizes=np.array(contents, np.float32),
        gt_boxes=gt_boxes, gt_classes=gt_classes, gt_valid=gt_valid,
        roi_boxes=np.stack(roi_boxes).astype(np.float32),
        train_proposals=np.stack(train_props).astype(np.float32), train_proposal_valid=np.stack(train_valid),
        given_objectness=objectness.reshape(2, num_anchors, cells, cells),
        given_rpn_deltas=rng.normal(0, 0.15, (2, 4 * num_anchors, cells, cells)).astype(np.float32),
        given_proposals=prop_boxes, given_proposal_valid=prop_valid,
        given_logits=logits.reshape(2 * num_props, NUM_CLASSES + 1),
        given_box_deltas=rng.normal(0, 0.5, (2 * num_props, 4 * NUM_CLASSES)).astype(np.float32),
    )


def write_weights(spec, images, path):
    """The detector's random weights (this process, on CPU) with calibrated BatchNorm statistics."""
    import contextlib

    import mindspore as ms

    from defrcn.checkpoint.io import save_checkpoint
    from defrcn.apps.benchmark import calibrate_norm_statistics
    from defrcn.modeling.detector import build_detector

    ms.set_context(device_target="CPU")
    ms.set_seed(spec["seed"])
    with contextlib.redirect_stdout(sys.stderr):
        model = build_detector(**spec["model"], verbose=False)
        calibrate_norm_statistics(model.backbone, model.roi_heads.res5, images)
    save_checkpoint(model, path)
    return model.backbone.out_channels, model.proposal_generator.num_anchors


def prepare(work, *, depth, size, seed, device, against, mode, fp32):
    """spec.json, inputs.npz and weights.ckpt in `work`."""
    spec = dict(model=model_spec(depth), seed=seed, size=size, device=device, against=against, mode=mode,
                fp32=bool(fp32), loss_names=list(LOSS_NAMES), grad_params=[name for name, _ in GRAD_PARAMS])
    inputs = make_inputs(spec["model"], size, seed)
    channels, num_anchors = write_weights(spec, inputs["images"], os.path.join(work, "weights.ckpt"))
    if inputs["given_objectness"].shape[1] != num_anchors:
        raise RuntimeError(f"the RPN has {num_anchors} anchors per cell, the given inputs 15")
    spec["channels"] = int(channels)
    np.savez(os.path.join(work, "inputs.npz"), **inputs)
    with open(os.path.join(work, "spec.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return spec


# ------------------------------------------------------------------------------ the two sides


def _side_command(work, side, device, mode, fp32):
    cmd = [sys.executable, "-m", "defrcn.apps.selfcheck_side", "--work", work, "--side", side,
           "--device", device, "--mode", mode]
    return cmd + (["--fp32"] if fp32 else [])


def _setup_failed(work, side):
    path = os.path.join(work, side, "status.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return bool(json.load(f).get("setup_error"))


def run_sides(work, spec, timeout=SIDE_TIMEOUT_S, progress=None):
    """Both sides at once; each one's log in `work/<side>/log.txt`. When one side cannot start
    (no such device), the other is stopped. Returns {side: exit code or why it was stopped}."""
    env = dict(os.environ)
    env.setdefault("GLOG_v", "3")
    devices = dict(zip(SIDES, (spec["against"], spec["device"])))
    procs, logs, codes = {}, [], {}
    start = time.monotonic()
    try:
        for side in SIDES:
            os.makedirs(os.path.join(work, side), exist_ok=True)
            logs.append(open(os.path.join(work, side, "log.txt"), "w"))
            procs[side] = subprocess.Popen(_side_command(work, side, devices[side], spec["mode"], spec["fp32"]),
                                           stdout=logs[-1], stderr=subprocess.STDOUT, env=env)
        while len(codes) < len(procs):
            for side, proc in procs.items():
                if side in codes or proc.poll() is None:
                    continue
                codes[side] = proc.returncode
                if progress:
                    progress(f"{devices[side]} side ({side}) done in {time.monotonic() - start:.0f} s")
                if proc.returncode and _setup_failed(work, side):
                    for other in procs:
                        codes.setdefault(other, f"stopped: the {devices[side]} side could not start")
            if time.monotonic() - start > timeout:
                for side in procs:
                    codes.setdefault(side, f"timeout after {timeout} s")
            time.sleep(0.2)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    for side, code in codes.items():
        with open(os.path.join(work, side, "log.txt"), errors="replace") as f:
            lines = [line.strip() for line in f if line.strip() and "WARNING" not in line]
        with open(os.path.join(work, side, "exit.json"), "w") as f:
            json.dump({"code": code, "log_tail": lines[-1][:300] if lines else ""}, f)
    return codes


def load_side(folder):
    """(status dict, {group: {key: array}}) of one side's records (missing groups left out)."""
    status = {}
    path = os.path.join(folder, "status.json")
    if os.path.isfile(path):
        with open(path) as f:
            status = json.load(f)
    path = os.path.join(folder, "exit.json")
    if os.path.isfile(path):
        with open(path) as f:
            status["exit"] = json.load(f)
    groups = {}
    for name, entry in status.get("groups", {}).items():
        npz = os.path.join(folder, f"{name}.npz")
        if entry.get("state") == "done" and os.path.isfile(npz):
            with np.load(npz) as data:
                groups[name] = {k: data[k] for k in data.files}
    return status, groups


# ------------------------------------------------------------------------------ comparison (numpy)


def _fmt(value):
    return "0" if value == 0 else f"{value:.2e}"


def array_diff(ref, dev):
    """(max abs diff, max abs diff / max |ref|, problem or "") over equal-shaped arrays."""
    ref, dev = np.asarray(ref, np.float64), np.asarray(dev, np.float64)
    if ref.shape != dev.shape:
        return float("inf"), float("inf"), f"shape {dev.shape}, reference {ref.shape}"
    finite_ref, finite_dev = np.isfinite(ref), np.isfinite(dev)
    if (finite_ref != finite_dev).any():
        count = int((finite_ref != finite_dev).sum())
        return float("inf"), float("inf"), f"{count} value(s) finite on one side only (NaN/Inf)"
    if not finite_ref.any():
        return 0.0, 0.0, ""
    diff = float(np.abs(ref[finite_ref] - dev[finite_ref]).max())
    scale = float(np.abs(ref[finite_ref]).max())
    return diff, (diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))), ""


def _box_iou(a, b):
    """IoU of paired boxes (N, 4) and (N, 4)."""
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(1)
    union = (a[:, 2:] - a[:, :2]).prod(1) + (b[:, 2:] - b[:, :2]).prod(1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 1.0)


def selection_diff(ref, dev, rtol, with_scores):
    """Kept boxes of two sides: same count per image, in order IoU >= MIN_IOU, same classes,
    scores within rtol. Returns (ok, max box diff px, max score diff, note)."""
    box_diff, score_diff, min_iou, notes, ok = 0.0, 0.0, 1.0, [], True
    for b in range(ref["boxes"].shape[0]):
        keep_r, keep_d = ref["valid"][b] > 0, dev["valid"][b] > 0
        n_r, n_d = int(keep_r.sum()), int(keep_d.sum())
        notes.append(f"{n_d}/{n_r}" if n_d != n_r else str(n_r))
        if n_r != n_d or not np.array_equal(keep_r, keep_d):
            ok = False
            continue
        rb, db = ref["boxes"][b][keep_r].astype(np.float64), dev["boxes"][b][keep_d].astype(np.float64)
        if n_r:
            box_diff = max(box_diff, float(np.abs(rb - db).max()))
            min_iou = min(min_iou, float(_box_iou(rb, db).min()))
        if with_scores and n_r:
            if not np.array_equal(ref["classes"][b][keep_r], dev["classes"][b][keep_d]):
                ok = False
                notes[-1] += " (classes differ)"
            score_diff = max(score_diff, float(np.abs(ref["scores"][b][keep_r].astype(np.float64)
                                                      - dev["scores"][b][keep_d]).max()))
    ok = ok and min_iou >= MIN_IOU and (not with_scores or score_diff <= rtol)
    note = f"kept per image {', '.join(notes)}; min IoU {min_iou:.4f}"
    if with_scores:
        note += f"; max score diff {_fmt(score_diff)}"
    return ok, box_diff, score_diff, note


def _short(message, limit=160):
    """The first sentence of a (MindSpore) error message, at most `limit` characters."""
    first = message.split(". ")[0].split(" ---")[0].strip()
    return first if len(first) <= limit else first[:limit - 3] + "..."


def _missing(statuses, group):
    """Why a group has no record on some side, e.g. 'GPU: RuntimeError: ...', or ''."""
    reasons = []
    for side in SIDES:
        status = statuses[side]
        entry = status.get("groups", {}).get(group)
        label = status.get("device", side)
        exit_info = status.get("exit", {})
        if status.get("setup_error"):
            reasons.append(f"{label}: {_short(status['setup_error'])}")
        elif entry is None and exit_info.get("code") not in (0, None):
            reasons.append(f"{label}: exited ({exit_info['code']}) before this stage: "
                           f"{_short(exit_info.get('log_tail', ''))}")
        elif entry is None:
            reasons.append(f"{label}: not run")
        elif entry.get("state") == "started":
            reasons.append(f"{label}: crashed in this stage")
        elif entry.get("state") == "error":
            reasons.append(f"{label}: {_short(entry.get('error', 'error'))}")
    return "; ".join(reasons)


# (stage, group, key, hint): continuous rows of the isolated stages
_FEATURE_ROWS = (
    ("backbone res4", "features", "res4", "convolution / frozen BatchNorm / ReLU / max-pool (the ResNet trunk)"),
    ("GDL affine, RPN branch", "features", "rpn_affine", "broadcast Mul / Add (the GDL's channel affine)"),
    ("GDL affine, ROI branch", "features", "roi_affine", "broadcast Mul / Add (the GDL's channel affine)"),
    ("RPN head objectness", "features", "rpn_objectness", "the RPN head's convolutions"),
    ("RPN head deltas", "features", "rpn_deltas", "the RPN head's convolutions"),
)
_ROI_ROWS = (
    ("ROIAlign 7x7 (given boxes)", "roi", "roi_align", "ROIAlign (BatchMatMul sampling, modeling/roi_align.py)"),
    ("res5 pooled (given boxes)", "roi", "res5", "res5's convolutions / ReduceMean"),
    ("class logits (given boxes)", "roi", "class_logits", "the box predictor's Dense (MatMul)"),
    ("box deltas (given boxes)", "roi", "box_deltas", "the box predictor's Dense (MatMul)"),
)
_LOSS_HINTS = {
    "loss_rpn_cls": "anchor matching / sampling (integer hash ops) / the objectness BCE",
    "loss_rpn_loc": "anchor matching / sampling / box encoding (Log) / L1",
    "loss_cls": "RoI matching / sampling / softmax cross-entropy",
    "loss_box_reg": "RoI matching / sampling / box encoding (Log) / L1",
}


def _continuous(keys, rtol, note=None):
    """A measure of the arrays `keys` of a group (the one with the largest rel diff is shown)."""
    def measure(ref, dev):
        diffs = {key: array_diff(ref[key], dev[key]) for key in keys}
        worst = max(diffs, key=lambda key: diffs[key][1])
        diff, rel, problem = diffs[worst]
        text = problem or (note(ref, dev) if note else f"largest: {worst.split('/', 1)[-1]}")
        return _fmt(diff), _fmt(rel), f"rel {rtol:.0e}", not problem and rel <= rtol, text
    return measure


def _selection(rtol, with_scores):
    """A measure of kept boxes (and their scores and classes): see selection_diff."""
    def measure(ref, dev):
        ok, box_diff, _, note = selection_diff(ref, dev, rtol, with_scores)
        tolerance = "same kept, IoU>=0.99" + (f", scores {rtol:.0e}" if with_scores else "")
        return f"{_fmt(box_diff)} px", "-", tolerance, ok, note
    return measure


def compare(statuses, groups, rtol=RTOL):
    """Rows of the table, in stage order. statuses / groups: {side: ...} from load_side."""
    ref, dev = groups["reference"], groups["device"]
    rows = []

    def add(stage, group, hint, measure, verdict_if_different="DEPARTS"):
        if group in ref and group in dev:
            abs_text, rel_text, tolerance, ok, note = measure(ref[group], dev[group])
            rows.append(Row(stage, abs_text, rel_text, tolerance, "OK" if ok else verdict_if_different, note, hint))
        else:
            rows.append(Row(stage, "-", "-", "-", "FAILED", _missing(statuses, group), hint))

    for stage, group, key, hint in _FEATURE_ROWS + _ROI_ROWS:
        add(stage, group, hint, _continuous([key], rtol, note=lambda r, d: ""))
    add("RPN proposals (given head outputs)", "proposals", "TopK, box decoding (Exp) or NMS in the RPN",
        _selection(rtol, False))
    add("detections (given predictor outputs)", "detections", "Softmax, TopK or per-class NMS in the "
        "post-processing", _selection(rtol, True))
    for name in LOSS_NAMES:
        key = f"loss/{name}"
        add(f"train {name} (given proposals)", "train", _LOSS_HINTS[name],
            _continuous([key], rtol, note=lambda r, d, k=key: f"{float(d[k]):.6g} vs {float(r[k]):.6g}"))
    for name, label in GRAD_PARAMS:
        add(f"grad {label}", "train", f"the backward kernels reaching {name} (convolution / MatMul gradients)",
            _continuous([f"grad/{name}"], rtol, note=lambda r, d, n=name: n))
    updates = [f"update/{name}" for name, _ in GRAD_PARAMS]
    add("SGD update (given proposals)", "train", "the optimizer's update (ApplyMomentum, weight decay)",
        _continuous(updates, rtol))
    # end to end, a difference is rounding carried through a near-tie unless a stage above departs
    cascade = "DEPARTS" if any(row.verdict != "OK" for row in rows) else "CASCADE"
    add("detections, whole detector", "e2e_inference", "the detector's own inference graph",
        _selection(rtol, True), cascade)
    add("train step losses, whole detector", "e2e_train", "the training graph (TrainStep)",
        _continuous([f"loss/{name}" for name in LOSS_NAMES], rtol), cascade)
    add("SGD update, whole detector", "e2e_train", "the training graph (TrainStep)", _continuous(updates, rtol),
        cascade)
    return rows


def render(rows, header=""):
    """The table as aligned text, then what it means."""
    head = ("stage", "max abs diff", "max rel diff", "tolerance", "result", "note")
    cells = [head] + [(r.stage, r.abs_diff, r.rel_diff, r.tolerance, r.verdict, r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = [header] if header else []
    for c in cells:
        lines.append("  ".join(c[i].ljust(widths[i]) for i in range(5)) + "  " + c[5])
    return "\n".join(line.rstrip() for line in lines)


def summary(rows, device, against, fp32=False):
    """Lines after the table: all well, the first departure and where to look, or the cascade."""
    bad = [r for r in rows if r.verdict in ("DEPARTS", "FAILED")]
    cascades = [r for r in rows if r.verdict == "CASCADE"]
    lines = []
    if bad:
        first = bad[0]
        what = "fails" if first.verdict == "FAILED" else "departs"
        lines.append(f"first departure: {first.stage} {what} on {device} -- look at {first.hint} on this device.")
        if len(bad) > 1:
            lines.append(f"{len(bad) - 1} later row(s) also depart; they may follow from the first: "
                         f"fix or report that one first (this table and the folder of --keep).")
        if first.verdict == "DEPARTS" and device in ("GPU", "Ascend") and not fp32:
            lines.append("differences just above the tolerance can be TF32 / HF32 / float16 rounding: rerun with "
                         "--fp32 (full float32 convolutions); what still departs then is the device's.")
    else:
        lines.append(f"all {len(rows)} stages within tolerance: {device} computes what {against} computes.")
    if cascades:
        lines.append(f"{len(cascades)} end-to-end row(s) differ while every stage agrees on the same inputs: "
                     f"float rounding reordered near-equal scores in a top-k or NMS and the difference "
                     f"carried on (normal across devices, not a fault).")
    return lines


def departed(rows):
    return any(r.verdict in ("DEPARTS", "FAILED") for r in rows)


# ------------------------------------------------------------------------------ entry points


def _header(spec, statuses):
    ms_version = statuses["device"].get("mindspore") or statuses["reference"].get("mindspore") or "?"
    model = spec["model"]
    precision = ", fp32 convolutions" if spec.get("fp32") else ""
    return (f"self-check: {spec['device']} against {spec['against']}: DeFRCN R-{model['depth']} C4 "
            f"({model['num_classes']} classes), 2 images on a {spec['size']}x{spec['size']} canvas, "
            f"{spec['mode']} mode{precision}, MindSpore {ms_version}")


def compare_folder(work, rtol=RTOL, kept=True):
    """(text, departed) for the records in `work` (a folder kept by run_selfcheck); `kept`: the
    folder stays after this (its files can be named)."""
    path = os.path.join(work, "spec.json")
    if not os.path.isfile(path):
        raise InputError("no self-check records here (spec.json missing)", path=work)
    with open(path) as f:
        spec = json.load(f)
    statuses, groups = {}, {}
    for side in SIDES:
        statuses[side], groups[side] = load_side(os.path.join(work, side))
    not_started = [s for s in SIDES if statuses[s].get("setup_error")]
    if not_started:
        status = statuses[not_started[0]]
        where = os.path.join(work, not_started[0], "status.json") if kept else "rerun with --keep DIR"
        lines = [_header(spec, statuses),
                 f"the {status['device']} side could not start: {_short(status['setup_error'])}",
                 f"(full message: {where}; check the MindSpore install with: python -c \"import mindspore; "
                 f"mindspore.set_device('{status['device']}'); mindspore.run_check()\")"]
        return "\n".join(lines), True
    rows = compare(statuses, groups, rtol)
    lines = summary(rows, spec["device"], spec["against"], spec.get("fp32", False))
    text = "\n".join([render(rows, _header(spec, statuses))] + lines)
    return text, departed(rows)


def check_options(device, against, depth, size, mode, rtol, timeout=SIDE_TIMEOUT_S):
    for name, value, allowed in (("--device", device, DEVICES), ("--against", against, DEVICES),
                                 ("--mode", mode, MODES), ("--depth", depth, DEPTHS)):
        if value not in allowed:
            raise InputError(f"{name}: expected one of {', '.join(map(str, allowed))}, got {value!r}")
    if size < 64 or size % 32:
        raise InputError(f"--size: a multiple of 32 from 64 up, got {size}")
    if not rtol > 0:
        raise InputError(f"--rtol: must be > 0, got {rtol}")
    if not timeout > 0:
        raise InputError(f"--timeout: must be > 0, got {timeout}")


def run_selfcheck(device, against="CPU", *, depth=18, size=128, mode="graph", rtol=RTOL, fp32=False, seed=0,
                  keep=None, timeout=SIDE_TIMEOUT_S, progress=None):
    """Prepare, run both sides, compare. Returns (text, departed); `keep`: a folder for the records."""
    check_options(device, against, depth, size, mode, rtol, timeout)
    work = os.path.abspath(keep) if keep else tempfile.mkdtemp(prefix="defrcn_selfcheck_")
    if keep:
        if os.path.isdir(keep) and os.listdir(keep):
            raise InputError("--keep: folder exists and is not empty", path=keep)
        os.makedirs(keep, exist_ok=True)
    try:
        start = time.monotonic()
        if progress:
            progress(f"writing weights and inputs to {work}")
        spec = prepare(work, depth=depth, size=size, seed=seed, device=device, against=against, mode=mode,
                       fp32=fp32)
        if progress:
            progress(f"running {device} and {against} sides ({mode} mode)")
        run_sides(work, spec, timeout, progress)
        text, bad = compare_folder(work, rtol, kept=bool(keep))
        text += f"\n({time.monotonic() - start:.0f} s" + (f"; records in {work})" if keep else ")")
        return text, bad
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
