import numpy as np
import pytest
import mindspore as ms

from defrcn.modeling.sampling import sample_balanced


pytestmark = pytest.mark.usefixtures("pynative_mode")


def make_labels(num_pos, num_neg, num_ignore, seed=0):
    labels = np.array([1] * num_pos + [0] * num_neg + [-1] * num_ignore, np.int32)
    return np.random.default_rng(seed).permutation(labels)


def sample(labels, num_samples, fraction, seed=0):
    keys = np.random.default_rng(seed).random(labels.shape[0]).astype(np.float32)
    indices, sample_labels, valid = sample_balanced(ms.Tensor(labels), num_samples, fraction,
                                                    ms.Tensor(keys))
    assert indices.shape == (num_samples,) and sample_labels.shape == (num_samples,)
    assert valid.shape == (num_samples,) and valid.dtype == ms.float32
    return indices.asnumpy(), sample_labels.asnumpy(), valid.asnumpy()


def check_consistent(labels, indices, sample_labels, valid):
    chosen = indices[valid > 0]
    assert len(set(chosen.tolist())) == len(chosen), "an index was drawn twice"
    np.testing.assert_array_equal(labels[chosen], sample_labels[valid > 0])
    assert (labels[chosen] != -1).all(), "an ignored candidate was sampled"


def test_counts_when_plenty_of_both():
    labels = make_labels(40, 200, 50)
    indices, sample_labels, valid = sample(labels, 64, 0.25)
    check_consistent(labels, indices, sample_labels, valid)
    assert valid.sum() == 64
    assert sample_labels.sum() == 16
    assert (sample_labels[:16] == 1).all() and (sample_labels[16:] == 0).all()


def test_few_positives_are_filled_with_negatives():
    labels = make_labels(3, 200, 10)
    indices, sample_labels, valid = sample(labels, 32, 0.5)
    check_consistent(labels, indices, sample_labels, valid)
    assert sample_labels.sum() == 3 and valid.sum() == 32


def test_not_enough_candidates_leaves_invalid_slots():
    labels = make_labels(3, 5, 100)
    indices, sample_labels, valid = sample(labels, 32, 0.5)
    check_consistent(labels, indices, sample_labels, valid)
    assert valid.sum() == 8 and sample_labels[valid > 0].sum() == 3
    assert (indices[valid == 0] == 0).all() and (sample_labels[valid == 0] == 0).all()


def test_fewer_candidates_than_samples_and_no_positives():
    labels = make_labels(0, 6, 4)
    indices, sample_labels, valid = sample(labels, 16, 0.5)
    check_consistent(labels, indices, sample_labels, valid)
    assert valid.sum() == 6 and sample_labels.sum() == 0


def test_reproducible_and_random():
    labels = make_labels(50, 300, 20)
    first = sample(labels, 32, 0.5, seed=3)
    again = sample(labels, 32, 0.5, seed=3)
    other = sample(labels, 32, 0.5, seed=4)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert set(first[0].tolist()) != set(other[0].tolist())


def test_choice_is_roughly_uniform():
    labels = make_labels(10, 0, 0)
    counts = np.zeros(10)
    for seed in range(60):
        indices, _, valid = sample(labels, 4, 0.5, seed=seed)   # 2 of 10 positives each time
        counts[indices[valid > 0]] += 1
    assert counts.sum() == 120
    assert counts.min() >= 3 and counts.max() <= 25   # expectation 12 each
