"""defrcn.inference.infer without a model: which files an argument names, the output names,
the JSON record, the drawing, and the checks that refuse a run before the model is built
(tests/tools/test_infer_cli.py runs the whole tool)."""
import numpy as np
import pytest

from defrcn.errors import InputError
from defrcn.inference.infer import (detections_record, draw_detections, expand_image_paths, infer_to_folder,
                                    output_stems)


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return str(path)


def test_folders_expand_to_their_images_and_files_stay_as_given(tmp_path):
    folder = tmp_path / "images"
    for name in ("b.PNG", "a.jpg", "c.jpeg", "notes.txt", "sub/d.jpg"):
        touch(folder / name)
    (folder / "dir.png").mkdir()  # a folder with an image suffix is not an image
    single = touch(tmp_path / "x.txt")  # a file given by name is used whatever its suffix
    got = expand_image_paths([single, folder])
    assert got == [single] + [str(folder / name) for name in ("a.jpg", "b.PNG", "c.jpeg")]


@pytest.mark.parametrize("make, message", [
    (lambda p: [p / "missing.jpg"], "missing.jpg: no such image file or folder"),
    (lambda p: [touch(p / "empty" / "notes.txt").rsplit("/", 1)[0]], "empty: no jpg/jpeg/png files in this folder"),
    (lambda p: [], "no images given"),
])
def test_nothing_to_read_is_an_input_error(tmp_path, make, message):
    with pytest.raises(InputError) as info:
        expand_image_paths(make(tmp_path))
    assert str(info.value).endswith(message)


def test_repeated_stems_get_a_counter():
    paths = ["a/cat.jpg", "b/cat.png", "dog.jpg", "c/cat.jpeg", "d/dog.png"]
    assert output_stems(paths) == ["cat", "cat-2", "dog", "cat-3", "dog-2"]


def test_record_has_rounded_values_names_and_the_data_sets_ids():
    boxes = np.array([[1.23456, 2.0, 30.5, 40.0001], [0, 0, 5, 5]], np.float32)
    record = detections_record("img.jpg", 48, 64, boxes, np.array([0.912345678, 0.5]), np.array([1, 0]),
                               ["cat", "dog"], [17, None])
    assert record == {"image": "img.jpg", "width": 64, "height": 48, "detections": [
        {"bbox": [1.235, 2.0, 30.5, 40.0], "score": 0.91235, "category": "dog", "category_id": None},
        {"bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.5, "category": "cat", "category_id": 17}]}
    assert detections_record("e.png", 1, 2, np.zeros((0, 4)), [], [], ["cat"], [1])["detections"] == []


def test_each_class_is_drawn_in_its_own_colour():
    image = np.zeros((60, 80, 3), np.uint8)
    boxes = np.array([[10, 20, 30, 50], [40, 20, 70, 50]], np.float32)
    drawn = draw_detections(image, boxes, np.array([0.9, 0.8]), np.array([0, 1]), ["cat", "dog"])
    assert drawn.shape == image.shape and not image.any()
    left, right = tuple(drawn[50, 20]), tuple(drawn[50, 55])  # the bottom edges
    assert left != (0, 0, 0) and right != (0, 0, 0) and left != right
    np.testing.assert_array_equal(draw_detections(image, np.zeros((0, 4)), [], [], ["cat"]), image)


def test_a_bad_threshold_or_an_output_over_an_input_stops_before_the_model(tmp_path):
    image = touch(tmp_path / "a.png")
    with pytest.raises(InputError, match=r"--score-thresh: must be in \[0, 1\], got 1.5"):
        infer_to_folder("no_recipe.py", "no.ckpt", [image], tmp_path / "out", score_thresh=1.5)
    with pytest.raises(InputError, match="would overwrite the input image .*a.png; pick another --output-dir"):
        infer_to_folder("no_recipe.py", "no.ckpt", [image], tmp_path)
    assert not (tmp_path / "out").exists()
