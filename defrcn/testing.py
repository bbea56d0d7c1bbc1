"""Small pieces shared by the tests (as mmengine.testing): nothing here runs in training."""
from mindspore import nn, ops


class TinyRegression(nn.Cell):
    """2-layer MLP standing in for the detector: returns (total, mse, l1) as the detector
    returns (total, *loss parts)."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Dense(3, 8)
        self.out = nn.Dense(8, 1)

    def construct(self, x, y):
        pred = self.out(ops.tanh(self.hidden(x)))
        mse = ((pred - y) ** 2).mean()
        l1 = ops.abs(pred - y).mean() * 0.5
        return mse + l1, mse, l1
