"""mindspore.dataset pipelines: static shapes, determinism, shards, exact resume."""
import itertools

import numpy as np
import pytest
from PIL import Image

from defrcn.data import pipeline
from defrcn.errors import InputError

CANVASES = [(64, 96), (96, 64)]


def _records(root, n=12, portrait_every=3):
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        h, w = (64, 48) if i % portrait_every == 0 else (48, 64)
        path = root / f"{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        anns = [{"bbox": [2.0 + i, 3.0, 20.0 + i, 30.0], "category_id": i % 4,
                 "difficult": False}]
        records.append({"file_name": str(path), "image_id": 100 + i, "height": h,
                        "width": w, "annotations": anns})
    return records


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return _records(tmp_path_factory.mktemp("pipeline"))


def _train(records, **kw):
    args = dict(canvases=CANVASES, min_sizes=[48, 56, 64], max_size=96, flip_prob=0.5,
                pixel_format="msra", batch_size=2, max_gt=3, seed=0, num_workers=2)
    args.update(kw)
    return pipeline.build_train_loader(records, **args)


def _batches(loader, n):
    it = loader.create_tuple_iterator(num_epochs=1, output_numpy=True)
    return [next(it) for _ in range(n)]


def test_train_batches_have_static_shapes_and_types(records):
    loader = _train(records)
    assert loader.get_col_names() == pipeline.TRAIN_COLUMNS
    for images, sizes, boxes, classes, valid in _batches(loader, 8):
        assert images.dtype == np.float32 and images.shape[:2] == (2, 3)
        assert tuple(images.shape[2:]) in CANVASES
        assert sizes.shape == (2, 2) and sizes.dtype == np.float32
        assert boxes.shape == (2, 3, 4) and boxes.dtype == np.float32
        assert classes.shape == (2, 3) and classes.dtype == np.int32
        np.testing.assert_array_equal(valid, [[1, 0, 0]] * 2)
        landscape = images.shape[3] > images.shape[2]
        assert all((w >= h) == landscape for h, w in sizes)  # one orientation per batch
        assert (sizes[:, 0] <= images.shape[2]).all() and (sizes[:, 1] <= images.shape[3]).all()


def test_same_seed_same_batches_other_seed_other_batches(records):
    first, again = _batches(_train(records), 4), _batches(_train(records), 4)
    other = _batches(_train(records, seed=1), 4)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))


def test_worker_processes_give_the_same_batches_as_threads(records):
    threads = _batches(_train(records), 3)
    processes = _batches(_train(records, python_multiprocessing=True), 3)
    for a, b in zip(threads, processes):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_start_iter_continues_an_uninterrupted_stream(records):
    whole = _batches(_train(records), 9)  # 9 batches of 2 cross the 12-image epoch
    resumed = _batches(_train(records, start_iter=6), 3)
    for a, b in zip(whole[6:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


def test_train_plan_shards_are_disjoint_and_cover_each_epoch():
    canvas_of = [0] * 10
    seen = []
    for shard in range(2):
        plan = pipeline.train_batch_plan(canvas_of, min_sizes=[8], flip_prob=0.5,
                                         batch_size=1, seed=3, num_shards=2, shard_id=shard)
        seen.append([b[0][0] for b in itertools.islice(plan, 5)])
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(10))


def test_train_plan_groups_by_canvas_and_is_seeded():
    def plan(canvas_of, seed=0):
        return list(itertools.islice(pipeline.train_batch_plan(
            canvas_of, min_sizes=[8, 9], flip_prob=0.5, batch_size=2, seed=seed), 20))

    mixed = plan([0, 1, 1] * 4)
    assert all(len({item[3] for item in batch}) == 1 for batch in mixed)
    assert mixed == plan([0, 1, 1] * 4) and mixed != plan([0, 1, 1] * 4, seed=1)
    single = plan([0] * 10)
    assert sorted(item[0] for batch in single[:5] for item in batch) == list(range(10))
    assert {item[1] for batch in single for item in batch} == {8, 9}
    assert {item[2] for batch in single for item in batch} == {True, False}


def test_sharded_train_loaders_run(records):
    for shard in range(2):
        (images, *_), = _batches(_train(records, num_shards=2, shard_id=shard), 1)
        assert images.shape[0] == 2
    # Which records each shard's loader yields: the class column carries the record index.
    # One canvas, so no image waits in a canvas bucket across an epoch boundary and each
    # shard's epoch is exactly its first 6 // 2 = 3 batches.
    tagged = [dict(r, annotations=[dict(a, category_id=i) for a in r["annotations"]])
              for i, r in enumerate(records)]
    per_shard = []
    for shard in range(2):
        loader = _train(tagged, canvases=[(96, 96)], num_shards=2, shard_id=shard)
        assert loader.get_dataset_size() == 3
        batches = _batches(loader, 2 * 3)   # two epochs
        per_shard.append([[int(i) for b in batches[e * 3:(e + 1) * 3] for i in b[3][:, 0]] for e in range(2)])
    for epoch in range(2):
        first, second = per_shard[0][epoch], per_shard[1][epoch]
        assert len(set(first)) == len(first) == 6 and len(set(second)) == len(second) == 6
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(len(records)))
    assert per_shard[0][0] != per_shard[0][1]   # each epoch draws a new order


def test_test_loader_keeps_order_and_pads_the_last_batch(records):
    square = [(96, 96)]
    loader = pipeline.build_test_loader(records[:7], canvases=square, min_size=56,
                                        max_size=96, pixel_format="torchvision",
                                        batch_size=3, max_gt=2)
    assert loader.get_col_names() == pipeline.TEST_COLUMNS
    assert loader.get_dataset_size() == 3
    batches = list(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
    ids = [b[5].tolist() for b in batches]
    assert ids == [[0, 1, 2], [3, 4, 5], [6, -1, -1]]
    assert batches[0][5].dtype == np.int32 and batches[0][6].dtype == np.float32
    for b in batches:
        for image_id, scale, size in zip(b[5], b[6], b[1]):
            if image_id >= 0:
                r = records[image_id]
                assert scale == pytest.approx(56 / 48)
                assert tuple(size) == (round(r["height"] * scale), round(r["width"] * scale))
    assert batches[2][0][1:].max() == 0 and batches[2][4][1:].max() == 0


def test_test_loader_groups_canvases_in_order_and_shards_cover(records):
    ids = []
    for shard in range(2):
        loader = pipeline.build_test_loader(records, canvases=CANVASES, min_size=48,
                                            max_size=96, pixel_format="msra",
                                            batch_size=2, max_gt=2, num_shards=2,
                                            shard_id=shard)
        shard_ids = []
        for b in loader.create_tuple_iterator(num_epochs=1, output_numpy=True):
            portrait = b[0].shape[2] > b[0].shape[3]
            real = [int(i) for i in b[5] if i >= 0]
            assert all((records[i]["height"] > records[i]["width"]) == portrait for i in real)
            shard_ids += real
        assert all(i % 2 == shard for i in shard_ids)
        for portrait in (True, False):  # in record order within a canvas
            same = [i for i in shard_ids
                    if (records[i]["height"] > records[i]["width"]) == portrait]
            assert same == sorted(same)
        ids += shard_ids
    assert sorted(ids) == list(range(len(records)))


def test_unreadable_image_is_one_line_input_error(records, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    bad = [dict(r) for r in records[:4]]
    bad[1]["file_name"] = str(broken)
    for workers, processes in ((1, False), (2, False), (2, True)):
        loader = _train(bad, num_workers=workers, python_multiprocessing=processes)
        with pytest.raises(InputError) as info:
            with pipeline.input_errors_as_one_line():
                _batches(loader, 4)
        message = str(info.value)
        assert message.startswith(f"{broken}: cannot read image") and "\n" not in message


def test_missing_image_names_the_file(records, tmp_path):
    bad = [dict(r) for r in records[:3]]
    bad[0]["file_name"] = str(tmp_path / "gone.png")
    loader = pipeline.build_test_loader(bad, canvases=CANVASES, min_size=48, max_size=96,
                                        pixel_format="msra", batch_size=1, max_gt=2)
    with pytest.raises(InputError, match=r"gone\.png: image file not found$"):
        with pipeline.input_errors_as_one_line():
            list(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))


def test_measure_throughput_counts_images(records):
    assert pipeline.measure_throughput(_train(records), 2) > 0


def test_train_loader_reports_a_nominal_epoch_and_keeps_going(records):
    loader = _train(records, num_shards=2, shard_id=1)
    assert loader.get_dataset_size() == 3  # 6 images of this shard // batch 2
    assert len(_batches(loader, 7)) == 7  # more batches than the nominal epoch
