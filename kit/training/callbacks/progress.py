"""The lesson's epoch table (`epoch trn_loss val_loss accuracy`) with a progress bar inside each epoch."""

from __future__ import annotations

import keras
from tqdm.auto import tqdm

HEADER = f"{'epoch':>5}  {'trn_loss':>9}  {'val_loss':>9}  {'accuracy':>9}"


def format_row(epoch: int, trn_loss: float, val_loss: float | None, accuracy: float | None) -> str:
    """One table row; a missing validation value prints as '-'."""

    def cell(v: float | None) -> str:
        return f"{v:9.5f}" if v is not None else f"{'-':>9}"

    return f"{epoch:>5}  {cell(trn_loss)}  {cell(val_loss)}  {cell(accuracy)}"


def epoch_row(epoch: int, logs: dict) -> dict:
    """One epoch's table row from Keras' epoch logs."""
    return {
        "epoch": epoch,
        "trn_loss": float(logs["loss"]) if "loss" in logs else float("nan"),
        "val_loss": float(logs["val_loss"]) if "val_loss" in logs else None,
        "accuracy": float(logs["val_accuracy"]) if "val_accuracy" in logs else None,
    }


class EpochTable(keras.callbacks.Callback):
    """Prints the header once, a bar while an epoch runs, then the epoch's row; keeps `rows`.

    Args:
        start_epoch: int. Number shown for the first epoch (rows continue across `fit` calls).
        show: bool. Print at all (False keeps only `rows`).
        title: str or None. A line printed above the header: where the epochs run
            (e.g. "2 × Tesla T4, jax, mixed_float16").
    """

    def __init__(self, start_epoch: int = 0, show: bool = True, title: str | None = None):
        super().__init__()
        self.start_epoch, self.show, self.title = start_epoch, show, title
        self.rows: list[dict] = []
        self._bar = None

    def on_train_begin(self, logs=None):
        self.rows = []
        if self.show:
            if self.title:
                tqdm.write(self.title)
            tqdm.write(HEADER)

    def on_epoch_begin(self, epoch, logs=None):
        if self.show:
            self._bar = tqdm(
                total=self.params.get("steps"), leave=False, unit="batch", desc=f"epoch {self.start_epoch + epoch}"
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            if logs and "loss" in logs:
                self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        row = epoch_row(self.start_epoch + epoch, logs or {})
        self.rows.append(row)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.show:
            tqdm.write(format_row(row["epoch"], row["trn_loss"], row["val_loss"], row["accuracy"]))

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
