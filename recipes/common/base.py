"""Base-training settings per benchmark: `base_cfg(benchmark, voc_split=0)` -> a new Config.

Every number is DeFRCN's (`configs/Base-RCNN.yaml`,
`defrcn/config/defaults.py`, detectron2 v0.3 defaults) unless its comment says otherwise.
The schedule (`solver.max_iter`, `solver.steps`) is left at 0 / []: each leaf recipe
states its own, with the source yaml named.

Class lists: COCO and VOC carry their split's names (`defrcn/data/classes.py`); the toy
set its generator's (`defrcn/data/synthetic.py`). Custom recipes leave
`data.base_classes`, `data.novel_classes` empty and `model.num_classes` 0, meaning "from
the data set": novel names from `--set data.novel_classes=a,b` or the train json's
`info.novel_classes`, base = every other category; `data_spec` in
`builders.py` fills them in before anything is built.

Input canvases (static shapes for graph mode): an image resized to shortest edge <= 800
and longest <= 1333 fits 800 x 1344 (landscape) or 1344 x 800 (portrait), 1344 being the
next multiple of 32 above 1333; the same two canvases serve training (640-800 / 480-800)
and test (800).
"""
from defrcn.config.config import Config
from defrcn.recipes.common.builders import callbacks, data_spec, dataset, model, optimizer
from defrcn.recipes.common.derive import rederive

__all__ = ["base_cfg", "model", "dataset", "optimizer", "callbacks", "data_spec", "rederive"]

BENCHMARKS = ("coco", "voc", "custom", "toy")
COCO_MIN_SIZES = list(range(640, 801, 32))  # Base-RCNN.yaml INPUT.MIN_SIZE_TRAIN (640..800 step 32)
VOC_MIN_SIZES = list(range(480, 801, 32))  # configs/voc/*.yaml INPUT.MIN_SIZE_TRAIN (480..800 step 32)
LARGE_CANVASES = [[800, 1344], [1344, 800]]  # landscape / portrait, see the module docstring
MSRA_R101 = "weights/R-101-msra.ckpt"  # tools/convert.py detectron2 ImageNetPretrained/MSRA/R-101.pkl
TORCHVISION_R101 = "weights/resnet101-torchvision.ckpt"  # tools/convert.py torchvision resnet101-5d3b4d8f.pth


def _defrcn_defaults():
    """Settings shared by every DeFRCN recipe (COCO values; benchmarks adjust below)."""
    return Config(
        seed=0,  # DeFRCN: SEED -1 (random per run); fixed here, vary it for repeated runs
        output_dir="",  # "" = output/<recipe name> (filled by the loader)
        recipe="",  # the recipe file, filled by the loader
        data=dict(
            benchmark="coco",
            root="datasets",
            setting="base",
            base_classes=[],
            novel_classes=[],
            shots=0,
            split_seed=0,
            voc_split=0,
            fewshot_dir="",  # "" = the benchmark's default (cocosplit / vocsplit / ROOT/fewshot)
            max_gt=100,  # ground-truth boxes kept per image (static shape)
            num_workers=4,  # detectron2 DATALOADER.NUM_WORKERS
        ),
        input=dict(
            format="msra",  # BGR 0-255, mean (103.53, 116.28, 123.675), std 1 (the MSRA R-101)
            min_size_train=COCO_MIN_SIZES,
            max_size_train=1333,
            min_size_test=800,
            max_size_test=1333,
            flip_prob=0.5,
            canvases=LARGE_CANVASES,
        ),
        model=dict(
            depth=101,
            num_classes=0,
            norm="frozen_bn",
            freeze_at=3,  # defaults.py BACKBONE.FREEZE_AT: stem, res2, res3 frozen
            stride_in_1x1=True,  # MSRA weights
            weights=MSRA_R101,  # ImageNet init of the backbone ("" = random)
            base_weights="",  # fine-tune: the surgery output of the base run
            surgery="none",
            gdl_scale_rpn=0.0,  # RPN.BACKWARD_SCALE in every config
            gdl_scale_roi=0.75,  # ROI_HEADS.BACKWARD_SCALE, base training
            freeze_res5=False,  # ROI_HEADS.FREEZE_FEAT
            cls_dropout=0.0,  # ROI_HEADS.CLS_DROPOUT off (0.8 when on)
            pooler_resolution=7,  # defaults.py POOLER_RESOLUTION
            pooler_impl="matmul",  # ROIAlign as two matmuls (exact, fast); "kernel" = ops.ROIAlign
            # res5's 3x3 convolutions on the 4x4 RoI maps: "direct" (stock Conv2D), "winograd"
            # (F(4x4, 3x3) as matmuls, defrcn/modeling/winograd.py; same weights) or "auto"
            # (Winograd on CPU: an R-101 training step in 0.69-0.85 x the direct form's time)
            res5_conv="auto",
            # backward of the trunk's and RPN head's trainable 3x3 convolutions: "stock", "lean" (keeps
            # only their inputs; MindSpore's CPU kernels keep 18 maps each, defrcn/modeling/lean_backward.py)
            # or "auto" (lean on CPU only)
            conv_backward="auto",
            # frozen BatchNorm after a convolution: "kernel" (MindSpore's batch-norm kernel on the
            # output), "in_conv" (inside the convolution: weight W * scale, then + shift; same
            # parameters and checkpoints, results equal to rounding, defrcn/modeling/backbone.py)
            # or "auto" (in_conv in res5, whose 4x4 RoI maps make the CPU kernel slow: a training
            # step 1-8 % faster; the kernel in the trunk, where in_conv costs memory)
            frozen_bn_impl="auto",
            # detectron2 Backbone.size_divisibility (0 for the C4 ResNet): whatever the canvas, results
            # are those of the image padded only to the batch's largest (one image at test time)
            size_divisibility=0,
            rpn=dict(  # keyword arguments of defrcn.modeling.rpn.RPN (detectron2 v0.3 values)
                anchor_sizes=[32, 64, 128, 256, 512],
                anchor_aspect_ratios=[0.5, 1.0, 2.0],
                pre_nms_topk_train=12000,
                post_nms_topk_train=2000,
                pre_nms_topk_test=6000,
                post_nms_topk_test=1000,
                nms_thresh=0.7,
                batch_size_per_image=256,
                positive_fraction=0.5,
                iou_thresholds=[0.3, 0.7],
            ),
            roi=dict(  # Res5ROIHeads (detectron2 v0.3 values)
                batch_size_per_image=512,
                positive_fraction=0.25,
                iou_threshold=0.5,
                score_thresh_test=0.05,
                nms_thresh_test=0.5,
                detections_per_image=100,
            ),
        ),
        solver=dict(
            optimizer="sgd",
            reference_batch=16,  # the batch the numbers below are written for (8 GPUs x 2)
            ims_per_batch=16,  # total images per optimizer step wanted (accumulate mode)
            ims_per_device=2,
            accumulate=False,  # true: accumulate micro-batches up to ims_per_batch (solver/schedule.py)
            base_lr=0.02,
            max_iter=0,  # stated by each leaf
            steps=[],  # stated by each leaf
            gamma=0.1,
            warmup_iters=1000,  # d2 default; COCO base does not set it
            warmup_factor=0.001,
            momentum=0.9,
            weight_decay=5e-5,  # defaults.py
            weight_decay_bias=1e-4,  # d2 default; DeFRCN's defaults.py sets WEIGHT_DECAY only
            weight_decay_norm=0.0,
            # The original saves only the final model (CHECKPOINT_PERIOD 200000 / 100000); periodic
            # checkpoints here make long runs resumable.
            checkpoint_period=5000,
            keep_checkpoints=3,
            # Mixed precision (defrcn/engine/precision.py): "O0" float32, or mindspore.amp's
            # "O1"/"O2"/"O3" on the backbone and heads, for GPU/Ascend (slower on CPU).
            amp_level="O0",
            loss_scale="dynamic",  # with amp: "dynamic" or a fixed number such as "1024"
            # Data sink mode (defrcn/engine/loop.py): GPU/Ascend in graph mode, one input canvas;
            # sinks of log.period iterations. Off by default: the COCO/VOC recipes have two canvases.
            dataset_sink=False,
        ),
        test=dict(
            eval_period=0,  # 0 = evaluate once, after training (d2 TEST.EVAL_PERIOD)
            ims_per_device=2,
            # CPU inference: fuse each folded convolution's BiasAdd / Add / ReLU tail into one
            # kernel (MindSpore's graph-kernel fusion, defrcn/utils/device.py). "auto": when BN was
            # folded and the test canvas is large (R-101 at 800 x 1333: 6-9 % less time for ~50 MiB;
            # at 512 x 512 no gain), "on" or "off"
            kernel_fusion="auto",
            pcb=dict(
                enable=False,
                alpha=0.5,  # defaults.py PCB_ALPHA
                upper=1.0,
                lower=0.05,
                model="resnet101",  # torchvision ImageNet R-101, or "self" (the detector's backbone)
                weights=TORCHVISION_R101,
            ),
        ),
        log=dict(period=20, tensorboard=True),
    )


def base_cfg(benchmark, voc_split=0):
    """A new base-training Config for benchmark "coco", "voc" (voc_split 1-3), "custom" or "toy"."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    cfg = _defrcn_defaults()
    cfg.data.benchmark = benchmark
    if benchmark == "coco":
        _coco(cfg)
    elif benchmark == "voc":
        _voc(cfg, voc_split)
    elif benchmark == "custom":
        _custom(cfg)
    else:
        _toy(cfg)
    return cfg


def _coco(cfg):
    from defrcn.data.classes import coco_split_classes

    base, novel, _ = coco_split_classes()
    cfg.data.base_classes, cfg.data.novel_classes = base, novel
    cfg.model.num_classes = len(base)  # 60


def _voc(cfg, voc_split):
    from defrcn.data.classes import voc_split_classes

    if voc_split not in (1, 2, 3):
        raise ValueError(f"VOC recipes need voc_split 1, 2 or 3, got {voc_split!r}")
    base, novel, _ = voc_split_classes(voc_split)
    cfg.data.voc_split = voc_split
    cfg.data.base_classes, cfg.data.novel_classes = base, novel
    cfg.model.num_classes = len(base)  # 15
    cfg.input.min_size_train = VOC_MIN_SIZES
    cfg.solver.warmup_iters = 100  # configs/voc/defrcn_det_r101_base*.yaml WARMUP_ITERS
    cfg.solver.checkpoint_period = 2500


def _custom(cfg):
    # Any COCO-json data set (the README's "Data"); set data.root and data.novel_classes with --set.
    cfg.data.root = "datasets/custom"
    cfg.solver.warmup_iters = 100
    cfg.solver.checkpoint_period = 2500


# The toy recipes: the shipped synthetic data on a CPU in minutes (few
# RoIs, small images, a warmed-up AdamW; random init with trainable BN).
def _toy(cfg):
    from defrcn.data.synthetic import BASE_CLASS_NAMES, NOVEL_CLASS_NAMES

    cfg.data.root = "datasets/toy"  # written by `python tools/synthetic.py datasets/toy`
    cfg.data.base_classes, cfg.data.novel_classes = list(BASE_CLASS_NAMES), list(NOVEL_CLASS_NAMES)
    cfg.data.num_workers = 2
    cfg.input.format = "torchvision"
    cfg.input.min_size_train = [224, 256]
    cfg.input.max_size_train = 256
    cfg.input.min_size_test = 256
    cfg.input.max_size_test = 256
    cfg.input.canvases = [[256, 256]]
    cfg.model.num_classes = len(BASE_CLASS_NAMES)
    cfg.model.depth = 18
    cfg.model.norm = "bn"  # frozen BN at a random init never learns its statistics and diverges
    cfg.model.freeze_at = 0
    cfg.model.stride_in_1x1 = False
    cfg.model.weights = ""
    cfg.model.rpn.anchor_sizes = [32, 64, 128, 256]  # objects are 24-72 px on 256 px images
    cfg.model.rpn.pre_nms_topk_train = 1000
    cfg.model.rpn.post_nms_topk_train = 256
    # Test: at most 4 objects per image, so 100 proposals and 30 detections per image are
    # plenty; res5 on the proposals is what an evaluation costs (and PCB embeds every
    # detection above 0.05: 30 fit one of its 32-box buckets).
    cfg.model.rpn.pre_nms_topk_test = 300
    cfg.model.rpn.post_nms_topk_test = 100
    cfg.model.roi.detections_per_image = 30
    cfg.model.roi.batch_size_per_image = 32
    # res5's 3x3 convolutions on the RoIs' 4x4 maps are most of a toy step; as Winograd matmuls
    # a step takes 0.54-0.73 x the stock convolution's time on a CPU (docs/benchmark.md, "The
    # demo's model"). Set on every device, so the demo trains the same model everywhere.
    cfg.model.res5_conv = "winograd"
    # The lean 3x3 backward saves memory on large maps; on the toy's small ones it cost time
    # (step 1.56-1.73 s against 1.44-1.52 s, -150 MiB) and this model needs no memory saved.
    cfg.model.conv_backward = "stock"
    cfg.solver.optimizer = "adamw"
    cfg.solver.reference_batch = 4
    cfg.solver.ims_per_batch = 4
    cfg.solver.ims_per_device = 4
    cfg.solver.base_lr = 1e-3
    cfg.solver.warmup_iters = 20
    cfg.solver.weight_decay = 1e-2  # AdamW's decoupled decay (PyTorch's default)
    cfg.solver.weight_decay_bias = 1e-2
    cfg.solver.checkpoint_period = 100
    cfg.test.ims_per_device = 4
    cfg.test.pcb.model = "self"
    cfg.test.pcb.weights = ""
    cfg.log.period = 10
