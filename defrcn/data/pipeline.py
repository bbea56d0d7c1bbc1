"""mindspore.dataset pipelines that turn records (data_contract.md) into static-shape batches.

Train: an endless, deterministic stream. Epoch e visits the records in the order of a
permutation drawn from (seed, e); the shortest-edge size and the flip of the image in slot
i of that permutation are drawn from the same generator, so the augmentation of an image
depends on (seed, epoch, slot) only, never on worker scheduling or on the shard count.
Shard k of n takes slots k, k + n, ... of every epoch (disjoint shards that cover the set).
Images are grouped by canvas into batches (detectron2's aspect-ratio grouping); a batch is
only emitted when full, so every batch has one static shape. The plan (which image, size,
flip) is computed in the main process; decoding and transforms run in parallel map
workers that keep the order. `start_iter=k` replays the plan (index bookkeeping only, no
decoding) and skips its first k batches, so a resumed run sees exactly the batches of an
uninterrupted one.

Test: records in order (shard k takes records k, k + n, ...), grouped by canvas; a batch
that cannot be filled at the end is padded with blank images (image_ids -1, image_sizes
the canvas, scales 1, no gt), so every batch has the static shape.
"""
import itertools
import os
import re
import time
from contextlib import contextmanager

import mindspore.dataset as ds
import numpy as np
from PIL import Image

from defrcn.data.transforms import choose_canvas, prepare_example
from defrcn.errors import InputError

__all__ = [
    "TRAIN_COLUMNS",
    "TEST_COLUMNS",
    "build_train_loader",
    "build_test_loader",
    "train_batch_plan",
    "eval_batch_plan",
    "load_image",
    "input_errors_as_one_line",
    "measure_throughput",
]

TRAIN_COLUMNS = ["images", "image_sizes", "gt_boxes", "gt_classes", "gt_valid"]
TEST_COLUMNS = TRAIN_COLUMNS + ["image_ids", "scales"]
_ERROR_TAG = "defrcn-input-error"  # marks our message inside MindSpore's worker error text


def load_image(record):
    """Read a record's image as uint8 (H, W, 3) RGB; InputError naming the file if it
    cannot be read or its size differs from the record's."""
    path = record["file_name"]
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise InputError("image file not found", path=path) from None
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read image ({type(e).__name__}: {e})", path=path) from None
    if image.shape[:2] != (record["height"], record["width"]):
        raise InputError(
            f"image is {image.shape[1]}x{image.shape[0]} (WxH) but its record says "
            f"{record['width']}x{record['height']}", path=path)
    return image


def check_image_headers(records):
    """Open every record's image header (no decoding): InputError naming the first file that
    is missing, unreadable or of another size than its record. Run before training so bad
    data fails in seconds, not after the graph compile."""
    for record in records:
        path = record["file_name"]
        try:
            with Image.open(path) as im:
                size = im.size
        except FileNotFoundError:
            raise InputError("image file not found", path=path) from None
        except (OSError, ValueError, SyntaxError) as e:
            raise InputError(f"cannot read image ({type(e).__name__}: {e})", path=path) from None
        if size != (record["width"], record["height"]):
            raise InputError(f"image is {size[0]}x{size[1]} (WxH) but its record says "
                             f"{record['width']}x{record['height']}", path=path)


def _gt_arrays(record):
    anns = record.get("annotations", [])
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    classes = np.array([a["category_id"] for a in anns], np.int32)
    return boxes, classes


def _canvas_indices(records, canvases):
    return [choose_canvas(r["height"], r["width"], canvases) for r in records]


def _check_common(records, canvases, batch_size, num_shards, shard_id):
    if not records:
        raise ValueError("no records to load")
    if not canvases:
        raise ValueError("no canvases given")
    if batch_size < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"bad batch_size {batch_size} or shard {shard_id} of {num_shards}")


def train_batch_plan(canvas_of, *, min_sizes, flip_prob, batch_size, seed, num_shards=1,
                     shard_id=0):
    """Endless iterator of batches, each a list of (record index, short size, flip, canvas).

    canvas_of: canvas index per record. See the module docstring for the order.
    """
    n = len(canvas_of)
    if n < num_shards:
        raise ValueError(f"{n} records cannot feed {num_shards} shards")
    buckets = {}
    for epoch in itertools.count():
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        sizes = np.asarray(min_sizes)[rng.integers(len(min_sizes), size=n)]
        flips = rng.random(n) < flip_prob
        for slot in range(shard_id, n, num_shards):
            index = int(order[slot])
            canvas = canvas_of[index]
            bucket = buckets.setdefault(canvas, [])
            bucket.append((index, int(sizes[slot]), bool(flips[slot]), canvas))
            if len(bucket) == batch_size:
                yield list(bucket)
                bucket.clear()


def eval_batch_plan(canvas_of, *, batch_size, num_shards=1, shard_id=0):
    """Finite list of batches of (record index or -1 for padding, canvas) in record order."""
    buckets, batches = {}, []
    for index in range(shard_id, len(canvas_of), num_shards):
        bucket = buckets.setdefault(canvas_of[index], [])
        bucket.append((index, canvas_of[index]))
        if len(bucket) == batch_size:
            batches.append(list(bucket))
            bucket.clear()
    for canvas in sorted(buckets):
        if buckets[canvas]:
            pad = batch_size - len(buckets[canvas])
            batches.append(buckets[canvas] + [(-1, canvas)] * pad)
    return batches


class _PlanSource:
    """Iterable of one-row plans flattened from `batches()` (GeneratorDataset source);
    no __len__: the train stream is endless."""

    def __init__(self, batches):
        self._batches = batches

    def __iter__(self):
        for batch in self._batches():
            for item in batch:
                yield (np.array(item, np.int64),)


class _FinitePlanSource(_PlanSource):
    def __init__(self, batches, length):
        super().__init__(batches)
        self._length = length

    def __len__(self):
        return self._length


class _TrainExample:
    """Map op: plan row [index, short size, flip, canvas] -> the five train columns."""

    def __init__(self, records, canvases, max_size, pixel_format, max_gt):
        self.records, self.canvases = records, canvases
        self.max_size, self.pixel_format, self.max_gt = max_size, pixel_format, max_gt

    def __call__(self, plan):
        try:
            return self._example(plan)
        except InputError as e:  # tagged so the main process can find the message
            raise InputError(f"{_ERROR_TAG}[{e}]{_ERROR_TAG}") from None

    def _example(self, plan):
        index, short, flip, canvas = (int(v) for v in plan)
        record = self.records[index]
        boxes, classes = _gt_arrays(record)
        ex = prepare_example(load_image(record), boxes, classes, canvas=self.canvases[canvas],
                             short_size=short, max_size=self.max_size, flip=bool(flip),
                             pixel_format=self.pixel_format, max_gt=self.max_gt)
        return ex["image"], ex["image_size"], ex["gt_boxes"], ex["gt_classes"], ex["gt_valid"]


class _TestExample(_TrainExample):
    """Map op: plan row [index or -1, canvas] -> the seven test columns."""

    def __init__(self, records, canvases, min_size, max_size, pixel_format, max_gt):
        super().__init__(records, canvases, max_size, pixel_format, max_gt)
        self.min_size = min_size

    def _example(self, plan):
        index, canvas = int(plan[0]), int(plan[1])
        size = self.canvases[canvas]
        if index < 0:  # padding of the last batch
            g = self.max_gt
            return (np.zeros((3,) + tuple(size), np.float32), np.array(size, np.float32),
                    np.zeros((g, 4), np.float32), np.zeros((g,), np.int32),
                    np.zeros((g,), np.float32), np.int32(-1), np.float32(1.0))
        record = self.records[index]
        boxes, classes = _gt_arrays(record)
        ex = prepare_example(load_image(record), boxes, classes, canvas=size,
                             short_size=self.min_size, max_size=self.max_size, flip=False,
                             pixel_format=self.pixel_format, max_gt=self.max_gt)
        return (ex["image"], ex["image_size"], ex["gt_boxes"], ex["gt_classes"],
                ex["gt_valid"], np.int32(index), ex["scale"])


@contextmanager
def input_errors_as_one_line():
    """Turn a worker's InputError (wrapped by MindSpore in a long RuntimeError) back into
    an InputError with the original one-line message. Wrap iteration over a loader in it."""
    try:
        yield
    except InputError as e:
        raise InputError(_untag(str(e)) or str(e)) from None
    except RuntimeError as e:
        message = _untag(str(e))
        if message is None:
            raise
        raise InputError(message) from None


def _untag(text):
    match = re.search(re.escape(_ERROR_TAG) + r"\[(.*?)\]" + re.escape(_ERROR_TAG), text,
                      re.S)
    return match.group(1) if match else None


def _dataset(source, op, columns, num_workers, batch_size, python_multiprocessing):
    # Threads by default: Pillow and numpy release the GIL, nothing is forked beside a
    # MindSpore process, and processes did not win on 2 busy cores (800x1344 canvas, 2
    # workers: 42-44 img/s with threads, 28-32 with processes; 256x256: 580-700 both).
    # MindSpore refuses more workers than cores.
    workers = max(1, min(num_workers, os.cpu_count() or 1))
    data = ds.GeneratorDataset(source, column_names=["plan"], shuffle=False)
    data = data.map(operations=op, input_columns=["plan"], output_columns=columns,
                    num_parallel_workers=workers,
                    python_multiprocessing=python_multiprocessing)
    return data.batch(batch_size, drop_remainder=True)


def build_train_loader(records, *, canvases, min_sizes, max_size, flip_prob, pixel_format,
                       batch_size, max_gt, seed, num_shards=1, shard_id=0, num_workers=2,
                       start_iter=0, num_batches=None, python_multiprocessing=False):
    """Deterministic training pipeline (see the module docstring), endless by default.

    Returns a mindspore.dataset.Dataset with columns TRAIN_COLUMNS: images float32
    (B, 3, H, W), image_sizes float32 (B, 2), gt_boxes float32 (B, G, 4), gt_classes
    int32 (B, G), gt_valid float32 (B, G); (H, W) is one of `canvases` per batch.
    Iterate it inside `input_errors_as_one_line()` to get unreadable images as one line.
    `num_workers` map workers decode and transform (threads, or processes with
    `python_multiprocessing=True`); the output does not depend on either.
    With `num_batches`, exactly that many batches from `start_iter` on (what a run of
    known length needs; `get_dataset_size()` is then exact). Without it,
    `get_dataset_size()` reports a nominal epoch (this shard's images // batch_size) and
    iteration never ends: stop after the wanted number of steps.
    """
    _check_common(records, canvases, batch_size, num_shards, shard_id)
    canvases = [tuple(int(v) for v in c) for c in canvases]
    canvas_of = _canvas_indices(records, canvases)

    def batches():
        plan = train_batch_plan(canvas_of, min_sizes=list(min_sizes), flip_prob=flip_prob,
                                batch_size=batch_size, seed=seed, num_shards=num_shards,
                                shard_id=shard_id)
        stop = None if num_batches is None else start_iter + num_batches
        return itertools.islice(plan, start_iter, stop)

    op = _TrainExample(records, canvases, max_size, pixel_format, max_gt)
    if num_batches is not None:
        source = _FinitePlanSource(batches, num_batches * batch_size)
        return _dataset(source, op, TRAIN_COLUMNS, num_workers, batch_size, python_multiprocessing)
    data = _dataset(_PlanSource(batches), op, TRAIN_COLUMNS, num_workers, batch_size,
                    python_multiprocessing)
    # MindSpore would count an endless stream forever (Model.train asks for the size):
    # report a nominal epoch of this shard's images instead; the stream does not stop.
    data.dataset_size = max(1, len(range(shard_id, len(records), num_shards)) // batch_size)
    return data


def build_test_loader(records, *, canvases, min_size, max_size, pixel_format, batch_size,
                      max_gt, num_shards=1, shard_id=0, num_workers=2,
                      python_multiprocessing=False):
    """Finite in-order test pipeline with columns TEST_COLUMNS: the train columns plus
    image_ids int32 (B,) (index into `records`; -1 for padding) and scales float32 (B,)
    (resized / original; boxes / scale = original pixels)."""
    _check_common(records, canvases, batch_size, num_shards, shard_id)
    canvases = [tuple(int(v) for v in c) for c in canvases]
    plan = eval_batch_plan(_canvas_indices(records, canvases), batch_size=batch_size,
                           num_shards=num_shards, shard_id=shard_id)
    source = _FinitePlanSource(lambda: plan, len(plan) * batch_size)
    op = _TestExample(records, canvases, min_size, max_size, pixel_format, max_gt)
    return _dataset(source, op, TEST_COLUMNS, num_workers, batch_size,
                    python_multiprocessing)


def measure_throughput(loader, n_batches, warmup=1):
    """Images per second over `n_batches` batches after `warmup` batches (numpy output)."""
    iterator = loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
    images = 0
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(n_batches):
        images += len(next(iterator)[0])
    return images / (time.perf_counter() - start)
