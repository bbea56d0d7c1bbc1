"""Speed and memory of a recipe's detector and data loader on random inputs.

    result = benchmark_recipe("recipes/coco_base.py", mode="infer", batch=1, size=(512, 512))

Modes:
- "infer": one forward pass of the detector in eval mode (proposals -> detections).
- "train": one optimizer step (`TrainStep`: forward, backward, SGD/AdamW update).
- "data": images/s of the recipe's training loader over synthetic JPEGs.

What the model sees (the same as the PyTorch peer docs/benchmark.md compares with):
random weights; a batch of random images of exactly (H, W) filling the canvas
(`image_sizes` = (H, W)); `BOXES_PER_IMAGE` random gt boxes per image in training; the
recipe's own settings otherwise (proposal counts, RoIs per image, pooler, freeze_at, norm).

Calibrated norm statistics: random weights with frozen BN (identity statistics) let
activations grow to ~1e4 through the residual blocks, no proposal survives and the ROI
heads would time empty work. `calibrate_norm_statistics` fixes that as the peer does,
layer by layer: in PyNative mode a forward pre-hook on every BN layer (frozen or not)
sets its `moving_mean` / `moving_variance` to the per-channel mean / variance of the
input it is about to normalise, so its output is normalised and the next layer is
calibrated on already-calibrated inputs (one pass = layer by layer). The pass runs
the trunk on a synthetic batch (2 x 3 x 256 x 256 by default) and res5 on the trunk's
output. The RPN then yields its full proposal count (`proposals_per_image`).

Timing: graph mode; `compile_s` is the time of `Cell.compile` on the benchmark inputs;
then `warmup` untimed calls and `iters` timed calls, each ended by copying the first
output to numpy (so the step has finished). `median_ms`, `min_ms` are over the timed
calls; `peak_rss_mib` is the process's peak resident memory (`VmHWM`) when the timed calls
end. The proposal count (a PyNative pass of the RPN) and `--breakdown`'s graphs run after that:
they are the benchmark's own checks, which eval and training never run. MindSpore's memory is
planned as training, eval and infer plan it (`plan_graph_memory`: `memory_optimize_level` O1),
and inference fuses the convolutions' elementwise tails on CPU as eval and infer do
(`set_kernel_fusion`; `kernel_fusion` in the result).
"""
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from defrcn.errors import InputError
from defrcn.utils.rss import peak_rss_mib

__all__ = [
    "MODES",
    "benchmark_recipe",
    "benchmark_data",
    "calibrate_norm_statistics",
    "count_proposals",
    "synthetic_batch",
    "write_synthetic_images",
    "peak_rss_mib",
    "time_calls",
]

MODES = ("train", "infer", "data")
BOXES_PER_IMAGE = 3  # the peer's --boxes default
TRAIN_LR = 1e-4  # the peer's --lr default: random weights must stay finite over a few steps
CALIBRATION_SHAPE = (2, 3, 256, 256)  # the peer's calibration batch
MSRA_MEAN_BGR = (103.53, 116.28, 123.675)  # input.format "msra": BGR 0-255 minus this
TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)  # input.format "torchvision": RGB 0-1, mean/std
TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
DATA_IMAGE_SIZE = (480, 640)  # synthetic JPEGs for --mode data (H, W): a typical COCO photo
DATA_NUM_IMAGES = 200


def _random_pixels(rng, shape, pixel_format):
    """Uniform random 8-bit images, normalised as the loader does for `pixel_format`."""
    raw = rng.uniform(0.0, 255.0, size=shape).astype(np.float32)
    if pixel_format == "msra":
        mean = np.array(MSRA_MEAN_BGR, np.float32).reshape(1, 3, 1, 1)
        return raw - mean
    mean = np.array(TORCHVISION_MEAN_RGB, np.float32).reshape(1, 3, 1, 1)
    std = np.array(TORCHVISION_STD_RGB, np.float32).reshape(1, 3, 1, 1)
    return (raw / 255.0 - mean) / std


def synthetic_batch(batch, height, width, *, num_classes, max_gt, pixel_format="msra",
                    boxes_per_image=BOXES_PER_IMAGE, seed=0):
    """A random batch in the loader's train columns (numpy).

    Returns dict: images float32 (B, 3, H, W) normalised for `pixel_format`; image_sizes
    float32 (B, 2) = (H, W); gt_boxes float32 (B, max_gt, 4) XYXY with `boxes_per_image`
    valid boxes (16 px to half the image plus 16 px per side, as the peer draws them);
    gt_classes int32 (B, max_gt) in [0, num_classes); gt_valid float32 (B, max_gt).
    """
    rng = np.random.default_rng(seed)
    count = min(boxes_per_image, max_gt)
    images = _random_pixels(rng, (batch, 3, height, width), pixel_format)
    sizes = np.tile(np.array([[height, width]], np.float32), (batch, 1))
    boxes = np.zeros((batch, max_gt, 4), np.float32)
    classes = np.zeros((batch, max_gt), np.int32)
    valid = np.zeros((batch, max_gt), np.float32)
    for b in range(batch):
        wh = rng.uniform(0, 1, (count, 2)) * np.array([width * 0.5, height * 0.5]) + 16
        x0 = rng.uniform(0, 1, count) * (width - wh[:, 0])
        y0 = rng.uniform(0, 1, count) * (height - wh[:, 1])
        boxes[b, :count] = np.stack([x0, y0, x0 + wh[:, 0], y0 + wh[:, 1]], axis=1)
        classes[b, :count] = rng.integers(0, num_classes, count)
        valid[b, :count] = 1.0
    return dict(images=images, image_sizes=sizes, gt_boxes=boxes, gt_classes=classes, gt_valid=valid)


def _norm_layers(cell):
    """Every BN-like layer under `cell` (anything with moving_mean and moving_variance)."""
    return [sub for _, sub in cell.cells_and_names()
            if hasattr(sub, "moving_mean") and hasattr(sub, "moving_variance")]


def calibrate_norm_statistics(trunk, res5, images):
    """Set every BN layer's statistics so its output is normalised (see the module docstring).

    Runs in PyNative mode (the context mode is restored afterwards). trunk: (B, 3, H, W)
    -> (B, C4, h, w); res5 is run on that output. images: float32 numpy (B, 3, H, W).
    Returns the number of layers calibrated.
    """
    import mindspore as ms

    def set_statistics(cell, args):
        # on the host: MindSpore's broadcast Sub would keep its cached kernel's offsets (16 bytes
        # per element of the largest map) in the process the benchmark then measures
        x = args[0].asnumpy()
        mean = x.mean(axis=(0, 2, 3))
        var = np.square(x - mean.reshape(1, -1, 1, 1)).mean(axis=(0, 2, 3))
        cell.moving_mean.set_data(ms.Tensor(mean, cell.moving_mean.dtype))
        cell.moving_variance.set_data(ms.Tensor(var, cell.moving_variance.dtype))

    layers = _norm_layers(trunk) + _norm_layers(res5)
    previous_mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    states = [(cell, cell.training) for cell in (trunk, res5)]
    # the hooks see a norm's input only where the norm runs as its own Cell
    in_conv = [layer for layer in layers if getattr(layer, "in_conv", False)]
    for layer in in_conv:
        layer.in_conv = False
    handles = [layer.register_forward_pre_hook(set_statistics) for layer in layers]
    try:
        for cell in (trunk, res5):
            cell.set_train(False)  # a trainable BN then normalises with the statistics just set
        features = trunk(ms.Tensor(images))
        stride = res5.input_stride  # the cells the pooler would give it
        res5(features[:, :, ::stride, ::stride])
    finally:
        for handle in handles:
            handle.remove()
        for layer in in_conv:
            layer.in_conv = True
        for cell, training in states:
            cell.set_train(training)
        ms.set_context(mode=previous_mode)
    return len(layers)


def count_proposals(model, batch, *, training):
    """Mean number of valid RPN proposals per image for `batch` (PyNative, no gradient).

    training=True uses the RPN's training settings (post-NMS top-k for training)."""
    import mindspore as ms

    from defrcn.modeling.padding import padded_extent

    rpn = model.proposal_generator
    previous_mode, was_training = ms.get_context("mode"), rpn.training
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        rpn.set_train(training)
        sizes = ms.Tensor(batch["image_sizes"])
        extent = padded_extent(sizes, model.size_divisibility, batch_max=training)
        features = model.rpn_branch(model.backbone(ms.Tensor(batch["images"]), extent))
        out = rpn(features, sizes, ms.Tensor(batch["gt_boxes"]), ms.Tensor(batch["gt_valid"]), None, extent)
        valid = out[1].asnumpy()
    finally:
        rpn.set_train(was_training)
        ms.set_context(mode=previous_mode)
    return float(valid.sum(axis=1).mean())


def time_calls(fn, iters, warmup):
    """Call fn() warmup + iters times; return the last `iters` durations in ms."""
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def _first_to_numpy(outputs):
    first = outputs
    while isinstance(first, (tuple, list)):
        first = first[0]
    return first.asnumpy()


def _compiled_runner(cell, args):
    """Compile `cell` for args; return (seconds spent compiling, a call that waits for the result)."""
    start = time.perf_counter()
    cell.compile(*args)
    compile_s = time.perf_counter() - start

    def call():
        return _first_to_numpy(cell(*args))

    return compile_s, call


def _check_args(mode, batch, size, iters, warmup):
    if mode not in MODES:
        raise InputError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if batch < 1:
        raise InputError(f"--batch: must be >= 1, got {batch}")
    if len(size) != 2 or min(size) < 32:
        raise InputError(f"--size: H and W must be >= 32, got {tuple(size)}")
    if iters < 1 or warmup < 0:
        raise InputError(f"--iters must be >= 1 and --warmup >= 0, got {iters} and {warmup}")


def _build_model(recipe):
    """The recipe's detector; its build summary goes to stderr (stdout carries the JSON)."""
    with contextlib.redirect_stdout(sys.stderr):
        return recipe.model(recipe.cfg)


def _stage_cells(model):
    """Three graph cells that together do what `model` does in inference."""
    from mindspore import nn

    from defrcn.modeling.padding import padded_extent

    def extent_of(image_sizes):
        return padded_extent(image_sizes, model.size_divisibility, batch_max=False)

    class BackboneStage(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.backbone = model.backbone
            self.rpn_branch, self.roi_branch = model.rpn_branch, model.roi_branch

        def construct(self, images, image_sizes):
            features = self.backbone(images, extent_of(image_sizes))
            return self.rpn_branch(features), self.roi_branch(features)

    class RPNStage(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.proposal_generator = model.proposal_generator

        def construct(self, features, image_sizes):
            return self.proposal_generator(features, image_sizes, None, None, None, extent_of(image_sizes))

    class ROIStage(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.roi_heads = model.roi_heads

        def construct(self, features, proposals, proposal_valid, image_sizes):
            return self.roi_heads(features, proposals, proposal_valid, image_sizes, None, None, None, None,
                                  extent_of(image_sizes))

    cells = BackboneStage(), RPNStage(), ROIStage()
    for cell in cells:
        cell.set_train(False)
    return cells


def _breakdown(model, images, image_sizes, iters, warmup):
    """Median ms of backbone (trunk + branches), RPN and ROI heads, each its own graph."""
    backbone, rpn, roi = _stage_cells(model)
    result = {}
    _, call = _compiled_runner(backbone, (images, image_sizes))
    result["backbone_ms"] = statistics.median(time_calls(call, iters, warmup))
    rpn_features, roi_features = backbone(images, image_sizes)
    _, call = _compiled_runner(rpn, (rpn_features, image_sizes))
    result["rpn_ms"] = statistics.median(time_calls(call, iters, warmup))
    proposals, valid = rpn(rpn_features, image_sizes)
    _, call = _compiled_runner(roi, (roi_features, proposals, valid, image_sizes))
    result["roi_heads_ms"] = statistics.median(time_calls(call, iters, warmup))
    return {key: round(value, 1) for key, value in result.items()}


def _train_step(recipe, model, steps):
    from defrcn.engine.train_step import TrainStep

    plan = dict(base_lr=TRAIN_LR, max_iter=steps + 1, steps=[], warmup_iters=0)
    optimizer = recipe.optimizer(recipe.cfg, model, plan)
    step = TrainStep(model, optimizer)
    step.set_train(True)
    return step


def _environment(device):
    import mindspore as ms

    return dict(device=device, mindspore=ms.__version__, python=platform.python_version(),
                machine=platform.machine(), cpus=os.cpu_count(),
                memory_optimize_level=f"O{int(ms.get_context('memory_optimize_level'))}",
                load_avg=[round(v, 2) for v in os.getloadavg()])


def benchmark_recipe(recipe_path, *, mode="infer", batch=None, size=None, iters=3, warmup=1,
                     overrides=(), device="CPU", breakdown=False, seed=0,
                     num_images=DATA_NUM_IMAGES, fold_bn=None, fuse_kernels=None, threads=None):
    """Measure one recipe; return a dict of plain values (see the module docstring).

    Args:
        recipe_path: a recipe .py (or a run's config.json).
        mode: "train", "infer" or "data".
        batch: images per step (default: solver.ims_per_device / test.ims_per_device).
        size: (H, W) of the random canvas; in "data" mode the size of the synthetic JPEGs
            (default: the recipe's first canvas; data: 480 x 640).
        breakdown: infer only; also time backbone / RPN / ROI heads as separate graphs.
        fold_bn: fold frozen BN into the convolutions (`defrcn.modeling.fold_bn`) after
            calibration: all of them in inference, those of frozen convolutions in training.
            None = on in inference (what tools/eval.py and tools/infer.py run), off in training.
        fuse_kernels: `set_kernel_fusion` (CPU); None = in inference as the recipe's
            `test.kernel_fusion` decides for this canvas (`fusion_pays`), never in training, as
            eval, infer and training run.
        threads: MindSpore's `runtime_num_threads` (None: MindSpore's default).
    Keys: mode, recipe, batch, size, iters, warmup, median_ms, min_ms, peak_rss_mib, params,
    compile_s, proposals_per_image, device, mindspore, memory_optimize_level, kernel_fusion (+ images_per_s in
    data mode, + stage times with breakdown).
    """
    import mindspore as ms

    from defrcn.config.recipe import load_recipe
    from defrcn.utils.device import keep_graph_precision, plan_graph_memory

    recipe = load_recipe(recipe_path, overrides)
    cfg = recipe.cfg
    if batch is None:
        batch = cfg.solver.ims_per_device if mode == "train" else cfg.test.ims_per_device
    if mode == "data":
        size = tuple(size) if size else DATA_IMAGE_SIZE
    else:
        size = tuple(size) if size else tuple(cfg.input.canvases[0])
    _check_args(mode, int(batch), size, int(iters), int(warmup))
    if breakdown and mode != "infer":
        raise InputError("--breakdown: only with --mode infer")
    ms.set_context(device_target=device)
    keep_graph_precision(device)
    plan_graph_memory()  # as training, eval and infer run
    if threads:
        ms.set_context(runtime_num_threads=int(threads))
    ms.set_seed(seed)
    if mode == "data":
        result = benchmark_data(recipe, batch=batch, image_size=size, iters=iters, warmup=warmup,
                                num_images=num_images, seed=seed)
    else:
        result = _benchmark_model(recipe, mode, batch, size, iters, warmup, breakdown, seed,
                                  fold_bn, fuse_kernels, device)
    result.update(dict(mode=mode, recipe=recipe.name, batch=int(batch), size=list(size), iters=int(iters),
                       warmup=int(warmup)))
    result.setdefault("peak_rss_mib", round(peak_rss_mib(), 1))
    result.update(_environment(device))
    return result


def _benchmark_model(recipe, mode, batch, size, iters, warmup, breakdown, seed, fold_bn, fuse_kernels,
                     device):
    import mindspore as ms

    from defrcn.modeling.param_count import count_parameters
    from defrcn.modeling.winograd import resolve_res5_conv
    from defrcn.utils.device import fusion_pays, kernel_fusion_setting, set_kernel_fusion

    cfg = recipe.cfg
    model = _build_model(recipe)
    counts = count_parameters(model)
    calib = _random_pixels(np.random.default_rng(seed + 1), CALIBRATION_SHAPE, cfg.input.format)
    calibrated = calibrate_norm_statistics(model.backbone, model.roi_heads.res5, calib)
    data = synthetic_batch(batch, size[0], size[1], num_classes=cfg.model.num_classes,
                           max_gt=cfg.data.max_gt, pixel_format=cfg.input.format, seed=seed)
    folded = 0
    from defrcn.modeling.fold_bn import fold_frozen_bn

    if fold_bn is None:
        fold_bn = mode == "infer"
    for part in (model.backbone, model.roi_heads.res5):
        if fold_bn:
            folded += fold_frozen_bn(part, only_frozen_convs=(mode == "train"))
    if fuse_kernels is None:  # as the inference loaders decide, for this canvas
        fuse_kernels = mode == "infer" and fusion_pays(kernel_fusion_setting(cfg), folded, size[0] * size[1])
    fused = set_kernel_fusion(device, inference=bool(fuse_kernels))

    ms.set_context(mode=ms.GRAPH_MODE)
    tensors = {key: ms.Tensor(value) for key, value in data.items()}
    if mode == "train":
        cell = _train_step(recipe, model, warmup + iters)
        args = (tensors["images"], tensors["image_sizes"], tensors["gt_boxes"], tensors["gt_classes"],
                tensors["gt_valid"])
    else:
        model.set_train(False)
        cell = model
        args = (tensors["images"], tensors["image_sizes"])
    compile_s, call = _compiled_runner(cell, args)
    times = time_calls(call, iters, warmup)
    # the peak of what eval / training run; the checks below are the benchmark's own
    peak_mib = round(peak_rss_mib(), 1)
    proposals = count_proposals(model, data, training=(mode == "train"))
    result = dict(median_ms=round(statistics.median(times), 1), min_ms=round(min(times), 1),
                  times_ms=[round(t, 1) for t in times], compile_s=round(compile_s, 2),
                  params=counts["total"], trainable_params=counts["trainable"],
                  proposals_per_image=proposals, calibrated_norm_layers=calibrated,
                  folded_bn=folded, kernel_fusion=fused,
                  runtime_num_threads=ms.get_context("runtime_num_threads"),
                  depth=cfg.model.depth, pooler=cfg.model.pooler_resolution,
                  res5_input_stride=model.roi_heads.res5.input_stride,
                  rois_per_image=cfg.model.roi.batch_size_per_image,
                  res5_conv=resolve_res5_conv(cfg.model.res5_conv),
                  conv_backward=cfg.model.get("conv_backward", "stock"),
                  # frozen BNs that ran inside their convolutions (model.frozen_bn_impl; folded ones are gone)
                  frozen_bn_in_conv=sum(1 for _, cell in model.cells_and_names() if getattr(cell, "in_conv", False)),
                  peak_rss_mib=peak_mib)
    if breakdown:
        result.update(_breakdown(model, tensors["images"], tensors["image_sizes"], iters, warmup))
    return result


def write_synthetic_images(folder, count, height, width, *, seed=0, boxes_per_image=BOXES_PER_IMAGE):
    """Write `count` JPEGs (smooth shapes on a gradient, quality 90) -> records for the loader.

    Records: file_name, height, width, annotations [{bbox XYXY, category_id 0}].
    """
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    ramp_y = np.linspace(0, 1, height, dtype=np.float32).reshape(-1, 1, 1)
    ramp_x = np.linspace(0, 1, width, dtype=np.float32).reshape(1, -1, 1)
    records = []
    for index in range(count):
        colours = rng.uniform(0, 255, (2, 3)).astype(np.float32)
        pixels = colours[0] * ramp_y + colours[1] * ramp_x * (1 - ramp_y)
        pixels += rng.normal(0, 8, (height, width, 3)).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        annotations = []
        for _ in range(boxes_per_image):
            w, h = rng.uniform(24, width / 2), rng.uniform(24, height / 2)
            x0, y0 = rng.uniform(0, width - w), rng.uniform(0, height - h)
            box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
            draw.rectangle(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            annotations.append(dict(bbox=box, category_id=0))
        path = os.path.join(folder, f"{index:05d}.jpg")
        image.save(path, quality=90)
        records.append(dict(file_name=path, image_id=index, height=height, width=width,
                            annotations=annotations))
    return records


def benchmark_data(recipe, *, batch, image_size, iters, warmup, num_images=DATA_NUM_IMAGES, seed=0):
    """Training-loader throughput for the recipe's input settings on synthetic JPEGs.

    `iters` batches are timed after `warmup` (defrcn.data.pipeline.measure_throughput).
    Returns dict: images_per_s, median_ms (ms per batch at that rate), min_ms (the same),
    num_images, image_size, workers, canvases, compile_s 0.0, params 0, proposals_per_image 0.
    """
    from defrcn.data.pipeline import build_train_loader, measure_throughput

    cfg = recipe.cfg
    with tempfile.TemporaryDirectory(prefix="defrcn_bench_") as folder:
        records = write_synthetic_images(folder, int(num_images), image_size[0], image_size[1], seed=seed)
        loader = build_train_loader(
            records, canvases=cfg.input.canvases, min_sizes=cfg.input.min_size_train,
            max_size=cfg.input.max_size_train, flip_prob=cfg.input.flip_prob,
            pixel_format=cfg.input.format, batch_size=int(batch), max_gt=cfg.data.max_gt, seed=seed,
            num_workers=cfg.data.num_workers)
        rate = measure_throughput(loader, int(iters), warmup=int(warmup))
    per_batch = int(batch) * 1000.0 / rate
    return dict(images_per_s=round(rate, 2), median_ms=round(per_batch, 1), min_ms=round(per_batch, 1),
                num_images=int(num_images), workers=cfg.data.num_workers,
                canvases=[list(c) for c in cfg.input.canvases], compile_s=0.0, params=0,
                proposals_per_image=0.0)
