"""The device a process runs on: the names the tools accept and what each device needs set
before anything runs."""
import logging

from defrcn.errors import InputError

__all__ = ["DEVICES", "check_device", "keep_graph_precision", "ASCEND_PRECISION_MODE",
           "plan_graph_memory"]

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
    """MindSpore's memory optimize level O1 for this process: the compiler plans every tensor's
    place in the graph's memory ahead of the run (`mindspore.runtime.set_memory(
    optimize_level="O1")`) instead of the dynamic pool choosing at run time (O0, the default on
    CPU and GPU).

    Call it before the first graph compiles; the training and evaluation set-up, inference
    loading and the benchmark do. It holds for the whole process, and MindSpore allows one
    memory setting per process: one made earlier is left as it is, with a warning.
    Measured on CPU, R-101, peak RSS: inference at 800 x 1333 (batch 1, after three images)
    1,815-1,825 -> 1,669 MiB; training at 800 x 1333 (batch 2, four steps) peaked at 5,830-5,886
    MiB in 7 of 7 runs, where O0 peaked at 5,815-5,861 or, in 4 of 11 runs, took another
    ~530 MiB in its second or third step (6,357-6,448); at 512 x 512
    training holds ~50 MiB more (4,122-4,126 -> 4,171-4,179 MiB). Detections and losses are
    the same as O0's; step times equal within noise.
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
