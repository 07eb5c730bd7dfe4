"""The one-cycle policy (Smith, arXiv:1708.07120) for the rate and the momentum."""

from __future__ import annotations

import warnings

import keras

from kit.checks import check_int
from kit.training.callbacks.sgdr import steps_per_epoch_of
from kit.training.optimizers import inner_optimizer, set_learning_rate, set_momentum
from kit.training.schedules import one_cycle_lr, one_cycle_momentum


class OneCycle(keras.callbacks.Callback):
    """One cycle: the rate rises then falls, the momentum does the opposite.

    The rate follows `kit.training.schedules.one_cycle_lr` (PyTorch's OneCycleLR with
    cosine annealing), set every batch. The momentum follows
    `one_cycle_momentum`; it can only change inside a compiled step for the
    optimizers of `kit.training.optimizers.make_optimizer` (which keep SGD's momentum or
    Adam's `beta_1` in a variable). For other optimizers only the rate cycles,
    with a warning. After `total_steps` the rate stays at its final value.

    Example:
    >>> model.compile(make_optimizer("sgd", 0.01, momentum=0.95), "mse")
    >>> model.fit(x, y, epochs=3, callbacks=[OneCycle(max_lr=0.1)])

    Args:
        max_lr: Float > 0. Peak rate.
        total_steps: Integer >= 2 or None. Batches in the cycle; None is epochs * steps of the fit.
        div: Float > 0. The starting rate is `max_lr / div`.
        pct_start: Float in (0, 1). Fraction of the cycle spent rising.
        final_div: Float > 0. The last rate is `max_lr / div / final_div`.
        base_momentum: Float. Momentum at the peak rate.
        max_momentum: Float. Momentum at both ends.
        cycle_momentum: Bool. Cycle the momentum as well.
        steps_per_epoch: Integer or None. Batches per epoch; None uses fit's count.
    """

    def __init__(
        self,
        max_lr: float,
        total_steps: int | None = None,
        div: float = 25.0,
        pct_start: float = 0.3,
        final_div: float = 1e4,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
        cycle_momentum: bool = True,
        steps_per_epoch: int | None = None,
    ):
        super().__init__()
        self.total_steps = None if total_steps is None else check_int("total_steps", total_steps, min=2)
        # Validate every argument now, through the pure functions, rather than mid-fit.
        one_cycle_lr(0, self.total_steps or 2, max_lr, div, pct_start, final_div)
        one_cycle_momentum(0, self.total_steps or 2, base_momentum, max_momentum, pct_start)
        self.max_lr, self.div, self.pct_start, self.final_div = (
            float(max_lr),
            float(div),
            float(pct_start),
            float(final_div),
        )
        self.base_momentum, self.max_momentum = float(base_momentum), float(max_momentum)
        self.cycle_momentum = bool(cycle_momentum)
        self.steps_per_epoch = None if steps_per_epoch is None else check_int("steps_per_epoch", steps_per_epoch, min=1)
        self._reset()

    def _reset(self) -> None:
        self.lrs: list[float] = []
        self.momentums: list[float] = []
        self._epoch, self._spe, self._total, self._lr, self._momentum_ok = 0, None, None, None, False

    def on_train_begin(self, logs=None):
        self._reset()
        self._spe = steps_per_epoch_of(self, self.steps_per_epoch)
        epochs = (self.params or {}).get("epochs") or 1
        self._total = self.total_steps or check_int("total_steps", epochs * self._spe, min=2)
        self._momentum_ok = (
            self.cycle_momentum
            and getattr(inner_optimizer(self.model.optimizer), "momentum_variable", None) is not None
        )
        if self.cycle_momentum and not self._momentum_ok:
            warnings.warn(
                f"OneCycle: {type(self.model.optimizer).__name__} keeps its momentum as a constant of the "
                "compiled step, so only the learning rate cycles. Use kit.training.optimizers.make_optimizer "
                "(non-zero momentum) to cycle the momentum too, or pass cycle_momentum=False.",
                RuntimeWarning,
                stacklevel=2,
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        step = min(self._epoch * self._spe + batch, self._total - 1)
        self._lr = one_cycle_lr(step, self._total, self.max_lr, self.div, self.pct_start, self.final_div)
        set_learning_rate(self.model, self._lr)
        self.lrs.append(self._lr)
        if self._momentum_ok:
            mom = one_cycle_momentum(step, self._total, self.base_momentum, self.max_momentum, self.pct_start)
            set_momentum(self.model, mom)
            self.momentums.append(mom)

    def on_train_batch_end(self, batch, logs=None):
        if logs is not None and self._lr is not None:
            logs["learning_rate"] = self._lr

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._lr is not None:
            logs["learning_rate"] = self._lr
