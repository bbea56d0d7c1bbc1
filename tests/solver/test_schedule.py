"""Per-step LR (literal arrays) and the device-independent batch rule."""
import numpy as np
import pytest

from defrcn.solver.schedule import effective_schedule, lr_per_step, scale_iterations
from defrcn.errors import InputError


def test_warmup_multistep_literal():
    rates = lr_per_step(0.1, 8, [4, 6], 0.1, 3, 0.001)
    expected = np.array([0.0001, 0.0334, 0.0667, 0.1, 0.01, 0.01, 0.001, 0.001], dtype=np.float32)
    assert rates.dtype == np.float32 and rates.shape == (8,)
    np.testing.assert_allclose(rates, expected, rtol=1e-5)


def test_no_warmup_single_drop_at_step():
    # DeFRCN fine-tune: LR 0.01, no warmup, x0.1 from iteration 4 (= 0.8 x 5) on
    np.testing.assert_allclose(lr_per_step(0.01, 5, [4], 0.1, 0, 0.001),
                               np.array([0.01, 0.01, 0.01, 0.01, 0.001], dtype=np.float32), rtol=1e-6)


def test_constant_warmup_and_unsorted_steps():
    rates = lr_per_step(1.0, 6, [5, 2], 0.5, 2, 0.25, warmup_method="constant")
    np.testing.assert_allclose(rates, [0.25, 0.25, 0.5, 0.5, 0.5, 0.25], rtol=1e-6)


def test_warmup_longer_than_first_step():
    rates = lr_per_step(1.0, 4, [1], 0.1, 4, 0.0)
    np.testing.assert_allclose(rates, [0.0, 0.025, 0.05, 0.075], rtol=1e-6)


def test_bad_warmup_method():
    with pytest.raises(ValueError, match="warmup_method"):
        lr_per_step(0.1, 3, [], 0.1, 1, 0.1, warmup_method="cosine")


COCO_TFA_10SHOT = dict(reference_batch=16, ims_per_batch=16, accumulate=False, base_lr=0.01,
                       max_iter=6000, steps=[4800], warmup_iters=0, checkpoint_period=1000)
VOC_BASE = dict(reference_batch=16, ims_per_batch=16, accumulate=False, base_lr=0.02,
                max_iter=15000, steps=[10000, 13300], warmup_iters=100, checkpoint_period=2500)


@pytest.mark.parametrize("devices, lr, max_iter, steps, checkpoint, eval_period", [
    (1, 0.00125, 48000, [38400], 8000, 4000),
    (2, 0.0025, 24000, [19200], 4000, 2000),
    (8, 0.01, 6000, [4800], 1000, 500),
])
def test_scaled_schedule(devices, lr, max_iter, steps, checkpoint, eval_period):
    s = effective_schedule(COCO_TFA_10SHOT, devices, 2, eval_period=500)
    assert s["base_lr"] == pytest.approx(lr)
    assert (s["max_iter"], s["steps"], s["warmup_iters"]) == (max_iter, steps, 0)
    assert (s["checkpoint_period"], s["eval_period"]) == (checkpoint, eval_period)
    assert s["accumulate_steps"] == 1 and s["total_batch"] == 2 * devices
    assert s["max_iter"] * s["total_batch"] == 6000 * 16  # same number of images


def test_rounding_and_warmup_scaling():
    s = effective_schedule(VOC_BASE, 3, 2)  # batch 6: iterations x 16/6
    assert s["max_iter"] == 40000
    assert s["steps"] == [26667, 35467]
    assert s["warmup_iters"] == 267
    assert s["eval_period"] == 0  # 0 stays "only at the end"
    assert s["base_lr"] == pytest.approx(0.0075)


def test_accumulate_keeps_reference_schedule():
    solver = dict(COCO_TFA_10SHOT, accumulate=True)
    s = effective_schedule(solver, 1, 2)
    assert s["accumulate_steps"] == 8 and s["total_batch"] == 16 and s["micro_batch"] == 2
    assert (s["base_lr"], s["max_iter"], s["steps"]) == (0.01, 6000, [4800])
    assert "8 accumulated" in s["summary"] and "as written" in s["summary"]
    assert effective_schedule(solver, 2, 2)["accumulate_steps"] == 4
    assert effective_schedule(solver, 8, 2)["accumulate_steps"] == 1


def test_accumulate_must_divide():
    with pytest.raises(InputError, match="ims_per_batch 16 is not a multiple of .* = 6"):
        effective_schedule(dict(COCO_TFA_10SHOT, accumulate=True), 3, 2)


def test_accumulate_to_another_total_batch_scales_from_reference():
    s = effective_schedule(dict(COCO_TFA_10SHOT, accumulate=True, ims_per_batch=8), 1, 2)
    assert s["accumulate_steps"] == 4 and s["total_batch"] == 8
    assert s["base_lr"] == pytest.approx(0.005) and s["max_iter"] == 12000


def test_summary_mentions_the_change():
    summary = effective_schedule(COCO_TFA_10SHOT, 1, 2)["summary"]
    assert "LR 0.01 -> 0.00125" in summary and "6000 -> 48000" in summary and "\n" not in summary


def test_bad_batch():
    with pytest.raises(InputError):
        effective_schedule(COCO_TFA_10SHOT, 0, 2)


def test_scale_iterations_edges():
    assert scale_iterations(0, 8.0) == 0
    assert scale_iterations(1, 0.1) == 1
    assert scale_iterations(1, 0.1, minimum=0) == 0


def _plan(**changes):
    solver = dict(reference_batch=16, ims_per_batch=16, base_lr=0.02, max_iter=20, steps=[15], warmup_iters=5,
                  checkpoint_period=10, gamma=0.1, warmup_factor=0.001)
    solver.update(changes)
    return effective_schedule(solver, 8, 2)


def test_schedule_change_is_described_key_by_key():
    from defrcn.solver.schedule import describe_schedule_change, schedule_extras

    stored = schedule_extras(_plan())
    assert stored["schedule.steps"] == "[15]" and stored["schedule.max_iter"] == 20
    assert describe_schedule_change(stored, _plan(), []) is None
    assert describe_schedule_change(stored, _plan(max_iter=30, steps=[15, 25], gamma=0.5), []) == \
        "max_iter 20 -> 30; steps [15] -> [15, 25]; gamma 0.1 -> 0.5"


def test_schedule_change_of_a_checkpoint_with_only_its_lr_list():
    from defrcn.solver.schedule import describe_schedule_change

    old = lr_per_step(0.02, 20, [15], 0.1, 5, 0.001)
    new = lr_per_step(0.02, 30, [18], 0.1, 5, 0.001)
    stored = {"schedule.learning_rate": old}
    assert describe_schedule_change(stored, {}, old) is None
    assert describe_schedule_change(stored, {}, new) == "max_iter 20 -> 30; learning rate of iteration 16 0.002 -> 0.02"
