"""TrainStep: returns every loss part, updates the weights, accumulates gradients exactly."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

from defrcn.engine.train_step import TrainStep
from defrcn.testing import TinyRegression


def batch(size, seed=3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 3)).astype(np.float32)
    return Tensor(x), Tensor(x.sum(axis=1, keepdims=True) * 0.3)


def build(optimizer_kind, accumulation=1):
    ms.set_seed(0)
    network = TinyRegression()
    if optimizer_kind == "sgd":
        optimizer = nn.SGD(network.trainable_params(), learning_rate=0.1)
    else:
        optimizer = nn.Momentum(network.trainable_params(), learning_rate=[0.1, 0.05, 0.02],
                                momentum=0.9)
    return network, optimizer, TrainStep(network, optimizer, grad_accumulation=accumulation)


def weights(network):
    return {p.name: p.asnumpy().copy() for p in network.trainable_params()}


def test_returns_every_part_and_updates(each_mode):
    network, _, step = build("momentum")
    before = weights(network)
    x, y = batch(4)
    total, mse, l1 = network(x, y)
    outputs = step(x, y)
    assert isinstance(outputs, tuple) and len(outputs) == 3
    # outputs are the losses BEFORE the update, as TrainOneStepCell returns
    np.testing.assert_allclose([float(o.asnumpy()) for o in outputs],
                               [float(total.asnumpy()), float(mse.asnumpy()), float(l1.asnumpy())],
                               rtol=1e-6)
    assert float(outputs[0].asnumpy()) == pytest.approx(
        float(outputs[1].asnumpy()) + float(outputs[2].asnumpy()), rel=1e-6)
    after = weights(network)
    assert all(not np.array_equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("optimizer_kind", ["sgd", "momentum"])
def test_accumulation_of_two_halves_equals_one_full_batch(each_mode, optimizer_kind):
    network_full, optimizer_full, step_full = build(optimizer_kind)
    network_acc, optimizer_acc, step_acc = build(optimizer_kind, accumulation=2)
    for update in range(3):
        x, y = batch(8, seed=update)
        step_full(x, y)
        step_acc(x[:4], y[:4])
        if update == 0:  # after the first half nothing is applied yet
            assert int(optimizer_acc.global_step.asnumpy().item()) == 0
        step_acc(x[4:], y[4:])
    assert int(optimizer_acc.global_step.asnumpy().item()) == 3
    full, accumulated = weights(network_full), weights(network_acc)
    for name in full:
        np.testing.assert_allclose(accumulated[name], full[name], rtol=1e-5, atol=1e-6)
    # the accumulators are cleared after each update
    for param in step_acc.accum_grads:
        assert not param.asnumpy().any()


def test_rejects_zero_accumulation():
    network = TinyRegression()
    optimizer = nn.SGD(network.trainable_params(), learning_rate=0.1)
    with pytest.raises(ValueError, match="grad_accumulation"):
        TrainStep(network, optimizer, grad_accumulation=0)


WORKER = '''
import sys
import numpy as np
import mindspore as ms
from mindspore import Tensor, amp, nn
from mindspore.communication import get_rank, init
from defrcn.engine.train_step import TrainStep
from defrcn.testing import TinyRegression

out_dir = sys.argv[1]
ms.set_context(mode=ms.GRAPH_MODE)
init()
ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
rank = get_rank()

for accumulation, scaled in ((1, False), (2, False), (1, True), (2, True)):
    ms.set_seed(0)
    network = TinyRegression()
    optimizer = nn.Momentum(network.trainable_params(), learning_rate=[0.1, 0.05, 0.02],
                            momentum=0.9)
    scaler = amp.StaticLossScaler(1024.0) if scaled else None
    step = TrainStep(network, optimizer, grad_accumulation=accumulation, loss_scaler=scaler)
    assert isinstance(step.grad_reducer, nn.DistributedGradReducer)
    micro = 4 // accumulation
    for update in range(3):
        rng = np.random.default_rng(update)
        x = rng.normal(size=(8, 3)).astype(np.float32)
        y = x.sum(axis=1, keepdims=True) * 0.3
        shard_x, shard_y = x[rank * 4:(rank + 1) * 4], y[rank * 4:(rank + 1) * 4]
        for m in range(accumulation):
            step(Tensor(shard_x[m * micro:(m + 1) * micro]),
                 Tensor(shard_y[m * micro:(m + 1) * micro]))
    np.savez(f"{out_dir}/rank{rank}_acc{accumulation}{'_scaled' if scaled else ''}.npz",
             **{p.name: p.asnumpy() for p in network.trainable_params()})
'''


@pytest.mark.slow
@pytest.mark.msrun
def test_data_parallel_two_ranks_equals_one_full_batch(tmp_path, graph_mode):
    """msrun, 2 CPU workers, batch 4 each (and 2x2 with accumulation) == batch 8 alone; also
    with a (float32-exact) static loss scale, whose finite check follows the all-reduce."""
    import os
    import socket
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    result = subprocess.run(
        ["msrun", "--worker_num=2", "--local_worker_num=2", f"--master_port={port}", "--join=True",
         f"--log_dir={tmp_path / 'logs'}", str(script), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    network, _, step = build("momentum")
    for update in range(3):
        x, y = batch(8, seed=update)
        step(x, y)
    expected = weights(network)
    for rank, accumulation, suffix in [(r, a, s) for r in (0, 1) for a in (1, 2) for s in ("", "_scaled")]:
        got = np.load(tmp_path / f"rank{rank}_acc{accumulation}{suffix}.npz")
        for name, value in expected.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
