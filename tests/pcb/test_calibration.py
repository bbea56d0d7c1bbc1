"""PCB rescoring on hand values (defrcn/pcb/calibration.py)."""
import numpy as np
import pytest

from defrcn.pcb.calibration import (calibrate_scores, cosine_similarity, prototype_rows,
                                    select_for_calibration)

PROTOTYPES = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)  # rows: "cat", "dog"


def test_prototype_rows_map_by_name_and_skip_untouched_classes():
    rows = prototype_rows(["dog", "bird", "cat"], ["cat", "dog"])
    assert rows.tolist() == [1, -1, 0]
    assert prototype_rows(["dog", "bird", "cat"], ["cat", "dog"], untouched_names=["cat"]).tolist() == [1, -1, -1]


def test_range_is_lower_exclusive_upper_inclusive():
    rows = np.array([0])
    scores = np.array([0.04, 0.05, 0.0500001, 0.7, 1.0, 1.01], np.float32)
    selected = select_for_calibration(scores, np.zeros(6, np.int64), rows, lower=0.05, upper=1.0)
    assert selected.tolist() == [False, False, True, True, True, False]


def test_formula_on_hand_values_without_resorting():
    rows = prototype_rows(["cat", "dog", "bird"], ["cat", "dog"])
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.02], np.float32)
    classes = np.array([1, 2, 0, 0, 0])
    selected = select_for_calibration(scores, classes, rows)
    assert selected.tolist() == [True, False, True, True, False]  # bird: no prototype; 0.02: below range
    embeddings = np.array([[0.0, 5.0],     # dog, cos 1
                           [-3.0, 0.0],    # cat, cos -1
                           [1.0, 1.0]],    # cat, cos 1/sqrt(2)
                          np.float32)
    new = calibrate_scores(scores, classes, selected, embeddings, PROTOTYPES, rows, alpha=0.5)
    expected = [0.5 * 0.9 + 0.5 * 1.0, 0.8, 0.5 * 0.6 - 0.5, 0.5 * 0.3 + 0.5 / np.sqrt(2), 0.02]
    np.testing.assert_allclose(new, expected, rtol=1e-6)
    assert new[2] < 0 < new[3] < new[1]  # kept in place: no re-sort, no new threshold
    assert new.dtype == np.float32
    np.testing.assert_array_equal(scores, np.array([0.9, 0.8, 0.6, 0.3, 0.02], np.float32))  # input not modified


def test_alpha_weights_the_detector_score():
    rows = np.array([0])
    scores = np.array([0.4], np.float32)
    new = calibrate_scores(scores, [0], [True], [[2.0, 0.0]], PROTOTYPES, rows, alpha=0.25)
    assert new[0] == pytest.approx(0.25 * 0.4 + 0.75 * 1.0)


def test_base_classes_untouched_in_gfsod():
    rows = prototype_rows(["cat", "dog"], ["cat", "dog"], untouched_names=["cat"])  # cat = base
    scores = np.array([0.9, 0.9], np.float32)
    classes = np.array([0, 1])
    selected = select_for_calibration(scores, classes, rows)
    assert selected.tolist() == [False, True]
    new = calibrate_scores(scores, classes, selected, [[0.0, 1.0]], PROTOTYPES, rows)
    np.testing.assert_allclose(new, [0.9, 0.95])


def test_cosine_of_a_zero_vector_is_zero_and_empty_inputs_work():
    np.testing.assert_allclose(cosine_similarity([[0.0, 0.0], [3.0, 4.0]], [[1.0, 0.0], [4.0, 3.0]]), [0.0, 0.96])
    rows = np.array([0])
    empty = np.zeros(0, np.float32)
    assert select_for_calibration(empty, np.zeros(0, np.int64), rows).shape == (0,)
    assert calibrate_scores(empty, np.zeros(0, np.int64), np.zeros(0, bool), np.zeros((0, 2)), PROTOTYPES,
                            rows).shape == (0,)


def test_out_of_range_class_id_is_an_error():
    with pytest.raises(ValueError, match="class ids"):
        select_for_calibration([0.5], [3], np.array([0, 1]))
