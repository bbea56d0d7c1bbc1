"""Stage-by-stage parity of this project's detector and PCB with the original DeFRCN.

    python tools/parity.py --defrcn-src /tmp/src/DeFRCN --detectron2-src /tmp/src/detectron2 \
        --torch-python /tmp/peer/bin/python [--sizes 800x1216,800x1067] [--configs base,finetune] \
        [--set model.res5_conv=direct]

Two processes: `tools/parity_original.py`, run by `--torch-python`, builds the original
er-muyue/DeFRCN detector (R-101 C4, its own config files) with random weights whose
frozen-BN statistics are calibrated on one image, saves them as .pth and records every stage;
this script (the project's venv) converts the .pth with `tools/convert.py defrcn` (and the PCB
net with `tools/convert.py torchvision`), loads it into the recipe's detector with the
project's checkpoint loader, runs the same inputs on the recipe's static canvas and prints
one table per (config, size): max abs diff and max relative diff (max |ours - original| over
max |original|) of each stage. Rows that depend on upstream results are computed on the
original's proposals (teacher forcing), so a difference shows where it arises; the final
detections come from each model's own pipeline. docs/parity.md has the setup and results.

Settings that differ from the recipes for the comparison (the same on both sides):
every RPN anchor and every RoI candidate is sampled in training (batch sizes = candidate
counts, positive fraction 1), `--train-proposals` proposals per image in training (not
2000: memory), no classifier dropout (random masks cannot be matched).
Exit code: 0 when it ran (whatever the differences), 1 on failure.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

REL_TOL = 1e-4
# config name -> (the original's config file, number of classes, class list, project recipe, PCB?)
CONFIGS = {
    "base": ("configs/coco/defrcn_det_r101_base.yaml", 60, "base", "recipes/coco_base.py", False),
    "finetune": ("configs/coco/defrcn_gfsod_r101_novel_10shot_seedx.yaml", 80, "all",
                 "recipes/coco_tfa_10shot.py", True),
}
# gradients compared: the original's name (tools/parity_original.py GRAD_PARAMS)
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
NUM_GT = 6


def status(msg):
    print(f"[parity {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ inputs


def synthetic_scene(height, width, rng, num_objects):
    """uint8 (H, W, 3) RGB: smooth background, textured rectangles and ellipses; their XYXY boxes."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for c in range(3):
        fy, fx, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        img[:, :, c] = 120 + 60 * np.sin(fy * yy / height * 6.28 + ph) * np.cos(fx * xx / width * 6.28)
    img += rng.normal(0, 12, img.shape).astype(np.float32)
    boxes = []
    for _ in range(num_objects):
        bh, bw = rng.uniform(0.12, 0.45) * height, rng.uniform(0.1, 0.4) * width
        y0, x0 = rng.uniform(0, height - bh), rng.uniform(0, width - bw)
        y1, x1 = y0 + bh, x0 + bw
        color = rng.uniform(0, 255, 3)
        inside = (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)
        if rng.uniform() < 0.5:  # ellipse
            cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
            inside &= ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1.0
        stripes = 40 * np.sin((xx * rng.uniform(0.05, 0.3) + yy * rng.uniform(0.05, 0.3)))
        for c in range(3):
            img[:, :, c] = np.where(inside, color[c] + stripes, img[:, :, c])
        boxes.append([x0, y0, x1, y1])
    return np.clip(img, 0, 255).astype(np.uint8), np.array(boxes, np.float32)


def resize_rgb(image, height, width):
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def make_inputs(work, sizes, seed):
    """inputs.npz (content images as both sides see them, gt boxes / classes) and PNG files for PCB.

    Each content image is drawn at 0.6 of its size and resized (bilinear, PIL) to the content
    size, the way a COCO image reaches the model (480 x 640 -> 800 x 1067 at test scale 800);
    the resized uint8 array is what both models get, so resizing code is not compared."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for size in sizes:
        h, w = size["height"], size["width"]
        sh, sw = int(round(h * 0.6)), int(round(w * 0.6))
        small, boxes = synthetic_scene(sh, sw, rng, NUM_GT)
        arrays[f"image_{size['tag']}"] = resize_rgb(small, h, w)
        arrays[f"gt_boxes_{size['tag']}"] = (boxes * np.array([w / sw, h / sh, w / sw, h / sh], np.float32))
        arrays[f"gt_classes_base_{size['tag']}"] = rng.integers(0, 60, NUM_GT)
        arrays[f"gt_classes_all_{size['tag']}"] = rng.integers(0, 80, NUM_GT)
    # PCB support set: 4 images 480 x 640 covering all 80 classes (original's ids), 20 boxes each
    from PIL import Image

    support = []
    classes = rng.permutation(80)
    for i in range(4):
        img, _ = synthetic_scene(480, 640, rng, 4)
        name = f"support_{i}.png"
        Image.fromarray(img).save(os.path.join(work, name))
        x0 = rng.uniform(0, 560, 20)
        y0 = rng.uniform(0, 400, 20)
        bw = rng.uniform(24, 640 - x0)
        bh = rng.uniform(24, 480 - y0)
        boxes = np.stack([x0, y0, np.minimum(x0 + bw, 640), np.minimum(y0 + bh, 480)], 1)
        support.append({"file": name, "height": 480, "width": 640, "boxes": boxes.round(2).tolist(),
                        "classes": [int(c) for c in classes[20 * i:20 * i + 20]]})
        arrays[f"support_{i}"] = img
    np.savez(os.path.join(work, "inputs.npz"), **arrays)
    query_tag = sizes[0]["tag"]
    Image.fromarray(arrays[f"image_{query_tag}"]).save(os.path.join(work, "query.png"))
    return arrays, support, query_tag


# ------------------------------------------------------------------------------------ metrics


def diff(ours, orig):
    """(max abs diff, max abs diff / max |orig|) over equal-shaped arrays."""
    ours = np.asarray(ours, np.float64)
    orig = np.asarray(orig, np.float64)
    if ours.shape != orig.shape:
        raise ValueError(f"shape {ours.shape} vs original {orig.shape}")
    if orig.size == 0:
        return 0.0, 0.0
    d = float(np.abs(ours - orig).max())
    scale = float(np.abs(orig).max())
    return d, d / scale if scale > 0 else (0.0 if d == 0 else float("inf"))


def iou_matrix(a, b):
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_boxes(ours, orig, ours_cls=None, orig_cls=None, min_iou=0.5):
    """Greedy one-to-one match in the original's order: list of (orig index, our index, IoU)."""
    if len(ours) == 0 or len(orig) == 0:
        return []
    iou = iou_matrix(orig, ours)
    if ours_cls is not None:
        iou = np.where(np.asarray(orig_cls)[:, None] == np.asarray(ours_cls)[None, :], iou, -1.0)
    used = np.zeros(len(ours), bool)
    pairs = []
    for i in range(len(orig)):
        row = np.where(used, -1.0, iou[i])
        j = int(row.argmax())
        if row[j] >= min_iou:
            used[j] = True
            pairs.append((i, j, float(row[j])))
    return pairs


def verdict(rel, floor=None):
    """ok: within REL_TOL; fp32: beyond it but within twice the original's own float32 error
    (its float32 run against its float64 run); DIFF otherwise."""
    if rel <= REL_TOL:
        return "ok"
    if floor is not None and rel <= 2 * floor:
        return "fp32"
    return "DIFF"


class Table:
    """Rows: stage, shape, max |original|, ours vs original (max abs, max rel), verdict, and the
    original's own float32 error (its float32 run vs its float64 run, max rel), when known."""

    HEAD = ("stage", "shape", "max abs orig", "max abs diff", "max rel diff", "", "orig fp32 vs fp64 rel",
            "ours vs orig fp64 rel", "note")

    def __init__(self, title):
        self.title = title
        self.rows = []

    def add(self, stage, shape, ours, orig, note="", fp64=None):
        d, r = diff(ours, orig)
        floor = diff(orig, fp64)[1] if fp64 is not None else None
        scale = float(np.abs(np.asarray(orig)).max()) if np.size(orig) else 0.0
        ours64 = "" if fp64 is None else f"{diff(ours, fp64)[1]:.2g}"
        self.rows.append((stage, shape, f"{scale:.4g}", f"{d:.3g}", f"{r:.3g}", verdict(r, floor),
                          "" if floor is None else f"{floor:.2g}", ours64, note))
        return d, r

    def text(self, stage, shape, abs_text, rel_text, verdict, note="", floor=""):
        self.rows.append((stage, shape, "", abs_text, rel_text, verdict, floor, "", note))

    def render(self):
        lines = [f"#### {self.title}", "", "| " + " | ".join(self.HEAD) + " |", "|" + "---|" * len(self.HEAD)]
        for row in self.rows:
            lines.append("| " + " | ".join(str(c) for c in row) + " |")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------ original side


def run_original(args, work):
    cmd = [args.torch_python, os.path.join(HERE, "parity_original.py"), "--defrcn-src", args.defrcn_src,
           "--detectron2-src", args.detectron2_src, "--work", work, "--threads", str(args.threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    status("original: " + " ".join(cmd))
    subprocess.run(cmd, check=True, env=env)


def convert(kind, src, dst, recipe, overrides=()):
    """tools/convert.py as a user runs it (it reads the original's .pth files without PyTorch)."""
    argv = [os.path.join(HERE, "convert.py"), kind, src, dst]
    if recipe:
        argv += ["--recipe", recipe] + [a for o in overrides for a in ("--set", o)]
    out = subprocess.run([sys.executable] + argv, cwd=ROOT, capture_output=True, text=True)
    text = (out.stdout + out.stderr).strip()
    lines = [l for l in text.splitlines() if "WARNING" not in l and l.strip()]
    if out.returncode != 0:
        raise RuntimeError(f"tools/convert.py {kind} failed: {text[-2000:]}")
    return lines


# ------------------------------------------------------------------------------------ project side


def recipe_overrides(req, canvas_anchors):
    t = req["train"]
    return [f"model.rpn.post_nms_topk_train={t['post_nms_topk_train']}",
            f"model.rpn.batch_size_per_image={canvas_anchors}",
            "model.rpn.positive_fraction=1.0",
            f"model.roi.batch_size_per_image={t['roi_batch_size_per_image']}",
            "model.roi.positive_fraction=1.0",
            "model.cls_dropout=0.0"]


class Hooks:
    def __init__(self):
        self.out = {}
        self.handles = []

    def add(self, cell, name, pick):
        def hook(c, inputs, output):
            self.out.setdefault(name, []).append(pick(inputs, output))
        self.handles.append(cell.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()


def _a(t):
    return t.asnumpy()


def project_model(recipe_path, overrides, ckpt):
    from defrcn.checkpoint.io import load_checkpoint, load_into
    from defrcn.engine import load_recipe
    from defrcn.data.spec import resolve_data_spec

    recipe = load_recipe(os.path.join(ROOT, recipe_path), overrides)
    cfg = recipe.cfg
    model = recipe.model(cfg)
    missing, unexpected, mismatch = load_into(model, load_checkpoint(ckpt))
    missing = [m for m in missing if m != "sample_step"]
    if missing or unexpected or mismatch:
        raise RuntimeError(f"checkpoint does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                           f"shape {mismatch[:3]}")
    return cfg, model, list(resolve_data_spec(cfg.data, num_classes=cfg.model.num_classes).model_classes)


def canvas_input(cfg, rgb):
    from defrcn.data.transforms import choose_canvas, normalize_to_canvas

    canvases = [tuple(int(v) for v in c) for c in cfg.input.canvases]
    canvas = canvases[choose_canvas(rgb.shape[0], rgb.shape[1], canvases)]
    image = normalize_to_canvas(rgb, cfg.input.format, canvas)[None]
    sizes = np.array([[rgb.shape[0], rgb.shape[1]]], np.float32)
    return image, sizes, canvas


def _padded(boxes, slots):
    out = np.zeros((1, slots, 4), np.float32)
    valid = np.zeros((1, slots), np.float32)
    out[0, :len(boxes)] = boxes
    valid[0, :len(boxes)] = 1
    return out, valid


def project_inference(model, image, sizes, forced=None, rpn_head=None, topk=None):
    """Eval forward with hooks. Teacher forcing: `forced` (n, 4) replaces the RPN's proposals;
    `rpn_head` = (objectness (1, A, h, w), deltas (1, 4A, h, w)) replaces the RPN head's
    output (zeros past h, w: those map cells are outside the image's extent)."""
    import mindspore as ms

    heads = model.roi_heads
    rpn = model.proposal_generator
    hooks = Hooks()
    hooks.add(model.backbone, "res4", lambda i, o: _a(o[0] if isinstance(o, (tuple, list)) else o))
    hooks.add(model.rpn_branch, "affine_rpn", lambda i, o: _a(o))
    hooks.add(model.roi_branch, "affine_rcnn", lambda i, o: _a(o))
    hooks.add(rpn.head, "rpn_objectness", lambda i, o: _a(o[0]))
    hooks.add(rpn.head, "rpn_deltas", lambda i, o: _a(o[1]))
    hooks.add(heads.pooler, "roi_align", lambda i, o: _a(o))
    hooks.add(heads.res5, "res5", lambda i, o: _a(o))
    hooks.add(heads.box_predictor, "class_logits", lambda i, o: _a(o[0]))
    hooks.add(heads.box_predictor, "box_deltas", lambda i, o: _a(o[1]))
    overridden = []
    if forced is not None:
        boxes, valid = _padded(forced, rpn.post_nms_topk_test)
        rpn.construct = lambda *a, **k: (ms.Tensor(boxes), ms.Tensor(valid))
        overridden.append(rpn)
    else:
        hooks.add(rpn, "proposals", lambda i, o: (_a(o[0]), _a(o[1])))
    if rpn_head is not None:
        def head(x):
            obj = np.zeros((1, rpn_head[0].shape[1]) + tuple(x.shape[2:]), np.float32)
            dts = np.zeros((1, rpn_head[1].shape[1]) + tuple(x.shape[2:]), np.float32)
            h, w = rpn_head[0].shape[2:]
            obj[:, :, :h, :w] = rpn_head[0]
            dts[:, :, :h, :w] = rpn_head[1]
            return ms.Tensor(obj), ms.Tensor(dts)
        rpn.head.construct = head
        overridden.append(rpn.head)
    saved_topk = heads.pre_nms_topk
    if topk is not None:
        heads.pre_nms_topk = topk
    model.set_train(False)
    try:
        det_boxes, det_scores, det_classes, det_valid = model(ms.Tensor(image), ms.Tensor(sizes))
    finally:
        hooks.remove()
        heads.pre_nms_topk = saved_topk
        for cell in overridden:
            del cell.construct
    out = {k: (np.concatenate(v, 0) if k in ("roi_align", "res5", "class_logits", "box_deltas") else v[0])
           for k, v in hooks.out.items()}
    keep = _a(det_valid)[0] > 0
    out["det_boxes"] = _a(det_boxes)[0][keep]
    out["det_scores"] = _a(det_scores)[0][keep]
    out["det_classes"] = _a(det_classes)[0][keep]
    return out


def project_training(model, image, sizes, gt_boxes, gt_classes, grad_names, forced):
    """One training step's losses and the gradients of `grad_names` (ours), the ROI heads
    given the original's training proposals `forced` (the RPN's own losses and gradients
    unchanged; its own proposals are returned as "own_proposals")."""
    import mindspore as ms

    params = {p.name: p for p in model.get_parameters()}
    trainable = [n for n in grad_names if n in params and params[n].requires_grad]
    rpn = model.proposal_generator
    boxes, valid = _padded(forced, rpn.post_nms_topk_train)
    own = []
    construct = rpn.construct

    def forcing(*a, **k):
        out = construct(*a, **k)
        own.append((_a(out[0]), _a(out[1])))
        return (ms.Tensor(boxes), ms.Tensor(valid)) + tuple(out[2:])

    rpn.construct = forcing
    model.set_train(True)
    inputs = (ms.Tensor(image), ms.Tensor(sizes), ms.Tensor(gt_boxes[None].astype(np.float32)),
              ms.Tensor(gt_classes[None].astype(np.int32)), ms.Tensor(np.ones((1, len(gt_boxes)), np.float32)))
    fn = ms.value_and_grad(lambda *x: model(*x), None, weights=[params[n] for n in trainable], has_aux=True)
    try:
        values, grads = fn(*inputs)
    finally:
        del rpn.construct
        model.set_train(False)
    names = getattr(model, "loss_names", ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"))
    out = {f"loss/{n}": float(_a(v)) for n, v in zip(names, values[1:])}
    out["grads"] = {n: _a(g) for n, g in zip(trainable, grads)}
    out["frozen"] = [n for n in grad_names if n in params and not params[n].requires_grad]
    props, pvalid = own[0]
    out["own_proposals"] = props[0][pvalid[0] > 0]
    return out


# ------------------------------------------------------------------------------------ comparison


def proposal_row(t, label, ours, orig, floor_orig=None):
    """Proposal sets: in order if both lists agree row by row, else matched one-to-one."""
    floor, floor_matched = "", None
    if floor_orig is not None:
        floor_matched = len(match_boxes(floor_orig, orig, min_iou=0.999))
        floor = f"fp64 run: {floor_matched}/{len(orig)} at IoU>=0.999"
    if len(ours) == len(orig) > 0 and float(np.abs(ours - orig).max()) < 0.5:
        d, r = diff(ours, orig)
        t.text(label, f"{len(orig)} both", f"{d:.3g}", f"{r:.3g}", verdict(r), "same boxes, same order", floor)
        return verdict(r)
    pairs = match_boxes(ours, orig, min_iou=0.5)
    exact = [p for p in pairs if p[2] >= 0.999]
    # fp32: we agree with the original at least 80% as well as its own float64 run does
    tag = "fp32" if floor_matched is not None and len(exact) >= 0.8 * floor_matched else "DIFF"
    t.text(label, f"{len(orig)} orig / {len(ours)} ours", "-", "-", tag,
           f"{len(exact)} matched at IoU>=0.999, {len(pairs)} at IoU>=0.5", floor)
    return tag


def detection_row(t, label, res, orig, perm, floor=None, upstream_fp32=False):
    """Detections matched by class and IoU; `upstream_fp32`: the proposals they come from differ
    only as the original's own float64 run differs (then a difference here is "fp32" too)."""
    cls = perm[:-1][orig["det_classes"]]  # original class ids -> ours
    pairs = match_boxes(res["det_boxes"], orig["det_boxes"], res["det_classes"], cls, min_iou=0.5)
    good = [p for p in pairs if p[2] >= 0.99]
    sd = max((abs(float(res["det_scores"][j]) - float(orig["det_scores"][i])) for i, j, _ in pairs), default=0.0)
    bd = max((float(np.abs(res["det_boxes"][j] - orig["det_boxes"][i]).max()) for i, j, _ in pairs), default=0.0)
    miou = min((p[2] for p in pairs), default=1.0)
    all_matched = len(good) == len(orig["det_scores"]) == len(res["det_scores"])
    floor_text, floor_sd = "", None
    if floor is not None:
        fp = match_boxes(floor["det_boxes"], orig["det_boxes"], floor["det_classes"], orig["det_classes"], 0.5)
        floor_sd = max((abs(float(floor["det_scores"][j]) - float(orig["det_scores"][i])) for i, j, _ in fp),
                       default=0.0)
        floor_text = (f"fp64 run: {len([p for p in fp if p[2] >= 0.99])}/{len(orig['det_scores'])} matched, "
                      f"score diff {floor_sd:.3g}")
    if all_matched and sd <= REL_TOL:
        tag = "ok"
    elif (all_matched and floor_sd is not None and sd <= 2 * floor_sd) or upstream_fp32:
        tag = "fp32"
    else:
        tag = "DIFF"
    t.text(label, f"{len(orig['det_scores'])} orig / {len(res['det_scores'])} ours",
           f"score {sd:.3g}, box {bd:.3g} px", "-", tag,
           f"{len(good)} matched (same class, IoU>=0.99), {len(pairs)} at IoU>=0.5, min IoU {miou:.4f}", floor_text)


def compare_config(name, req, work, arrays, settings=()):
    import mindspore as ms
    from defrcn.checkpoint.convert_detector import defrcn_to_detector_name

    cfg_file, num_classes, class_list, recipe, with_pcb = CONFIGS[name]
    meta = json.load(open(os.path.join(work, "original_meta.json")))
    orig_names = meta[f"{name}/class_names"]
    ckpt = os.path.join(work, f"project_{name}.ckpt")
    overrides = recipe_overrides(req, req["canvas_anchors"]) + list(settings)
    status(f"{name}: tools/convert.py defrcn original_{name}.pth -> {os.path.basename(ckpt)} ({recipe})")
    conv_lines = convert("defrcn", os.path.join(work, f"original_{name}.pth"), ckpt, recipe, overrides)
    for line in conv_lines:
        print("    " + line)
    cfg, model, our_names = project_model(recipe, overrides, ckpt)
    ms.set_context(mode=ms.PYNATIVE_MODE)
    # class permutation: our index of each original class (background last on both sides)
    perm = np.array([our_names.index(n) for n in orig_names] + [num_classes])
    box_cols = (perm[:-1, None] * 4 + np.arange(4)).reshape(-1)
    tables = []
    extras = {"convert": conv_lines, "class_order_same": bool((perm[:-1] == np.arange(num_classes)).all())}
    for size in req["sizes"]:
        tag = size["tag"]
        npz = dict(np.load(os.path.join(work, f"original_{name}_{tag}.npz")))
        orig = {k: v for k, v in npz.items() if not k.startswith("fp64/")}
        f64 = {k[5:]: v for k, v in npz.items() if k.startswith("fp64/")}
        g64 = lambda key: f64.get(key)  # noqa: E731
        rgb = arrays[f"image_{tag}"]
        image, sizes, canvas = canvas_input(cfg, rgb)
        shape_in = "x".join(str(int(v)) for v in orig["backbone_input_shape"][2:])
        t = Table(f"{name}: {cfg_file} vs {recipe}; content {rgb.shape[0]}x{rgb.shape[1]} on our canvas "
                  f"{canvas[0]}x{canvas[1]} (the original's input tensor: {shape_in})")
        status(f"{name} {tag}: inference")
        ours = project_inference(model, image, sizes)
        h4, w4 = orig["res4"].shape[2:]
        crop = (slice(None), slice(None), slice(0, h4), slice(0, w4))
        cov = f"the original's {h4}x{w4} of our {ours['res4'].shape[2]}x{ours['res4'].shape[3]}"
        t.add("res4 features", str(orig["res4"].shape), ours["res4"][crop], orig["res4"], cov, g64("res4"))
        t.add("GDL affine, RPN branch", str(orig["affine_rpn"].shape), ours["affine_rpn"][crop], orig["affine_rpn"],
              "", g64("affine_rpn"))
        t.add("GDL affine, ROI branch", str(orig["affine_rcnn"].shape), ours["affine_rcnn"][crop],
              orig["affine_rcnn"], "", g64("affine_rcnn"))
        t.add("RPN objectness logits", str(orig["rpn_objectness"].shape), ours["rpn_objectness"][crop],
              orig["rpn_objectness"], "", g64("rpn_objectness"))
        t.add("RPN anchor deltas", str(orig["rpn_deltas"].shape), ours["rpn_deltas"][crop], orig["rpn_deltas"],
              "", g64("rpn_deltas"))
        props, valid = ours["proposals"]
        own_verdict = proposal_row(t, "proposals, own pipeline", props[0][valid[0] > 0], orig["proposals"],
                                   g64("own_proposals"))
        status(f"{name} {tag}: proposals from the original's RPN head outputs")
        from_head = project_inference(model, image, sizes, rpn_head=(orig["rpn_objectness"], orig["rpn_deltas"]))
        props, valid = from_head["proposals"]
        proposal_row(t, "proposals from the orig. RPN head outputs", props[0][valid[0] > 0], orig["proposals"])
        op = orig["proposals"]
        n = len(op)
        status(f"{name} {tag}: ROI stages on the original's {n} proposals")
        forced = project_inference(model, image, sizes, forced=op)
        # the original's float64 run had the float32 run's proposals forced the same way
        # res5 reading its input at stride s takes only those bins from our pooler (ResNetRes5.input_stride)
        stride = model.roi_heads.pooler.bin_stride
        orig_bins = orig["roi_align"][:, :, ::stride, ::stride]
        bins64 = g64("roi_align")
        side = orig_bins.shape[-1]
        label = "ROIAlign 7x7" if stride == 1 else f"ROIAlign 7x7, the {side}x{side} bins res5 reads"
        t.add(f"{label} (orig proposals)", str(orig_bins.shape), forced["roi_align"][:n], orig_bins, "",
              None if bins64 is None else bins64[:, :, ::stride, ::stride])
        t.add("res5 output (orig proposals)", str(orig["res5"].shape), forced["res5"][:n], orig["res5"], "",
              g64("res5"))
        t.add("class logits (orig proposals)", str(orig["class_logits"].shape), forced["class_logits"][:n][:, perm],
              orig["class_logits"], "", g64("class_logits"))
        t.add("box deltas (orig proposals)", str(orig["box_deltas"].shape), forced["box_deltas"][:n][:, box_cols],
              orig["box_deltas"], "", g64("box_deltas"))
        detection_row(t, "detections, own pipeline", ours, orig, perm, upstream_fp32=own_verdict == "fp32")
        detection_row(t, "detections (orig proposals)", forced, orig, perm, f64 or None)
        # the (box, class) candidate cap of our post-processing
        pairs_orig = int(orig["pairs_above_thresh"])
        logits = forced["class_logits"][:n].astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs = probs / probs.sum(1, keepdims=True)
        pairs_ours = int((probs[:, :-1] > model.roi_heads.score_thresh).sum())
        status(f"{name} {tag}: post-processing without the pre_nms_topk cap")
        # any k >= the pairs above the threshold is "no cap" (the rest score -1); NMSWithMask
        # needs k * k memory, so k is not simply every pair
        uncapped = project_inference(model, image, sizes, forced=op, topk=max(pairs_ours, pairs_orig) + 16)
        same = (len(uncapped["det_scores"]) == len(forced["det_scores"]) and
                np.array_equal(uncapped["det_classes"], forced["det_classes"]) and
                np.allclose(uncapped["det_boxes"], forced["det_boxes"]) and
                np.allclose(uncapped["det_scores"], forced["det_scores"]))
        cap = model.roi_heads.pre_nms_topk
        t.text("pre_nms_topk cap", f"pairs > 0.05: {pairs_orig} orig / {pairs_ours} ours", "-", "-",
               "ok" if same else "DIFF", f"cap {cap}: detections {'unchanged' if same else 'CHANGED'} without it")
        if not same:
            detection_row(t, "detections (orig proposals, no cap)", uncapped, orig, perm)
        extras[f"{tag}/pairs_above_thresh"] = {"original": pairs_orig, "ours": pairs_ours, "cap": cap}
        extras[f"{tag}/cap_changes_detections"] = not same
        # training: the four losses and gradients, the ROI heads on the original's proposals
        status(f"{name} {tag}: training step")
        gt_boxes = arrays[f"gt_boxes_{tag}"]
        gt_classes = perm[:-1][arrays[f"gt_classes_{class_list}_{tag}"]]
        ours_names = {n: defrcn_to_detector_name(n) for n in GRAD_PARAMS}
        tr = project_training(model, image, sizes, gt_boxes, gt_classes, list(ours_names.values()),
                              orig["train_proposals"])
        proposal_row(t, "train proposals, own pipeline", tr["own_proposals"], orig["train_proposals"],
                     g64("train_proposals"))
        for loss in ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"):
            t.add(f"train {loss}", "()", tr[f"loss/{loss}"], orig[f"loss/{loss}"],
                  f"ours {tr[f'loss/{loss}']:.6g}, orig {float(orig[f'loss/{loss}']):.6g}", g64(f"loss/{loss}"))
        for oname, pname in ours_names.items():
            og = orig[f"grad/{oname}"]
            orig_frozen = not bool(orig[f"requires_grad/{oname}"])
            if pname in tr["frozen"] or orig_frozen:
                t.text(f"grad {oname}", "-", "-", "-", "ok" if (pname in tr["frozen"]) == orig_frozen else "DIFF",
                       f"frozen: orig {orig_frozen}, ours {pname in tr['frozen']}")
                continue
            g = tr["grads"][pname]
            g = g.reshape(og.shape) if og.size == g.size else g
            f = g64(f"grad/{oname}")
            if oname.endswith("cls_score.weight"):
                g = g[perm]
            elif oname.endswith("bbox_pred.weight"):
                g = g[box_cols]
            norm = float(np.linalg.norm(og))
            nz = (f"nonzero: orig {bool(np.abs(og).max() > 0)}, ours {bool(np.abs(g).max() > 0)}; norm orig "
                  f"{norm:.3g}, ours {np.linalg.norm(g):.3g}; |ours-orig|/|orig| {np.linalg.norm(g - og) / max(norm, 1e-30):.2g}")
            t.add(f"grad {oname}", str(og.shape), g, og, nz, f)
        tables.append(t)
        print(t.render(), flush=True)
        extras[f"{tag}/orig_input_shape"] = [int(v) for v in orig["backbone_input_shape"]]
        extras[f"{tag}/canvas"] = list(canvas)
        if with_pcb and tag == req["pcb"]["query_size"]:
            tables.append(compare_pcb(work, req, arrays, orig_names, our_names, cfg))
            print(tables[-1].render(), flush=True)
    return tables, extras


def compare_pcb(work, req, arrays, orig_names, our_names, cfg):
    from defrcn.pcb import PCB
    from defrcn.pcb.feature_model import ImageNetResNetFeatures
    from defrcn.pcb.prototypes import compute_prototypes

    status("PCB: tools/convert.py torchvision pcb_resnet101.pth")
    ckpt = os.path.join(work, "pcb_resnet101.ckpt")
    for line in convert("torchvision", os.path.join(work, "pcb_resnet101.pth"), ckpt, None):
        print("    " + line)
    orig = dict(np.load(os.path.join(work, "original_pcb.npz")))
    fm = ImageNetResNetFeatures("resnet101", weights=ckpt)
    images = {f"support_{i}.png": arrays[f"support_{i}"] for i in range(len(req["pcb"]["support"]))}
    images["query.png"] = arrays[f"image_{req['pcb']['query_size']}"]
    records = [{"file_name": s["file"], "height": s["height"], "width": s["width"],
                "annotations": [{"bbox": b, "category_id": our_names.index(orig_names[c])}
                                for b, c in zip(s["boxes"], s["classes"])]} for s in req["pcb"]["support"]]

    class Meta:
        name = "parity_support"
        class_names = our_names

    load = lambda record: images[record["file_name"]]  # noqa: E731
    protos = compute_prototypes(fm, records, Meta, load_image=load)
    pcb = PCB(fm, protos, our_names, untouched_classes=cfg.data.base_classes, alpha=cfg.test.pcb.alpha,
              lower=cfg.test.pcb.lower, upper=cfg.test.pcb.upper, load_image=load)
    classes = np.array([our_names.index(orig_names[c]) for c in orig["pcb_classes"]])
    query = {"file_name": "query.png", "height": images["query.png"].shape[0], "width": images["query.png"].shape[1]}
    new = pcb.rescore(query, orig["pcb_boxes"], orig["pcb_scores_in"], classes)
    t = Table(f"PCB (calibration_layer.py vs defrcn/pcb), {len(new)} detections of the original's "
              f"fine-tune model on {query['height']}x{query['width']}")
    rows = [protos.class_names.index(orig_names[c]) for c in orig["pcb_proto_classes"]]
    t.add("prototypes (80 classes)", str(orig["pcb_prototypes"].shape), protos.vectors[rows], orig["pcb_prototypes"])
    changed = int((np.abs(orig["pcb_scores_out"] - orig["pcb_scores_in"]) > 0).sum())
    t.add("rescored scores", str(new.shape), new, orig["pcb_scores_out"],
          f"{changed} rescored by the original (novel classes), {len(new) - changed} untouched")
    return t


# ------------------------------------------------------------------------------------ main


def parse_sizes(text):
    sizes = []
    for item in text.split(","):
        h, w = (int(v) for v in item.lower().split("x"))
        sizes.append({"tag": f"{h}x{w}", "height": h, "width": w})
    return sizes


def _git(path, *args):
    return subprocess.run(["git", "-C", path, *args], capture_output=True, text=True, check=True).stdout


def code_state(path):
    """What the project side runs: (tree ids of defrcn/ and recipes/ at HEAD, their uncommitted
    diff, their untracked files), or None outside a git checkout. A commit touching only other
    folders leaves it unchanged."""
    try:
        return (_git(path, "rev-parse", "HEAD:defrcn", "HEAD:recipes"),
                _git(path, "diff", "HEAD", "--", "defrcn", "recipes"),
                _git(path, "ls-files", "--others", "--exclude-standard", "--", "defrcn", "recipes").split())
    except (subprocess.CalledProcessError, OSError):
        return None


def git_head(path, code):
    """HEAD, plus the files of defrcn/ and recipes/ that differ from it and a digest of that
    diff (`code` from code_state: the comparison runs the working tree)."""
    try:
        head = _git(path, "rev-parse", "HEAD").strip()
    except (subprocess.CalledProcessError, OSError):
        return "?"
    if code is None:
        return head
    _, diff_text, untracked = code
    changed = [line.split(" b/", 1)[1] for line in diff_text.splitlines() if line.startswith("diff --git ")]
    if not changed and not untracked:
        return head
    digest = hashlib.sha256(diff_text.encode())
    for name in untracked:
        with open(os.path.join(path, name), "rb") as f:
            digest.update(f.read())
    return (f"{head} + uncommitted changes to {', '.join(changed + untracked)} "
            f"(diff digest {digest.hexdigest()[:12]})")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Stage-by-stage parity with the original DeFRCN.",
                                     epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--defrcn-src", required=True, help="er-muyue/DeFRCN source tree")
    parser.add_argument("--detectron2-src", required=True, help="facebookresearch/detectron2 source tree")
    parser.add_argument("--torch-python", required=True, help="a python with torch + torchvision + fvcore ...")
    parser.add_argument("--sizes", default="800x1216,800x1067", help="content sizes HxW (comma separated)")
    parser.add_argument("--configs", default="base,finetune", help="base, finetune or both")
    parser.add_argument("--train-proposals", type=int, default=256, help="RPN proposals per image in training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hot-classes", type=int, default=6,
                        help="classes whose classifier bias gets +2.5 (several pairs > 0.05 per box)")
    parser.add_argument("--no-fp64", action="store_true", help="skip the original's float64 reference run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default="", help="work folder (default: a new temp folder)")
    parser.add_argument("--reuse-original", action="store_true", help="keep the original's results in --work")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--markdown", default="", help="also write the tables to this file")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the project's recipes, e.g. model.res5_conv=direct (repeatable)")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            parser.error(f"--configs: unknown {c!r} (base, finetune)")
    from defrcn.engine import load_recipe
    from defrcn.errors import InputError

    recipes = {}
    for c in configs:  # a bad --set fails here, not after the original's side has run
        try:
            recipes[c] = load_recipe(os.path.join(ROOT, CONFIGS[c][3]), args.settings)
        except InputError as error:
            parser.error(f"--set: {error}")
    code = code_state(ROOT)  # before anything runs: the tree may change while this runs
    state = git_head(ROOT, code)
    work = args.work or tempfile.mkdtemp(prefix="parity_")
    os.makedirs(work, exist_ok=True)
    sizes = parse_sizes(args.sizes)
    # the RPN samples every anchor: batch = anchors on the largest canvas used (15 per cell, stride 16)
    canvases = recipes[configs[0]].cfg.input.canvases
    canvas_anchors = max(-(-int(c[0]) // 16) * -(-int(c[1]) // 16) * 15 for c in canvases)
    n = args.train_proposals
    req = {"seed": args.seed, "sizes": sizes, "canvas_anchors": canvas_anchors, "hot_classes": args.hot_classes,
           "fp64": not args.no_fp64,
           "calibration_image": f"image_{sizes[0]['tag']}",
           "train": {"post_nms_topk_train": n, "rpn_batch_size_per_image": canvas_anchors,
                     "roi_batch_size_per_image": n + NUM_GT},
           "configs": [{"name": c, "config": CONFIGS[c][0], "num_classes": CONFIGS[c][1], "classes": CONFIGS[c][2],
                        "pcb": CONFIGS[c][4]} for c in configs]}
    t0 = time.time()
    have = args.reuse_original and os.path.isfile(os.path.join(work, "original_meta.json"))
    if have:
        req = json.load(open(os.path.join(work, "request.json")))
        arrays = dict(np.load(os.path.join(work, "inputs.npz")))
    else:
        arrays, support, query_tag = make_inputs(work, sizes, args.seed)
        req["pcb"] = {"support": support, "query_size": query_tag, "query_file": "query.png",
                      "calibration_image": "support_0"}
        with open(os.path.join(work, "request.json"), "w") as f:
            json.dump(req, f, indent=1)
        run_original(args, work)
    status(f"original done ({time.time() - t0:.0f} s); work folder {work}")
    all_tables, all_extras = [], {}
    for c in configs:
        tables, extras = compare_config(c, req, work, arrays, args.settings)
        all_tables += tables
        all_extras[c] = extras
    meta = json.load(open(os.path.join(work, "original_meta.json")))
    import mindspore

    if code_state(ROOT) != code:
        state += " (CHANGED while this ran: rerun on a quiet tree)"
    header = [f"project: {state}; MindSpore {mindspore.__version__}; original: "
              f"torch {meta['torch']}, torchvision {meta['torchvision']}, detectron2 {meta['detectron2']} "
              f"({meta['detectron2_file']}), python {meta['python']}",
              *([f"project settings (--set): {' '.join(args.settings)}"] if args.settings else []),
              "patches applied to the original at run time:"] + [f"  - {p}" for p in meta["patches"]]
    print("\n".join(header))
    print(json.dumps(all_extras, indent=1, default=str))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(header) + "\n\n" + "\n\n".join(t.render() for t in all_tables) + "\n\n```\n" +
                    json.dumps(all_extras, indent=1, default=str) + "\n```\n")
    status(f"done in {time.time() - t0:.0f} s")
    if not args.keep and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
