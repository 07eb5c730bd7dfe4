"""The lesson's epoch table (`epoch trn_loss val_loss accuracy`) with a progress bar inside each epoch.

With a competition's metric (`kit.metrics.METRICS`) the table gains its column after `accuracy`:
`epoch  trn_loss  val_loss  accuracy  roc_auc`.
"""

from __future__ import annotations

import keras
from tqdm.auto import tqdm

from kit.checks import check_choice
from kit.metrics import METRICS

# Metrics the lesson's columns already show (val_loss is the log loss): no second column for them.
SHOWN_METRICS = ("log_loss", "accuracy")
CELL = 9  # a column's width: "-0.12345" and the lesson's headers fit


def _extra(metric: str | None) -> str | None:
    """The metric that gets its own column: None without one or for one already shown."""
    return None if metric in SHOWN_METRICS else metric


def header(metric: str | None = None) -> str:
    """The table's header line, with the metric's column when it has one."""
    line = f"{'epoch':>5}  {'trn_loss':>{CELL}}  {'val_loss':>{CELL}}  {'accuracy':>{CELL}}"
    metric = _extra(metric)
    return line if metric is None else f"{line}  {metric:>{CELL}}"


HEADER = header()


def _cell(v: float | None, width: int = CELL) -> str:
    return f"{v:{width}.5f}" if v is not None else f"{'-':>{width}}"


def format_row(
    epoch: int,
    trn_loss: float,
    val_loss: float | None,
    accuracy: float | None,
    metric: str | None = None,
    value: float | None = None,
) -> str:
    """One table row; a missing validation value prints as '-'.

    Args:
        metric: str or None. The metric whose column `header(metric)` shows; None: the lesson's columns.
        value: float or None. Its figure for this epoch.
    """
    line = f"{epoch:>5}  {_cell(trn_loss)}  {_cell(val_loss)}  {_cell(accuracy)}"
    metric = _extra(metric)
    return line if metric is None else f"{line}  {_cell(value, max(CELL, len(metric)))}"


def epoch_row(epoch: int, logs: dict, metric: str | None = None) -> dict:
    """One epoch's table row from Keras' epoch logs; with a metric, its `val_<metric>` under `<metric>`."""
    row = {
        "epoch": epoch,
        "trn_loss": float(logs["loss"]) if "loss" in logs else float("nan"),
        "val_loss": float(logs["val_loss"]) if "val_loss" in logs else None,
        "accuracy": float(logs["val_accuracy"]) if "val_accuracy" in logs else None,
    }
    metric = _extra(metric)
    if metric is not None:
        key = f"val_{metric}"
        row[metric] = float(logs[key]) if key in logs else None
    return row


class EpochTable(keras.callbacks.Callback):
    """Prints the header once, a bar while an epoch runs, then the epoch's row; keeps `rows`.

    Example:
        table = EpochTable(metric="roc_auc")  # epoch  trn_loss  val_loss  accuracy  roc_auc
        model.fit(x, y, validation_data=(xv, yv), callbacks=[table], verbose=0)

    Args:
        start_epoch: int. Number shown for the first epoch (rows continue across `fit` calls).
        show: bool. Print at all (False keeps only `rows`).
        title: str or None. A line printed above the header: where the epochs run
            (e.g. "2 × Tesla T4, jax, mixed_float16").
        metric: str or None. A key of `kit.metrics.METRICS`: its column (after `accuracy`) shows the
            logs' `val_<metric>`, kept in each row under `<metric>`. "log_loss" and "accuracy" are
            the lesson's `val_loss` and `accuracy` columns already.
    """

    def __init__(self, start_epoch: int = 0, show: bool = True, title: str | None = None, metric: str | None = None):
        super().__init__()
        if metric is not None:
            check_choice("metric", metric, METRICS, prefix="EpochTable's ")
        self.start_epoch, self.show, self.title, self.metric = start_epoch, show, title, metric
        self.rows: list[dict] = []
        self._bar = None

    def on_train_begin(self, logs=None):
        self.rows = []
        if self.show:
            if self.title:
                tqdm.write(self.title)
            tqdm.write(header(self.metric))

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
        row = epoch_row(self.start_epoch + epoch, logs or {}, self.metric)
        self.rows.append(row)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.show:
            extra = _extra(self.metric)
            value = row[extra] if extra is not None else None
            tqdm.write(format_row(row["epoch"], row["trn_loss"], row["val_loss"], row["accuracy"], self.metric, value))

    def on_train_end(self, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
