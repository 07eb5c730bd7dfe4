"""SGDR: cosine annealing with warm restarts (Loshchilov & Hutter, arXiv:1608.03983)."""

from __future__ import annotations

from collections.abc import Callable

import keras

from kit.checks import check_int, check_number
from kit.training.optimizers import get_learning_rate, set_learning_rate, sync_model_state
from kit.training.schedules import sgdr_cycle, sgdr_lr

WEIGHTS_SUFFIX = ".weights.h5"  # what keras.Model.save_weights insists on


def steps_per_epoch_of(callback: keras.callbacks.Callback, given: int | None) -> int:
    """The batches per epoch a schedule callback works with: `given`, else fit's own count."""
    steps = given if given is not None else (callback.params or {}).get("steps")
    if steps is None:
        raise ValueError(
            f"{type(callback).__name__} needs the number of batches per epoch, and fit does not know it "
            "for this data (e.g. a generator). Pass steps_per_epoch= to the callback. Received steps_per_epoch=None"
        )
    return check_int("steps_per_epoch", steps, min=1)


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """`model.save_weights(path)`, built in memory and written atomically (see `kit.training.weights`)."""
    from kit.training.weights import save_weights

    save_weights(model, path)


class SGDR(keras.callbacks.Callback):
    """Cosine annealing with warm restarts, set every batch.

    Cycle `i` lasts `cycle_len * cycle_mult**i` epochs; within it the rate falls
    from `base_lr` to `min_lr` along a half cosine (`kit.training.schedules.sgdr_lr`),
    then restarts. With `fit(epochs=kit.training.schedules.sgdr_total_epochs(3, 1, 2))`
    that is the lesson's `fit(lr, 3, cycle_len=1, cycle_mult=2)`: 1 + 2 + 4 = 7
    epochs. At the end of each cycle it can save the weights and call a hook.

    Example:
    >>> sgdr = SGDR(0.01, cycle_len=1, cycle_mult=2, cycle_save_name="models/cyc_{cycle}.weights.h5")
    >>> model.fit(x, y, epochs=7, callbacks=[sgdr])

    Args:
        base_lr: Float >= 0 or None. Rate at each restart; None takes the optimizer's rate at train start.
        cycle_len: Integer >= 1. Epochs in the first cycle.
        cycle_mult: Integer >= 1. Growth factor of the cycle length.
        min_lr: Float >= 0. Floor of the cosine.
        steps_per_epoch: Integer or None. Batches per epoch; None uses fit's count.
        cycle_save_name: String or None. Weights path written at each cycle end; `{cycle}` is
            replaced by the cycle index (0-based). Must end in ".weights.h5".
        on_cycle_end: Callable or None. Called as `on_cycle_end(cycle_index)` at each cycle end.
    """

    def __init__(
        self,
        base_lr: float | None = None,
        cycle_len: int = 1,
        cycle_mult: int = 1,
        min_lr: float = 0.0,
        steps_per_epoch: int | None = None,
        cycle_save_name: str | None = None,
        on_cycle_end: Callable[[int], object] | None = None,
    ):
        super().__init__()
        check_number("base_lr", base_lr, min=0, none_ok=True)
        check_number("min_lr", min_lr, min=0)
        if cycle_save_name is not None and not str(cycle_save_name).endswith(WEIGHTS_SUFFIX):
            raise ValueError(
                f"`cycle_save_name` must end in {WEIGHTS_SUFFIX!r} (Keras' rule for weights files). "
                f"Received cycle_save_name={cycle_save_name!r}"
            )
        if on_cycle_end is not None and not callable(on_cycle_end):
            raise ValueError(f"`on_cycle_end` must be callable. Received on_cycle_end={on_cycle_end!r}")
        self.base_lr = base_lr
        self.cycle_len = check_int("cycle_len", cycle_len, min=1)
        self.cycle_mult = check_int("cycle_mult", cycle_mult, min=1)
        self.min_lr = float(min_lr)
        self.steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch, min=1)
        self.cycle_save_name = cycle_save_name
        self.on_cycle_end = on_cycle_end
        self._reset()

    def _reset(self) -> None:
        self.history: list[float] = []  # the rate of every batch, in order
        self.saved: list[str] = []  # weights files written at cycle ends
        self._epoch, self._lr, self._base, self._spe = 0, None, None, None

    def on_train_begin(self, logs=None):
        self._reset()
        self._spe = steps_per_epoch_of(self, self.steps_per_epoch)
        self._base = self.base_lr if self.base_lr is not None else get_learning_rate(self.model)
        if self.min_lr > self._base:
            raise ValueError(f"`min_lr` must be <= base_lr={self._base}. Received min_lr={self.min_lr}")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch * self._spe + batch
        self._lr = sgdr_lr(step, self._base, self._spe, self.cycle_len, self.cycle_mult, self.min_lr)
        set_learning_rate(self.model, self._lr)
        self.history.append(self._lr)

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self._lr is not None:
            logs["learning_rate"] = self._lr

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._lr is not None:
            logs["learning_rate"] = self._lr
        # The next epoch's first step opens a new cycle exactly when this epoch closed one.
        cycle, t, _ = sgdr_cycle((epoch + 1) * self._spe, self._spe, self.cycle_len, self.cycle_mult)
        if t != 0:
            return
        ended = cycle - 1
        if self.cycle_save_name is not None:
            sync_model_state(self.model)
            path = str(self.cycle_save_name).format(cycle=ended)
            save_weights_atomically(self.model, path)
            self.saved.append(path)
        if self.on_cycle_end is not None:
            self.on_cycle_end(ended)
