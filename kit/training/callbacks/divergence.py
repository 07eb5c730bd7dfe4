"""Stop at the first non-finite loss, put the weights back as they were at the start of the epoch, raise."""

from __future__ import annotations

import math

import keras
import numpy as np

from kit.training.optimizers import get_learning_rate, sync_model_state
from kit.training.weights import is_finite


class DivergedError(FloatingPointError):
    """Training diverged: the loss became NaN or infinite. The weights were restored."""

    def __init__(self, message: str, epoch: int, lr: float, loss: float):
        super().__init__(message)
        self.epoch, self.lr, self.loss = epoch, lr, loss


def is_diverged(loss: float) -> bool:
    """True when a loss is NaN or infinite."""
    return not math.isfinite(float(loss))


def divergence_message(epoch: int, lr: float, loss: float) -> str:
    """The sentence a person reads: where, at which rate, what was done, what to try."""
    what = "nan" if math.isnan(loss) else "infinite"
    return (
        f"training diverged at epoch {epoch} (lr {lr:g}): the loss became {what}; weights restored to the "
        f"start of the epoch; try a rate 10x lower ({lr / 10:g}) or run lr_find"
    )


def mutable_variables(model: keras.Model) -> list:
    """The variables training can change: those of the trainable leaf layers (weights, BatchNorm
    statistics). A frozen body is skipped, so the per-epoch snapshot stays small (the head's
    weights, not ResNet50's 25M)."""
    seen: set[int] = set()
    out: list = []

    def visit(layer) -> None:
        subs = getattr(layer, "layers", None)
        if subs:
            for sub in subs:
                visit(sub)
            return
        if layer.trainable:
            for v in layer.weights:
                if id(v) not in seen:
                    seen.add(id(v))
                    out.append(v)

    visit(model)
    return out


class DivergenceGuard(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite batch loss and restores the weights of the epoch's start.

    Keras' running mean `logs["loss"]` turns NaN or infinite at the first such batch, so that is the
    batch that stops training. An epoch whose last update left NaN weights behind (its losses were
    all finite, the next one would not be) counts as diverged too. The weights and optimizer
    variables of the epoch's start are assigned back, and `error` holds a `DivergedError`; with
    `raise_error=True` (default) it is raised at the end of `fit`.

    Example:
    >>> model.fit(x, y, epochs=3, callbacks=[DivergenceGuard()])   # DivergedError: training diverged at epoch 1 ...

    Args:
        epoch_offset: Integer. Added to Keras' epoch index in the message (epochs of earlier fits).
        raise_error: Bool. Raise the `DivergedError` from `on_train_end`.
    """

    def __init__(self, epoch_offset: int = 0, raise_error: bool = True):
        super().__init__()
        self.epoch_offset, self.raise_error = int(epoch_offset), bool(raise_error)
        self._reset()

    def _reset(self) -> None:
        self.error: DivergedError | None = None
        self._snapshot = None
        self._mutable: list = []
        self._epoch = 0

    def _values(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        opt = self.model.optimizer
        if self._snapshot is None:
            self._mutable = mutable_variables(self.model)
        return (
            [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in self._mutable],
            [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in (opt.variables if opt is not None else [])],
        )

    def _diverged(self, loss: float) -> None:
        lr = get_learning_rate(self.model) if self.model.optimizer is not None else float("nan")
        epoch = self.epoch_offset + self._epoch
        self.error = DivergedError(divergence_message(epoch, lr, loss), epoch, lr, loss)
        self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        if self._snapshot is None:  # later epochs start from the values checked at the previous end
            self._snapshot = self._values()

    def on_train_batch_end(self, batch, logs=None):
        if self.error is not None or not logs or "loss" not in logs:
            return
        loss = float(np.asarray(keras.ops.convert_to_numpy(logs["loss"])))
        if is_diverged(loss):
            self._diverged(loss)

    def on_epoch_end(self, epoch, logs=None):
        # On JAX the epoch's state is synced by now; syncing again makes sure nothing stale
        # overwrites the restore at the end of fit.
        sync_model_state(self.model)
        if self.error is None:
            values = self._values()
            if all(map(is_finite, values[0])):
                self._snapshot = values  # the start of the next epoch
                return
            self._diverged(float("nan"))  # the epoch's last update left NaN weights behind
            if logs is not None:
                logs["loss"] = float("nan")  # so the table and checkpoints see a diverged epoch
        weights, opt_values = self._snapshot
        for var, value in zip(self._mutable, weights):
            var.assign(value)
        for var, value in zip(self.model.optimizer.variables, opt_values):
            var.assign(value)

    def on_train_end(self, logs=None):
        if self.error is not None and self.raise_error:
            raise self.error
