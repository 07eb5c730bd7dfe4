"""Learning-rate maths as pure functions: SGDR, one-cycle, the LR range test.

The callbacks in `kit.training.callbacks` only call these, so every number a schedule
produces can be checked here without a model.

References:
    - SGDR: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
      Restarts", arXiv:1608.03983.
    - One-cycle: Smith, "Super-Convergence", arXiv:1708.07120 (the formula is
      PyTorch's `OneCycleLR` with cosine annealing).
    - LR range test: Smith, "Cyclical Learning Rates for Training Neural
      Networks", arXiv:1506.01186; the suggestions follow fastai v2's
      `valley`, `steep` and `minimum`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kit.checks import check_choice, check_int, check_number

SUGGESTION_METHODS = ("valley", "steepest", "min_div10")


def _cos_anneal(start: float, end: float, pct: float) -> float:
    """Cosine from `start` (pct=0) to `end` (pct=1); both ends exact."""
    if pct <= 0:
        return start
    if pct >= 1:
        return end
    return end + (start - end) * (1.0 + math.cos(math.pi * pct)) / 2.0


# --------------------------------------------------------------------- SGDR


def _cycle_epochs(cycle_len: int, cycle_mult: int, i: int) -> int:
    return cycle_len * cycle_mult**i


def sgdr_total_epochs(n_cycle: int, cycle_len: int = 1, cycle_mult: int = 1) -> int:
    """Number of epochs that `n_cycle` SGDR cycles take.

    Cycle `i` lasts `cycle_len * cycle_mult**i` epochs, so the lesson's
    `fit(lr, 3, cycle_len=1, cycle_mult=2)` trains 1 + 2 + 4 = 7 epochs.

    Example:
    >>> sgdr_total_epochs(3, cycle_len=1, cycle_mult=2)
    7

    Args:
        n_cycle: Integer >= 1. Number of cycles.
        cycle_len: Integer >= 1. Epochs in the first cycle.
        cycle_mult: Integer >= 1. Each cycle is this many times longer than the one before.
    """
    return cycle_end_epochs(n_cycle, cycle_len, cycle_mult)[-1]


def cycle_end_epochs(n_cycle: int, cycle_len: int = 1, cycle_mult: int = 1) -> list[int]:
    """Epoch counts after which each SGDR cycle ends (1-based, cumulative).

    Example:
    >>> cycle_end_epochs(3, cycle_len=1, cycle_mult=2)
    [1, 3, 7]

    Args:
        n_cycle: Integer >= 1. Number of cycles.
        cycle_len: Integer >= 1. Epochs in the first cycle.
        cycle_mult: Integer >= 1. Growth factor of the cycle length.
    """
    n_cycle = check_int("n_cycle", n_cycle, min=1)
    cycle_len = check_int("cycle_len", cycle_len, min=1)
    cycle_mult = check_int("cycle_mult", cycle_mult, min=1)
    ends, total = [], 0
    for i in range(n_cycle):
        total += _cycle_epochs(cycle_len, cycle_mult, i)
        ends.append(total)
    return ends


def sgdr_cycle(step: int, steps_per_epoch: int, cycle_len: int = 1, cycle_mult: int = 1) -> tuple[int, int, int]:
    """Where a global step falls in SGDR: `(cycle_index, step_in_cycle, cycle_steps)`.

    Args:
        step: Integer >= 0. Global batch index since the start of training.
        steps_per_epoch: Integer >= 1. Batches per epoch.
        cycle_len: Integer >= 1. Epochs in the first cycle.
        cycle_mult: Integer >= 1. Growth factor of the cycle length.
    """
    step = check_int("step", step, min=0)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, min=1)
    cycle_len = check_int("cycle_len", cycle_len, min=1)
    cycle_mult = check_int("cycle_mult", cycle_mult, min=1)
    first = cycle_len * steps_per_epoch
    if cycle_mult == 1:
        # Equal cycles: closed form, so a long run does not loop.
        return step // first, step % first, first
    i, length = 0, first
    while step >= length:
        step -= length
        i += 1
        length *= cycle_mult
    return i, step, length


def sgdr_lr(
    step: int,
    base_lr: float,
    steps_per_epoch: int,
    cycle_len: int = 1,
    cycle_mult: int = 1,
    min_lr: float = 0.0,
) -> float:
    """Cosine annealing with warm restarts (SGDR, arXiv:1608.03983).

    Within a cycle of `T` steps the rate at step `t` (0-based) is
    `min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2`: it starts at
    `base_lr` and falls towards `min_lr`; the next cycle restarts at `base_lr`.
    Cycle `i` lasts `cycle_len * cycle_mult**i` epochs.

    Example:
    >>> sgdr_lr(0, 0.1, steps_per_epoch=10)
    0.1
    >>> round(sgdr_lr(5, 0.1, steps_per_epoch=10), 6)
    0.05

    Args:
        step: Integer >= 0. Global batch index since the start of training.
        base_lr: Float >= 0. Rate at the start of every cycle.
        steps_per_epoch: Integer >= 1. Batches per epoch.
        cycle_len: Integer >= 1. Epochs in the first cycle.
        cycle_mult: Integer >= 1. Growth factor of the cycle length.
        min_lr: Float in [0, base_lr]. Floor of the cosine.
    """
    base_lr = check_number("base_lr", base_lr, min=0)
    if not (check_number("min_lr", min_lr, min=0) <= base_lr):
        raise ValueError(f"`min_lr` must be in [0, base_lr={base_lr}]. Received min_lr={min_lr!r}")
    _, t, length = sgdr_cycle(step, steps_per_epoch, cycle_len, cycle_mult)
    return _cos_anneal(float(base_lr), float(min_lr), t / length)


# ---------------------------------------------------------------- one-cycle


def _one_cycle_phase(step: int, total_steps: int, pct_start: float) -> tuple[int, float]:
    """(phase, pct) as PyTorch's OneCycleLR: phase 0 rises until step pct_start*total-1."""
    step = check_int("step", step, min=0)
    total_steps = check_int("total_steps", total_steps, min=2)
    pct_start = check_number("pct_start", pct_start, min=0, max=1, min_open=True, max_open=True)
    if step >= total_steps:
        raise ValueError(f"`step` must be < total_steps={total_steps}. Received step={step}")
    end_up = float(pct_start * total_steps) - 1
    end_down = float(total_steps - 1)
    if step <= end_up:
        return 0, (step / end_up if end_up > 0 else 1.0)
    return 1, (step - end_up) / (end_down - end_up)


def one_cycle_lr(
    step: int,
    total_steps: int,
    max_lr: float,
    div: float = 25.0,
    pct_start: float = 0.3,
    final_div: float = 1e4,
) -> float:
    """The one-cycle learning rate (Smith, arXiv:1708.07120; PyTorch's OneCycleLR).

    Cosine from `max_lr / div` up to `max_lr` over the first `pct_start` of the
    steps, then cosine down to `max_lr / div / final_div` at the last step.

    Example:
    >>> one_cycle_lr(0, 100, max_lr=1.0)
    0.04
    >>> one_cycle_lr(99, 100, max_lr=1.0)
    4e-06

    Args:
        step: Integer in [0, total_steps). Global batch index.
        total_steps: Integer >= 2. Length of the whole cycle in batches.
        max_lr: Float > 0. Peak rate.
        div: Float > 0. The starting rate is `max_lr / div`.
        pct_start: Float in (0, 1). Fraction of steps spent rising.
        final_div: Float > 0. The last rate is `max_lr / div / final_div`.
    """
    max_lr = check_number("max_lr", max_lr, min=0, min_open=True)
    div = check_number("div", div, min=0, min_open=True)
    final_div = check_number("final_div", final_div, min=0, min_open=True)
    initial = max_lr / div
    phase, pct = _one_cycle_phase(step, total_steps, pct_start)
    if phase == 0:
        return _cos_anneal(initial, max_lr, pct)
    return _cos_anneal(max_lr, initial / final_div, pct)


def one_cycle_momentum(
    step: int,
    total_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
) -> float:
    """The one-cycle momentum: the mirror image of `one_cycle_lr`.

    Cosine from `max_momentum` down to `base_momentum` while the rate rises,
    then back up to `max_momentum` while it falls.

    Example:
    >>> one_cycle_momentum(0, 100)
    0.95

    Args:
        step: Integer in [0, total_steps). Global batch index.
        total_steps: Integer >= 2. Length of the whole cycle in batches.
        base_momentum: Float in [0, 1]. Momentum at the peak rate.
        max_momentum: Float in [base_momentum, 1]. Momentum at both ends.
        pct_start: Float in (0, 1). Fraction of steps spent rising.
    """
    if not 0 <= base_momentum <= max_momentum <= 1:
        raise ValueError(
            "One-cycle momentum needs 0 <= base_momentum <= max_momentum <= 1. "
            f"Received base_momentum={base_momentum!r}, max_momentum={max_momentum!r}"
        )
    phase, pct = _one_cycle_phase(step, total_steps, pct_start)
    if phase == 0:
        return _cos_anneal(max_momentum, base_momentum, pct)
    return _cos_anneal(base_momentum, max_momentum, pct)


# ------------------------------------------------------------ LR range test


def lr_range(start_lr: float, end_lr: float, num_it: int, linear: bool = False) -> np.ndarray:
    """The rates an LR range test tries: `num_it` values from `start_lr` to `end_lr`.

    Exponential (evenly spaced in log) by default, or linear. Both ends are hit
    exactly: the first value is `start_lr` and the last is `end_lr`.

    Example:
    >>> lr_range(1e-3, 1e-1, 3)
    array([0.001, 0.01 , 0.1  ])

    Args:
        start_lr: Float > 0. First rate.
        end_lr: Float > start_lr. Last rate.
        num_it: Integer >= 2. Number of rates.
        linear: Bool. Linear spacing instead of exponential.
    """
    start_lr = check_number("start_lr", start_lr, min=0, min_open=True)
    end_lr = check_number("end_lr", end_lr, min=0, min_open=True)
    if start_lr >= end_lr:
        raise ValueError(f"`start_lr` must be < `end_lr`. Received start_lr={start_lr!r}, end_lr={end_lr!r}")
    num_it = check_int("num_it", num_it, min=2)
    lrs = np.linspace(start_lr, end_lr, num_it) if linear else np.geomspace(start_lr, end_lr, num_it)
    # Both numpy functions pin the ends; set them again so that holds on any numpy.
    lrs[0], lrs[-1] = start_lr, end_lr
    return lrs


def smooth_losses(losses: Sequence[float] | np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponential moving average of a loss sequence.

    `avg_i = beta * avg_{i-1} + (1 - beta) * loss_i`, reported as
    `avg_i / (1 - beta**(i + 1))` so the first values are not pulled towards 0.
    A non-finite loss makes every later value non-finite, as it should: the
    range test stops there.

    Example:
    >>> smooth_losses([1.0, 1.0, 1.0])
    array([1., 1., 1.])

    Args:
        losses: 1-D sequence of floats.
        beta: Float in [0, 1). Weight of the past; 0 returns the losses unchanged.
    """
    beta = check_number("beta", beta, min=0, max=1, max_open=True)
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    out = np.empty_like(losses)
    avg = 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out[i] = avg / (1 - beta ** (i + 1))
    return out


def _finite_curve(lrs, losses) -> tuple[np.ndarray, np.ndarray]:
    """Validated float arrays, with points whose loss is NaN/inf dropped."""
    lrs = np.asarray(lrs, dtype=np.float64).reshape(-1)
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    if lrs.shape != losses.shape:
        raise ValueError(
            f"`lrs` and `losses` must have the same length. Received len(lrs)={lrs.size}, len(losses)={losses.size}"
        )
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"`lrs` must all be finite and > 0. Received lrs={lrs!r}")
    keep = np.isfinite(losses)
    if keep.sum() < 2:
        raise ValueError(
            "A learning-rate suggestion needs at least 2 points with a finite loss. "
            f"Received {int(keep.sum())} of {losses.size}"
        )
    return lrs[keep], losses[keep]


def suggest_valley(lrs, losses) -> float:
    """Rate half-way down the longest valley of the loss curve (fastai v2's `valley`).

    The valley is the longest strictly decreasing subsequence of the losses
    (not necessarily contiguous), from its first to its last point; the
    suggestion is the rate at about half its length. It sits where the loss is
    still falling well, away from both the flat start and the cliff.

    Example:
    >>> suggest_valley([1e-4, 1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.5, 0.4, 2.0])
    0.001

    Args:
        lrs: 1-D sequence of rates > 0.
        losses: 1-D sequence of (smoothed) losses, same length; NaN/inf points are ignored.
    """
    lrs, losses = _finite_curve(lrs, losses)
    n = losses.size
    # lds[i]: length of the longest decreasing subsequence ending at i.
    lds = np.ones(n, dtype=np.int64)
    for i in range(1, n):
        higher = losses[:i] > losses[i]
        if higher.any():
            lds[i] = lds[:i][higher].max() + 1
    end = int(np.argmax(lds))  # first index of the longest
    start = end - int(lds[end]) + 1
    sections = (end - start) / 3
    idx = start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def suggest_steepest(lrs, losses) -> float:
    """Rate where the loss falls fastest against log(rate) (fastai v2's `steep`).

    The slope between consecutive points is `(loss_{i+1} - loss_i) / (log lr_{i+1}
    - log lr_i)`; the suggestion is the rate at the start of the most negative one.

    Example:
    >>> suggest_steepest([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.2, 2.0])
    0.01

    Args:
        lrs: 1-D sequence of rates > 0, increasing.
        losses: 1-D sequence of (smoothed) losses, same length; NaN/inf points are ignored.
    """
    lrs, losses = _finite_curve(lrs, losses)
    dlog = np.diff(np.log(lrs))
    if np.any(dlog <= 0):
        raise ValueError("`lrs` must be strictly increasing for suggest_steepest.")
    return float(lrs[int(np.argmin(np.diff(losses) / dlog))])


def suggest_min_div10(lrs, losses) -> float:
    """A tenth of the rate with the lowest loss (fastai's `minimum`).

    At the minimum the rate is already about to be too high; one order of
    magnitude lower is a safe choice.

    Example:
    >>> suggest_min_div10([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.9, 0.2, 2.0])
    0.01

    Args:
        lrs: 1-D sequence of rates > 0.
        losses: 1-D sequence of (smoothed) losses, same length; NaN/inf points are ignored.
    """
    lrs, losses = _finite_curve(lrs, losses)
    return float(lrs[int(np.argmin(losses))] / 10)


def suggest_lr(lrs, losses, method: str = "valley") -> float:
    """A learning rate picked from an LR range test curve.

    Example:
    >>> suggest_lr([1e-3, 1e-2, 1e-1, 1.0], [1.0, 0.8, 0.5, 2.0], method="min_div10")
    0.01

    Args:
        lrs: 1-D sequence of rates > 0.
        losses: 1-D sequence of (smoothed) losses, same length.
        method: String. One of "valley" (default, `suggest_valley`), "steepest"
            (`suggest_steepest`) or "min_div10" (`suggest_min_div10`).
    """
    funcs = {"valley": suggest_valley, "steepest": suggest_steepest, "min_div10": suggest_min_div10}
    check_choice("method", method, SUGGESTION_METHODS)
    return funcs[method](lrs, losses)
