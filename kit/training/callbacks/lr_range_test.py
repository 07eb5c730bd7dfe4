"""The learning-rate range test (Smith, arXiv:1506.01186) as a Keras callback."""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np

from kit._compat import loss_tracker
from kit.checks import check_int, check_number
from kit.training.optimizers import schedule_error, set_learning_rate, sync_model_state
from kit.training.schedules import lr_range, suggest_lr

# The test stops once the smoothed loss exceeds this multiple of its best (fastai's rule).
DIVERGENCE_FACTOR = 4.0
# Fewer finite points than this before the loss diverges: the curve has no valley to read.
MIN_POINTS = 5


def points_before_divergence(losses: list[float], stop_reason: str | None) -> int | None:
    """Finite losses recorded before the test stopped on divergence; None when it did not diverge.

    Example:
    >>> points_before_divergence([2.3, 2.2, float("nan")], "non-finite")
    2
    """
    if stop_reason not in ("diverged", "non-finite"):
        return None
    # The last point is the one that diverged (4x the best, or NaN/inf after it).
    return sum(1 for x in losses[:-1] if math.isfinite(x))


def epochs_needed(num_it: int, steps_per_epoch: int) -> int:
    """Epochs `fit` must run so that an `LRRangeTest` sees `num_it` batches.

    Example:
    >>> epochs_needed(100, 30)
    4

    Args:
        num_it: Integer >= 1. Batches the test needs.
        steps_per_epoch: Integer >= 1. Batches per epoch.
    """
    num_it = check_int("num_it", num_it, min=1)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, min=1)
    return -(-num_it // steps_per_epoch)


class LRRangeTest(keras.callbacks.Callback):
    """Learning-rate range test: raise the rate every batch and record the loss.

    The rate grows exponentially (or linearly) from `start_lr` to `end_lr`
    over `num_it` batches. For each batch it records the rate and that batch's
    own loss; Keras' `logs["loss"]` is the running mean of the epoch so far
    (tensorflow#58098, keras#17167), which flattens the curve, so the batch
    loss is recovered from the loss tracker's running total and count (or, for
    a custom `train_step` without it, by differencing the running means).
    The losses are smoothed with a bias-corrected moving average; the test
    stops after `num_it` batches, or when the smoothed loss exceeds 4x its best
    or turns NaN/inf. At the end the weights, the optimizer's variables and its
    rate are restored bit for bit, so the test leaves no trace on the model.

    Example:
    >>> finder = LRRangeTest(num_it=100)
    >>> model.fit(x, y, epochs=epochs_needed(100, steps_per_epoch), callbacks=[finder])
    >>> finder.suggestion(), finder.plot()

    Args:
        start_lr: Float > 0. First rate.
        end_lr: Float > start_lr. Last rate.
        num_it: Integer >= 2. Batches in the test.
        linear: Bool. Linear instead of exponential growth.
        beta: Float in [0, 1). Smoothing of the loss curve.
        stop_div: Bool. Stop when the loss diverges.
        restore: Bool. Restore weights, optimizer state and rate at the end.
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_it: int = 100,
        linear: bool = False,
        beta: float = 0.98,
        stop_div: bool = True,
        restore: bool = True,
    ):
        super().__init__()
        self.schedule = lr_range(start_lr, end_lr, num_it, linear)  # validates all three
        check_number("beta", beta, min=0, max=1, max_open=True)
        self.start_lr, self.end_lr, self.num_it = float(start_lr), float(end_lr), int(num_it)
        self.linear, self.beta = bool(linear), float(beta)
        self.stop_div, self.restore = bool(stop_div), bool(restore)
        self._reset()

    def _reset(self) -> None:
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.iterations: list[int] = []
        self.best_loss = math.inf
        self.stop_reason: str | None = None  # "num_it", "diverged", "non-finite" or None
        self._avg = 0.0
        self._snapshot = None
        self._new_epoch()

    def _new_epoch(self) -> None:
        # Keras resets its metrics at every epoch start; so does our differencing.
        self._prev_total, self._prev_count = 0.0, 0.0
        self._prev_mean, self._epoch_calls = 0.0, 0

    # ------------------------------------------------------------ Keras hooks

    def on_train_begin(self, logs=None):
        self._reset()
        error = schedule_error(self.model.optimizer)
        if error is not None:
            raise error
        if self.restore:
            sync_model_state(self.model)
            opt = self.model.optimizer
            self._snapshot = (
                [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in self.model.weights],
                [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in opt.variables],
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._new_epoch()

    def on_train_batch_begin(self, batch, logs=None):
        set_learning_rate(self.model, self.schedule[len(self.lrs)])

    def on_train_batch_end(self, batch, logs=None):
        logs = logs if logs is not None else {}
        sync_model_state(self.model)
        lr = float(self.schedule[len(self.lrs)])
        loss = self._batch_loss(logs)
        self._avg = self.beta * self._avg + (1 - self.beta) * loss
        smooth = self._avg / (1 - self.beta ** (len(self.lrs) + 1))
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(smooth)
        self.iterations.append(len(self.iterations))
        logs["learning_rate"] = lr
        if math.isfinite(smooth):
            self.best_loss = min(self.best_loss, smooth)

        if not math.isfinite(loss) and len(self.lrs) == 1:
            # Nothing can be learnt from a curve that starts at NaN: stop whatever stop_div says.
            self.stop_reason = "non-finite"
            warnings.warn(
                f"LRRangeTest: the loss was {loss} at the very first batch (lr={lr:g}); the model or "
                "the data is broken, not the learning rate. The test stopped"
                + (" and the weights and optimizer were restored." if self.restore else "."),
                RuntimeWarning,
                stacklevel=2,
            )
        elif self.stop_div and not math.isfinite(smooth):
            self.stop_reason = "non-finite"
        elif self.stop_div and smooth > DIVERGENCE_FACTOR * self.best_loss:
            self.stop_reason = "diverged"
        elif len(self.lrs) >= self.num_it:
            self.stop_reason = "num_it"
        if self.stop_reason is not None:
            self.model.stop_training = True

    @property
    def reliable(self) -> bool:
        """False when the loss diverged after fewer than MIN_POINTS finite points: no curve to read."""
        n = points_before_divergence(self.losses, self.stop_reason)
        return n is None or n >= MIN_POINTS

    def on_train_end(self, logs=None):
        n = points_before_divergence(self.losses, self.stop_reason)
        if n is not None and n < MIN_POINTS and len(self.lrs) > 1:
            warnings.warn(
                f"LRRangeTest: the loss diverged after only {n} finite point(s) (at lr={self.lrs[-1]:g}); the "
                f"suggestion is a guess. Start lower: start_lr={self.start_lr / 100:g}.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self.stop_reason is None and len(self.lrs) < self.num_it:
            warnings.warn(
                f"LRRangeTest: the data ended after {len(self.lrs)} of num_it={self.num_it} batches. "
                "Run fit for more epochs (see kit.training.callbacks.lr_range_test.epochs_needed) or lower num_it.",
                RuntimeWarning,
                stacklevel=2,
            )
        if self._snapshot is not None:
            # Sync first so the JAX trainer's end-of-fit sync cannot overwrite the restore.
            sync_model_state(self.model)
            weights, opt_values = self._snapshot
            for var, value in zip(self.model.weights, weights):
                var.assign(value)
            for var, value in zip(self.model.optimizer.variables, opt_values):
                var.assign(value)
            self._snapshot = None

    # -------------------------------------------------------------- the loss

    def _batch_loss(self, logs) -> float:
        """This batch's own loss (the mean over its samples), not the epoch's running mean."""
        self._epoch_calls += 1
        tracker = loss_tracker(self.model)
        if tracker is not None:
            total = float(keras.ops.convert_to_numpy(tracker.total))
            count = float(keras.ops.convert_to_numpy(tracker.count))
            if count > self._prev_count:
                # The tracker sums loss * batch_size and batch_size; the differences
                # are this batch's, exactly up to float32 rounding of the total.
                loss = (total - self._prev_total) / (count - self._prev_count)
                self._prev_total, self._prev_count = total, count
                self._prev_mean = float(np.asarray(keras.ops.convert_to_numpy(logs.get("loss", loss))))
                return loss
        if "loss" not in logs:
            raise ValueError(
                "LRRangeTest needs the training loss in the batch logs: compile the model with a loss. "
                f"Received logs with keys {sorted(logs)}"
            )
        # A custom train_step that bypasses the tracker: difference the running means,
        # exact when the batches of the epoch have equal size.
        mean = float(np.asarray(keras.ops.convert_to_numpy(logs["loss"])))
        i = self._epoch_calls
        loss = mean * i - self._prev_mean * (i - 1)
        self._prev_mean = mean
        return loss

    # ----------------------------------------------------- results and plots

    def _curve(self, n_skip: int | None, n_skip_end: int | None) -> tuple[np.ndarray, np.ndarray]:
        """(lrs, smoothed) without the first n_skip and last n_skip_end points."""
        lrs, smoothed = np.asarray(self.lrs), np.asarray(self.smoothed)
        n = lrs.size
        start = n // 10 if n_skip is None else check_int("n_skip", n_skip, min=0)
        end = 5 if n_skip_end is None else check_int("n_skip_end", n_skip_end, min=0)
        if n - start - end < 2:
            # Too short a run to trim: keep everything rather than nothing.
            start, end = 0, 0
        return lrs[start : n - end], smoothed[start : n - end]

    def suggestion(self, method: str = "valley", n_skip: int | None = None, n_skip_end: int | None = None) -> float:
        """A learning rate from the recorded curve (see `kit.training.schedules.suggest_lr`).

        Args:
            method: String. "valley" (default), "steepest" or "min_div10".
            n_skip: Integer or None. Points dropped at the start (default: a tenth).
            n_skip_end: Integer or None. Points dropped at the end (default 5).
        """
        if len(self.lrs) < 2:
            raise ValueError(
                f"LRRangeTest recorded {len(self.lrs)} batch(es); a suggestion needs at least 2. "
                "Run fit with the callback first."
            )
        lrs, smoothed = self._curve(n_skip, n_skip_end)
        return suggest_lr(lrs, smoothed, method)

    def _axes(self, ax, figsize):
        if ax is not None:
            return ax.figure, ax
        from matplotlib.figure import Figure  # lazily: `import kit` stays light

        # A bare Figure, not pyplot: no global state, nothing shown; Jupyter's
        # inline backend renders a returned Figure, and fig.savefig writes a PNG.
        fig = Figure(figsize=figsize)
        return fig, fig.add_subplot()

    def plot_lr(self, ax=None, figsize: tuple[float, float] = (6, 4)):
        """Learning rate against iteration; returns the matplotlib Figure.

        Args:
            ax: Matplotlib Axes or None (a new Figure).
            figsize: Tuple. Size of a new Figure in inches.
        """
        fig, ax = self._axes(ax, figsize)
        ax.plot(self.iterations, self.lrs)
        if not self.linear:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("learning rate")
        return fig

    def plot(
        self,
        n_skip: int = 10,
        n_skip_end: int = 5,
        ax=None,
        suggestion: bool | str = True,
        figsize: tuple[float, float] = (6, 4),
    ):
        """Smoothed loss against learning rate (log x); returns the matplotlib Figure.

        Args:
            n_skip: Integer. Points dropped at the start (the flat, noisy beginning).
            n_skip_end: Integer. Points dropped at the end (the cliff).
            ax: Matplotlib Axes or None (a new Figure).
            suggestion: Bool or method name. Mark the suggested rate ("valley" when True).
            figsize: Tuple. Size of a new Figure in inches.
        """
        fig, ax = self._axes(ax, figsize)
        lrs, smoothed = self._curve(n_skip, n_skip_end)
        ax.plot(lrs, smoothed)
        ax.set_xscale("log")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("loss (smoothed)")
        if suggestion and lrs.size >= 2:
            method = suggestion if isinstance(suggestion, str) else "valley"
            try:
                lr = suggest_lr(lrs, smoothed, method)
            except ValueError:
                lr = None  # e.g. fewer than 2 finite points: a plot without a mark
            if lr is not None:
                y = float(np.interp(np.log(lr), np.log(lrs), smoothed))
                ax.plot([lr], [y], "o", color="red", label=f"{method}: {lr:.2e}")
                ax.legend()
        return fig
