"""Balanced foreground/background sampling with a fixed output size."""
import mindspore as ms
from mindspore import ops

__all__ = ["sample_balanced"]


def sample_balanced(labels, num_samples, positive_fraction, random_keys):
    """Draw `num_samples` slots, at most a `positive_fraction` of them foreground.

    Same counts as detectron2's subsample_labels: #fg = min(#candidates with label 1,
    int(num_samples * positive_fraction)); #bg = min(#label-0 candidates, num_samples - #fg).
    Candidates are chosen uniformly: the ones with the largest `random_keys`.

    Args:
        labels: (N,) int, 1 foreground, 0 background, -1 ignore (never sampled).
        num_samples, positive_fraction: Python int and float.
        random_keys: (N,) float in [0, 1), the randomness (e.g. from ops.UniformReal);
            the same keys give the same sample.

    Returns:
        indices (num_samples,) int32 into N (foreground slots first, 0 in unfilled slots),
        sample_labels (num_samples,) int32 in {1 fg, 0 bg},
        sample_valid (num_samples,) float32, 0 for the slots left unfilled.
    """
    num_candidates = labels.shape[0]
    max_positive = int(num_samples * positive_fraction)
    is_positive = labels == 1
    is_negative = labels == 0
    keys = random_keys.astype(ms.float32)
    no_key = ops.full_like(keys, -1.0)
    slots = ops.arange(0, num_samples, dtype=ms.int32)

    num_positive = ops.minimum(is_positive.astype(ms.int32).sum(), max_positive)
    num_negative = ops.minimum(is_negative.astype(ms.int32).sum(), num_samples - num_positive)
    take_positive = slots < num_positive
    sample_valid = slots < num_positive + num_negative

    k_negative = min(num_samples, num_candidates)
    _, negative_order = ops.topk(ops.where(is_negative, keys, no_key), k_negative)
    negative_slot = ops.clamp(slots - num_positive, 0, k_negative - 1)
    indices = negative_order.astype(ms.int32)[negative_slot]
    k_positive = min(max_positive, num_candidates)
    if k_positive > 0:
        _, positive_order = ops.topk(ops.where(is_positive, keys, no_key), k_positive)
        positive_slot = ops.clamp(slots, 0, k_positive - 1)
        indices = ops.where(take_positive, positive_order.astype(ms.int32)[positive_slot], indices)
    indices = ops.where(sample_valid, indices, ops.zeros_like(indices))
    return indices, take_positive.astype(ms.int32), sample_valid.astype(ms.float32)
