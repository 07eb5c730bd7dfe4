"""The pure learning-rate maths, checked with numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kit.training.schedules import (
    cycle_end_epochs,
    lr_range,
    one_cycle_lr,
    one_cycle_momentum,
    sgdr_cycle,
    sgdr_lr,
    sgdr_total_epochs,
    smooth_losses,
    suggest_lr,
    suggest_min_div10,
    suggest_steepest,
    suggest_valley,
)


def test_cycle_arithmetic():
    assert sgdr_total_epochs(3, 1, 2) == 7
    assert sgdr_total_epochs(3, 1, 1) == 3
    assert sgdr_total_epochs(2, 2, 3) == 2 + 6
    assert cycle_end_epochs(3, 1, 2) == [1, 3, 7]
    assert cycle_end_epochs(4, 2, 1) == [2, 4, 6, 8]
    # Global steps -> (cycle, step in cycle, cycle length), 10 steps an epoch, cycles of 1, 2, 4 epochs.
    assert sgdr_cycle(0, 10, 1, 2) == (0, 0, 10)
    assert sgdr_cycle(9, 10, 1, 2) == (0, 9, 10)
    assert sgdr_cycle(10, 10, 1, 2) == (1, 0, 20)
    assert sgdr_cycle(29, 10, 1, 2) == (1, 19, 20)
    assert sgdr_cycle(30, 10, 1, 2) == (2, 0, 40)
    assert sgdr_cycle(25, 5, 1, 1) == (5, 0, 5)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_cycle": 0}, {"cycle_len": 0}, {"cycle_mult": 0}, {"cycle_len": 1.5}, {"n_cycle": True}],
)
def test_cycle_arithmetic_rejects_bad_input(kwargs):
    args = {"n_cycle": 3, "cycle_len": 1, "cycle_mult": 2, **kwargs}
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        cycle_end_epochs(**args)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # every cycle starts at base_lr
        (5, 0.05),  # half-way through the first (10-step) cycle
        (10, 0.1),  # restart
        (15, 0.1 * (1 + math.cos(math.pi * 5 / 20)) / 2),  # cycle 2 is 20 steps long
        (30, 0.1),
        (40, 0.1 * (1 + math.cos(math.pi * 10 / 40)) / 2),
    ],
)
def test_sgdr_closed_form(step, expected):
    assert sgdr_lr(step, 0.1, steps_per_epoch=10, cycle_len=1, cycle_mult=2) == pytest.approx(expected, rel=1e-12)


def test_sgdr_min_lr_and_bad_input():
    assert sgdr_lr(0, 0.1, 10, min_lr=0.01) == 0.1
    assert sgdr_lr(5, 0.1, 10, min_lr=0.01) == pytest.approx(0.055)
    assert sgdr_lr(9, 0.1, 10) > 0  # the last step of a cycle is small but not zero
    with pytest.raises(ValueError, match="min_lr=0.2"):
        sgdr_lr(0, 0.1, 10, min_lr=0.2)
    with pytest.raises(ValueError, match="step=-1"):
        sgdr_lr(-1, 0.1, 10)
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        sgdr_lr(0, 0.1, 0)


def test_one_cycle_matches_pytorch_onecyclelr():
    torch = pytest.importorskip("torch")
    total, max_lr = 50, 0.3
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=max_lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total)
    lrs, moms = [], []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        moms.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    ours = [one_cycle_lr(s, total, max_lr) for s in range(total)]
    np.testing.assert_allclose(ours, lrs, rtol=1e-9)
    np.testing.assert_allclose([one_cycle_momentum(s, total) for s in range(total)], moms, rtol=1e-9)


def test_one_cycle_ends_and_bad_input():
    assert one_cycle_lr(0, 100, 1.0) == 1.0 / 25
    assert one_cycle_lr(99, 100, 1.0) == pytest.approx(1.0 / 25 / 1e4)
    assert max(one_cycle_lr(s, 100, 1.0) for s in range(100)) == 1.0
    assert one_cycle_momentum(0, 100) == 0.95 and one_cycle_momentum(99, 100) == 0.95
    assert min(one_cycle_momentum(s, 100) for s in range(100)) == 0.85
    with pytest.raises(ValueError, match="step"):
        one_cycle_lr(100, 100, 1.0)
    with pytest.raises(ValueError, match="pct_start=1.0"):
        one_cycle_lr(0, 100, 1.0, pct_start=1.0)
    with pytest.raises(ValueError, match="max_lr=0"):
        one_cycle_lr(0, 100, 0)
    with pytest.raises(ValueError, match="base_momentum"):
        one_cycle_momentum(0, 100, base_momentum=0.99)


@pytest.mark.parametrize("linear", [False, True])
def test_lr_range_hits_start_and_end_exactly(linear):
    for start, end, n in [(1e-7, 10.0, 100), (1e-5, 1.0, 2), (3e-4, 0.7, 37)]:
        lrs = lr_range(start, end, n, linear)
        assert lrs.shape == (n,)
        assert lrs[0] == start and lrs[-1] == end
        assert np.all(np.diff(lrs) > 0)
    # Exponential: constant ratio; linear: constant difference.
    lrs = lr_range(1e-3, 1e1, 5, linear)
    steps = np.diff(lrs) if linear else lrs[1:] / lrs[:-1]
    np.testing.assert_allclose(steps, steps[0], rtol=1e-12)


def test_lr_range_bad_input_names_argument():
    with pytest.raises(ValueError, match=r"start_lr=1\.0, end_lr=0\.1"):
        lr_range(1.0, 0.1, 10)
    with pytest.raises(ValueError, match="start_lr=0"):
        lr_range(0, 0.1, 10)
    with pytest.raises(ValueError, match="end_lr=-1"):
        lr_range(1e-3, -1, 10)
    with pytest.raises(ValueError, match="num_it=1"):
        lr_range(1e-3, 1, 1)


def test_smooth_losses_is_a_bias_corrected_ema():
    np.testing.assert_allclose(smooth_losses([2.0] * 5), [2.0] * 5)
    losses = [1.0, 3.0, 2.0]
    beta = 0.9
    avg, expected = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        expected.append(avg / (1 - beta ** (i + 1)))
    np.testing.assert_allclose(smooth_losses(losses, beta), expected)
    np.testing.assert_allclose(smooth_losses(losses, 0.0), losses)
    with pytest.raises(ValueError, match="beta=1"):
        smooth_losses(losses, 1.0)


def _u_curve(n=60):
    """Flat, then a descent centred at 1e-2, then a cliff beyond 1: a typical finder curve."""
    lrs = np.geomspace(1e-5, 10.0, n)
    x = np.log10(lrs)
    losses = 1.0 - 0.9 / (1 + np.exp(-3 * (x + 2))) + np.where(x > 0, 5 * x**2, 0)
    return lrs, losses


def test_suggestions_on_a_typical_curve():
    lrs, losses = _u_curve()
    # Steepest descent: the middle of the sigmoid, 1e-2.
    assert suggest_steepest(lrs, losses) == pytest.approx(1e-2, rel=0.3)
    # The minimum is at ~1 (before the cliff): a tenth of it.
    assert suggest_min_div10(lrs, losses) == pytest.approx(lrs[np.argmin(losses)] / 10)
    # The valley starts at the first point and ends at the minimum: half-way is ~ 1e-3.
    valley = suggest_valley(lrs, losses)
    assert 1e-4 < valley < 1e-1
    assert suggest_lr(lrs, losses) == valley
    assert suggest_lr(lrs, losses, "steepest") == suggest_steepest(lrs, losses)


def test_valley_follows_fastai_rule():
    # Longest decreasing run: indices 1..5 (5 points); half-way is index 1 + int(4/3) + int(4/6) = 2.
    lrs = np.geomspace(1e-4, 1.0, 8)
    losses = [0.5, 1.0, 0.9, 0.8, 0.7, 0.6, 3.0, 4.0]
    assert suggest_valley(lrs, losses) == lrs[2]


def test_suggestions_ignore_non_finite_points_and_reject_bad_input():
    lrs, losses = _u_curve()
    with_nan = losses.copy()
    with_nan[-3:] = np.nan
    assert suggest_valley(lrs, with_nan) == suggest_valley(lrs[:-3], losses[:-3])
    with pytest.raises(ValueError, match="method='best'"):
        suggest_lr(lrs, losses, "best")
    with pytest.raises(ValueError, match=r"len\(lrs\)=60, len\(losses\)=59"):
        suggest_valley(lrs, losses[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        suggest_min_div10([1e-3, 1e-2], [np.nan, 1.0])
    with pytest.raises(ValueError, match="lrs"):
        suggest_steepest([0.0, 1e-2], [1.0, 0.5])
