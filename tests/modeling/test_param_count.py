"""defrcn.modeling.param_count: PyTorch's convention (BatchNorm running statistics are not
parameters) and the one-line summary of the build log."""
import mindspore.nn as nn

from defrcn.modeling.param_count import count_parameters, format_parameter_count


class Small(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=True)  # 108 + 4
        self.bn = nn.BatchNorm2d(4)  # gamma, beta: 8; moving mean, variance: 8
        self.fc = nn.Dense(4, 2)  # 8 + 2
        for param in self.fc.get_parameters():
            param.requires_grad = False

    def construct(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_statistics_are_counted_apart():
    assert count_parameters(Small()) == dict(trainable=120, frozen=10, total=130, statistics=8)


def test_a_cell_without_parameters_counts_zero():
    assert count_parameters(nn.ReLU()) == dict(trainable=0, frozen=0, total=0, statistics=0)


def test_summary_line_in_millions():
    counts = dict(trainable=45_600_000, frozen=7_131_548, total=52_731_548, statistics=105_344)
    assert format_parameter_count(counts, "DeFRCN") == (
        "DeFRCN: 52.73M parameters (45.60M trainable, 7.13M frozen; 0.11M BN statistics)")
    assert format_parameter_count(count_parameters(Small())).startswith("model: 0.00M parameters")
