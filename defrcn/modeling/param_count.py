"""Parameter counting for the build-time summary.

Convention (PyTorch's, so numbers compare with detectron2/torchvision logs): a BatchNorm's
running statistics (`moving_mean`, `moving_variance`) are not parameters there; they are
counted apart as `statistics` and left out of `trainable`, `frozen` and `total`.
"""

__all__ = ["count_parameters", "format_parameter_count"]

# Names MindSpore's BatchNorm (and our FrozenBatchNorm2d) give their running statistics.
_STATISTIC_SUFFIXES = (".moving_mean", ".moving_variance")


def _is_statistic(name):
    return name in ("moving_mean", "moving_variance") or name.endswith(_STATISTIC_SUFFIXES)


def count_parameters(cell):
    """Count the elements of a Cell's parameters.

    Returns:
        dict(trainable=int, frozen=int, total=int, statistics=int): `trainable` have
        requires_grad=True, `frozen` requires_grad=False, `total` = trainable + frozen;
        `statistics` = BatchNorm running mean/variance elements (in none of the others).
    """
    trainable = frozen = statistics = 0
    for param in cell.get_parameters():
        size = int(param.size)
        if _is_statistic(param.name):
            statistics += size
        elif param.requires_grad:
            trainable += size
        else:
            frozen += size
    return dict(trainable=trainable, frozen=frozen, total=trainable + frozen, statistics=statistics)


def format_parameter_count(counts, name="model"):
    """One line for the build log, e.g. `model: 52.73M parameters (45.60M trainable, 7.13M frozen)`."""
    def millions(n):
        return f"{n / 1e6:.2f}M"

    return (f"{name}: {millions(counts['total'])} parameters ({millions(counts['trainable'])} trainable, "
            f"{millions(counts['frozen'])} frozen; {millions(counts['statistics'])} BN statistics)")
