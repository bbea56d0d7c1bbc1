"""The device a process runs on: the names the tools accept and what each device needs set
before anything runs."""
import atexit
import importlib.util
import logging
import os
import shutil
import tempfile

from defrcn.errors import InputError

__all__ = ["DEVICES", "check_device", "keep_graph_precision", "ASCEND_PRECISION_MODE",
           "plan_graph_memory", "FUSED_INFERENCE_OPS", "KERNEL_FUSION_ENV", "set_kernel_fusion",
           "FUSION_SETTINGS", "FUSION_MIN_CANVAS_PIXELS", "fusion_pays", "kernel_fusion_setting",
           "fuse_inference_kernels", "remove_akg_files"]

DEVICES = ("CPU", "GPU", "Ascend")


def check_device(device):
    """InputError (one line) unless `device` is one of DEVICES."""
    if device not in DEVICES:
        raise InputError(f"--device: expected one of {', '.join(DEVICES)}, got {device!r}")


# Ascend operator precision (mindspore.device_context.ascend.op_precision.precision_mode):
# MindSpore 2.8 documents "force_fp16" as the default on Atlas training series products (every
# operator with a float16 kernel runs in float16, whatever the graph says) and
# "must_keep_origin_dtype" on Atlas A2 and later. The detector's box coordinates, IoU, sampling
# keys and losses are written for float32 (mixed precision, when a recipe asks for it, casts
# explicitly), so the graph's own dtypes are kept on every Ascend product.
ASCEND_PRECISION_MODE = "must_keep_origin_dtype"


def keep_graph_precision(device):
    """On Ascend, set the operator precision mode to ASCEND_PRECISION_MODE (call after the device
    target is set, before anything runs); a no-op on CPU and GPU. A different mode already set
    in this process (MindSpore allows one) is left as it is, with a warning."""
    if device != "Ascend":
        return
    import mindspore as ms

    try:
        ms.device_context.ascend.op_precision.precision_mode(ASCEND_PRECISION_MODE)
    except RuntimeError as e:  # "can not be set repeatedly": someone chose another mode first
        logging.getLogger(__name__).warning("Ascend precision_mode left as configured (%s)", e)


_GRAPH_MEMORY_PLANNED = False


def plan_graph_memory():
    """MindSpore's memory optimize level O1 for this process
    (`mindspore.runtime.set_memory(optimize_level="O1")`; O0 is the default on CPU and GPU).

    O1 would also let MindSpore place every tensor at compile time (SOMAS), but the detector's
    graphs do not qualify: each `ops.topk` receives its k through a cast, which SOMAS counts as
    a computed input, so MindSpore's run-time pool still places the tensors. On CPU that is the
    better of the two: SOMAS plans there without the execution order, and with k given as an
    int32 constant it took an R-101 training step at 512 x 512 from 4,041 to 6,080 MiB and
    inference at 800 x 1333 from 1,581 to 2,295 MiB (docs/benchmark.md).

    Call it before the first graph compiles; the training and evaluation set-up, inference
    loading and the benchmark do. It holds for the whole process, and MindSpore allows one
    memory setting per process: one made earlier is left as it is, with a warning.
    Measured on CPU, R-101, peak RSS, O1 against O0 (both without SOMAS): inference at
    800 x 1333 (batch 1, after three images) 1,815-1,825 -> 1,669 MiB; training at 800 x 1333
    (batch 2, four steps) peaked at 5,830-5,886 MiB in 7 of 7 runs, where O0 peaked at
    5,815-5,861 or, in 4 of 11 runs, took another ~530 MiB in its second or third step
    (6,357-6,448); at 512 x 512 training holds ~50 MiB more (4,122-4,126 -> 4,171-4,179 MiB).
    Detections and losses are the same as O0's; step times equal within noise.
    """
    global _GRAPH_MEMORY_PLANNED
    if _GRAPH_MEMORY_PLANNED:
        return
    import mindspore as ms

    try:
        ms.runtime.set_memory(optimize_level="O1")
    except RuntimeError as e:  # "can not be set repeatedly": the process chose its memory setting
        logging.getLogger(__name__).warning("MindSpore's memory setting left as configured (%s)", e)
    _GRAPH_MEMORY_PLANNED = True


# MindSpore's graph-kernel fusion (its AKG compiler) fuses the elementwise ops it is allowed
# into one generated kernel. On CPU it is limited here to the tail of each convolution with its
# batch norm folded in (BiasAdd, the residual Add, ReLU): one pass over the map instead of three,
# with the same float32 results (docs/benchmark.md, "Inference: fused convolution tails").
# Wider fusion is not safe in MindSpore 2.8: on CPU it miscompiles a Select whose (N, 1)
# condition broadcasts over (N, 4) boxes, zeroing some coordinates (RPN proposals, NMS).
FUSED_INFERENCE_OPS = ("BiasAdd", "ReLU", "Add")
KERNEL_FUSION_ENV = "DEFRCN_KERNEL_FUSION"  # "0": never fuse
FUSION_SETTINGS = ("auto", "on", "off")  # a recipe's test.kernel_fusion
# "auto" fuses from this canvas size on. The tails' cost grows with the maps: R-101 inference at
# 800 x 1344 (1.08 M pixels) took 6-9 % less time fused, at 512 x 512 (0.26 M) the same, and the
# toy R-18 at 256 x 256 lost the kernels' build time; fusing costs ~50 MiB (AKG in the process).
FUSION_MIN_CANVAS_PIXELS = 600 * 800
# AKG's CPU code generator writes this debugging log into the working directory.
_AKG_WORKDIR_LOG = "dsa_transfrom.log"
_akg_scratch = None  # the temporary kernel folder ("" when the user named one)
_akg_stray_log = None  # AKG's log in the working directory, to remove at exit


def set_kernel_fusion(device, inference):
    """Fuse each convolution's elementwise tail (FUSED_INFERENCE_OPS) in the graphs compiled
    from now on when `inference` is true and the device is CPU; turn it off otherwise
    (training: the fused graph held ~1 GiB more at R-101 512 x 512, batch 2). Returns whether
    fusion is on.

    Fusion stays off, with an info log, when DEFRCN_KERNEL_FUSION=0 or when what AKG's CPU
    build needs is missing (the `decorator` package, a `g++` to link the kernels). AKG's kernel
    files go to a temporary folder removed at exit unless MS_COMPILER_CACHE_PATH names one;
    GPU and Ascend are left as MindSpore sets them (not measured there).
    """
    if device != "CPU":
        return False
    import mindspore as ms

    reason = _fusion_unavailable() if inference else None
    if reason:
        logging.getLogger(__name__).info("kernel fusion off: %s", reason)
    if not inference or reason:
        if ms.get_context("enable_graph_kernel"):
            ms.set_context(enable_graph_kernel=False)
        return False
    _keep_akg_files_out_of_cwd()
    ms.set_context(enable_graph_kernel=True,
                   graph_kernel_flags="--enable_cluster_ops_only=" + ",".join(FUSED_INFERENCE_OPS))
    return True


def fusion_pays(setting, folded, canvas_pixels):
    """Whether inference should fuse the convolutions' tails: `setting` is a recipe's
    `test.kernel_fusion` ("on", "off" or "auto"); "auto" fuses when BN was folded into
    convolutions (`fold_for_inference`'s count: their bias then needs its own pass) and the
    canvas (H * W) has at least FUSION_MIN_CANVAS_PIXELS."""
    if setting not in FUSION_SETTINGS:
        raise ValueError(f"kernel fusion must be one of {', '.join(FUSION_SETTINGS)}, got {setting!r}")
    if setting != "auto":
        return setting == "on"
    return folded > 0 and canvas_pixels >= FUSION_MIN_CANVAS_PIXELS


def kernel_fusion_setting(cfg):
    """A recipe cfg's `test.kernel_fusion` ("auto" in a run's config.json written before the key)."""
    return cfg.test.get("kernel_fusion", "auto")


def fuse_inference_kernels(device, cfg, *, folded):
    """What the inference loaders call after folding BN (`folded`: `fold_for_inference`'s count):
    `set_kernel_fusion` as `fusion_pays` decides for the recipe's setting and its largest test
    canvas (what a test image is padded to). Returns whether fusion is on."""
    canvas_pixels = max(int(height) * int(width) for height, width in cfg.input.canvases)
    return set_kernel_fusion(device, inference=fusion_pays(kernel_fusion_setting(cfg), folded, canvas_pixels))


def _fusion_unavailable():
    if os.environ.get(KERNEL_FUSION_ENV, "1") == "0":
        return f"{KERNEL_FUSION_ENV}=0"
    if importlib.util.find_spec("decorator") is None:
        return "the decorator package is not installed (MindSpore's AKG imports it)"
    if shutil.which("g++") is None:
        return "no g++ on PATH (MindSpore's AKG links its CPU kernels with it)"
    return None


def _keep_akg_files_out_of_cwd():
    global _akg_scratch, _akg_stray_log
    if _akg_scratch is not None:
        return
    _akg_scratch = ""
    # AKG puts its kernels under MindSpore's compile-cache folder (the working directory
    # unless MS_COMPILER_CACHE_PATH says otherwise); a cache the user asked for is left alone.
    if not os.environ.get("MS_COMPILER_CACHE_PATH") and os.environ.get("MS_COMPILER_CACHE_ENABLE") != "1":
        _akg_scratch = tempfile.mkdtemp(prefix="defrcn-akg-")
        os.environ["MS_COMPILER_CACHE_PATH"] = _akg_scratch
    # AKG reads its own (empty) CPU tiling table only from under AKG_WHITE_LIST_PATH (else the
    # working directory) and prints a line on stdout per kernel when it is elsewhere.
    import mindspore as ms

    os.environ.setdefault("AKG_WHITE_LIST_PATH", os.path.join(os.path.dirname(ms.__file__), "_akg"))
    stray_log = os.path.abspath(_AKG_WORKDIR_LOG)
    _akg_stray_log = None if os.path.exists(stray_log) else stray_log
    atexit.register(remove_akg_files)


def remove_akg_files():
    """Remove what kernel fusion's compiler wrote in this process: its temporary kernel folder
    and the log it leaves in the working directory (when it was not there before). The tools
    call it on their way out (they leave through os._exit); other processes at exit."""
    global _akg_stray_log
    if _akg_scratch:
        shutil.rmtree(_akg_scratch, ignore_errors=True)
    if _akg_stray_log and os.path.isfile(_akg_stray_log):
        os.remove(_akg_stray_log)
    _akg_stray_log = None
