"""Mixed precision (solver.amp_level / solver.loss_scale): the settings, the conversion of the
compute cells, loss scaling in TrainStep (exact in float32, overflow skips the update) and an
exact resume with the scaler's state in the checkpoint. Runs on CPU (MindSpore 2.8.0's CPU
backend has the float16 kernels these tiny networks use)."""
import numpy as np
import pytest

import mindspore as ms
import mindspore.dataset as ds
from mindspore import Tensor, amp, nn

from defrcn.callbacks.checkpointer import Checkpointer
from defrcn.checkpoint.io import find_resume_checkpoint
from defrcn.checkpoint.training_state import restore_training_state
from defrcn.config.config import Config
from defrcn.engine.loop import run_training
from defrcn.engine.precision import amp_settings, apply_mixed_precision, build_loss_scaler
from defrcn.engine.train_step import TrainStep
from defrcn.errors import InputError
from defrcn.testing import TinyRegression

CELLS = ("hidden", "out")


pytestmark = pytest.mark.usefixtures("graph_mode")


def arrays(seed, size=4):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(size, 3)).astype(np.float32)
    return x, (x.sum(axis=1, keepdims=True) * 0.3).astype(np.float32)


def batch(seed):
    return tuple(Tensor(a) for a in arrays(seed))


def build(level="O0", scaler=None, accumulation=1, seed=0):
    ms.set_seed(seed)
    network = apply_mixed_precision(TinyRegression(), level, cells=CELLS)
    optimizer = nn.Momentum(network.trainable_params(), learning_rate=[0.05] * 20, momentum=0.9)
    return network, optimizer, TrainStep(network, optimizer, grad_accumulation=accumulation,
                                         loss_scaler=scaler)


def weights(network):
    return {p.name: p.asnumpy().copy() for p in network.trainable_params()}


@pytest.mark.parametrize("solver, expected", [
    ({}, ("O0", None)),
    ({"amp_level": "O0", "loss_scale": "1024"}, ("O0", None)),
    ({"amp_level": "O2", "loss_scale": "dynamic"}, ("O2", "dynamic")),
    ({"amp_level": "o1", "loss_scale": "1024"}, ("O1", 1024.0)),
    ({"amp_level": "O3", "loss_scale": 128}, ("O3", 128.0)),
])
def test_settings(solver, expected):
    assert amp_settings(Config(solver)) == expected


@pytest.mark.parametrize("solver, key", [
    ({"amp_level": "O4"}, "solver.amp_level"),
    ({"amp_level": "auto"}, "solver.amp_level"),
    ({"amp_level": "O2", "loss_scale": "big"}, "solver.loss_scale"),
    ({"amp_level": "O2", "loss_scale": "0.5"}, "solver.loss_scale"),
])
def test_bad_settings_are_input_errors(solver, key):
    with pytest.raises(InputError, match=key):
        amp_settings(Config(solver))


def test_scalers():
    assert build_loss_scaler(None) is None
    dynamic = build_loss_scaler("dynamic")
    assert isinstance(dynamic, amp.DynamicLossScaler) and float(dynamic.scale_value.asnumpy()) == 2.0 ** 16
    static = build_loss_scaler(512.0)
    assert isinstance(static, amp.StaticLossScaler) and float(static.scale_value.asnumpy()) == 512.0


@pytest.mark.parametrize("level", ["O1", "O2", "O3"])
def test_conversion_keeps_names_and_float32_outputs(level):
    ms.set_seed(0)
    reference = TinyRegression()
    names = [p.name for p in reference.get_parameters()]
    x, y = batch(1)
    expected = [float(o.asnumpy()) for o in reference(x, y)]
    ms.set_seed(0)
    converted = apply_mixed_precision(TinyRegression(), level, cells=CELLS)
    assert [p.name for p in converted.get_parameters()] == names
    assert all(p.dtype == ms.float32 for p in converted.get_parameters())
    outputs = converted(x, y)
    assert all(o.dtype == ms.float32 for o in outputs)
    got = [float(o.asnumpy()) for o in outputs]
    np.testing.assert_allclose(got, expected, rtol=2e-2)  # float16 products, float32 sums
    assert got != expected


@pytest.mark.parametrize("level", ["O1", "O2", "O3"])
def test_detector_cells_convert_with_names_unchanged(level):
    from defrcn.modeling.detector import build_detector

    model = build_detector(num_classes=3, depth=18, norm="frozen_bn", freeze_at=2, stride_in_1x1=False,
                           verbose=False)
    names = sorted(p.name for p in model.get_parameters())
    apply_mixed_precision(model, level)
    assert sorted(p.name for p in model.get_parameters()) == names
    assert model.roi_heads.res5.out_channels == 512  # attributes stay reachable through the wrappers
    assert type(model.rpn_branch).__name__ == "DecoupledBranch"  # not a compute cell: untouched


@pytest.mark.parametrize("accumulation", [1, 2])
def test_power_of_two_scale_is_exact_in_float32(accumulation):
    network_plain, _, step_plain = build(accumulation=accumulation)
    network_scaled, _, step_scaled = build(scaler=amp.StaticLossScaler(1024.0), accumulation=accumulation)
    for call in range(3 * accumulation):
        x, y = batch(call)
        plain = [float(o.asnumpy()) for o in step_plain(x, y)]
        scaled = [float(o.asnumpy()) for o in step_scaled(x, y)]
        assert scaled == plain  # the unscaled losses are returned
    plain, scaled = weights(network_plain), weights(network_scaled)
    for name in plain:
        assert np.array_equal(scaled[name], plain[name]), name


def test_overflow_skips_the_update_and_halves_the_scale():
    network, optimizer, step = build("O3", scaler=amp.DynamicLossScaler(2.0 ** 24, 2, 1000))
    scales, updated = [], []
    for call in range(20):
        before = weights(network)
        outputs = step(*batch(call))
        assert all(np.isfinite(float(o.asnumpy())) for o in outputs)
        after = weights(network)
        updated.append(any(not np.array_equal(before[n], after[n]) for n in before))
        scales.append(float(step.loss_scale.asnumpy()))
        assert int(optimizer.global_step.asnumpy().item()) == call + 1  # the LR index advances anyway
    first = updated.index(True)
    assert first > 0, "2**24 x a float16 gradient should overflow"
    assert scales[:first] == [2.0 ** (23 - i) for i in range(first)]  # halved on every skipped step
    assert all(scale == scales[first - 1] for scale in scales[first:first + 3])


class Batches:
    """Batch i is a pure function of i: the stream restarts at any iteration."""

    def __init__(self, start, stop):
        self.start, self.stop = start, stop

    def __len__(self):
        return self.stop - self.start

    def __getitem__(self, index):
        return arrays(self.start + index)


def data(start, stop):
    return ds.GeneratorDataset(Batches(start, stop), ["x", "y"], shuffle=False)


def state_of(train_step):
    return {p.name: p.asnumpy().copy() for p in train_step.get_parameters()}


def test_resume_with_dynamic_scaling_is_bit_identical(tmp_path):
    total, half = 8, 4

    def scaler():  # a short window, so that the scale and the counter move during the run
        return amp.DynamicLossScaler(2.0 ** 20, 2, 3)

    _, optimizer, step = build("O2", scaler())
    run_training(step, data(0, total), [Checkpointer(output_dir=str(tmp_path / "a"), period=4, keep=2,
                                                     optimizer=optimizer, max_iter=total, is_main=True)],
                 0, total)
    expected = state_of(step)
    assert {"loss_scale", "loss_scale_counter"} <= set(expected)

    _, optimizer, step = build("O2", scaler())
    run_training(step, data(0, half), [Checkpointer(output_dir=str(tmp_path / "b"), period=4, keep=2,
                                                    optimizer=optimizer, max_iter=total, is_main=True)],
                 0, half)
    saved = ms.load_checkpoint(find_resume_checkpoint(str(tmp_path / "b")))
    assert float(saved["train_step.loss_scale"].asnumpy()) != 2.0 ** 20  # the state moved and was saved

    _, optimizer, step = build("O2", scaler(), seed=1)
    start = restore_training_state(step, optimizer, find_resume_checkpoint(str(tmp_path / "b")))
    run_training(step, data(start, total), [Checkpointer(output_dir=str(tmp_path / "b"), period=4, keep=2,
                                                         optimizer=optimizer, max_iter=total, is_main=True)],
                 start, total)
    resumed = state_of(step)
    assert sorted(resumed) == sorted(expected)
    for name in expected:
        assert np.array_equal(resumed[name], expected[name]), name


def test_float32_checkpoint_resumes_with_amp_on(tmp_path):
    _, optimizer, step = build()
    run_training(step, data(0, 2), [Checkpointer(output_dir=str(tmp_path), period=2, keep=2, optimizer=optimizer,
                                                 max_iter=4, is_main=True)], 0, 2)
    _, optimizer, step = build("O2", build_loss_scaler("dynamic"))
    assert restore_training_state(step, optimizer, find_resume_checkpoint(str(tmp_path))) == 2
    assert float(step.loss_scale.asnumpy()) == 2.0 ** 16  # the scaler starts afresh
