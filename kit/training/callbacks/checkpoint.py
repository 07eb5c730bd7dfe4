"""A checkpoint at the end of every epoch, written atomically, from which training continues exactly.

One file, `<directory>/last.npz`, holds every variable of the learner's model (weights, BatchNorm
statistics, the random-seed states of dropout and augmentation layers), the optimizer's variables
(step count, momentum, rate) and a JSON record of where training stands (the caller's `state`, the
epochs finished and their table rows). It is built in memory and written with `kit.io.atomic_write`,
so an interruption or a full disk never leaves half a checkpoint: the previous one stays.

Example:

```python
ckpt = EpochCheckpoint("runs/r1/checkpoint", variables_of=learn.model, state={"stage": 0})
learn.fit(1e-2, 3, callbacks=[ckpt])
state, model_values, opt_values = read_checkpoint("runs/r1/checkpoint")
```
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from kit.io import NPZ_READ_ERRORS, atomic_write, finite_json, npz_read_error
from kit.training.callbacks.progress import epoch_row
from kit.training.optimizers import sync_model_state
from kit.training.weights import is_finite

CHECKPOINT_FILE = "last.npz"


def rng_state() -> dict[str, Any]:
    """Global random states a resumed run must carry on (JSON-able).

    Keras' own layers keep their seeds in variables, saved with the model; but on torch an unseeded
    Dropout draws from torch's global generator, which is saved here.
    """
    if keras.backend.backend() != "torch":
        return {}
    import torch

    out = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available():
        out["torch_cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Puts back what `rng_state` saved (nothing to do on other backends)."""
    if not state or keras.backend.backend() != "torch":
        return
    import torch

    def tensor(text: str):
        return torch.from_numpy(np.frombuffer(base64.b64decode(text), dtype=np.uint8).copy())

    if "torch" in state:
        torch.set_rng_state(tensor(state["torch"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(t) for t in state["torch_cuda"]])


def checkpoint_file(directory: str | os.PathLike) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def _values(variables) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def write_checkpoint(
    directory: str | os.PathLike, state: dict[str, Any], model_values: list[np.ndarray], opt_values: list[np.ndarray]
) -> Path:
    """Writes one checkpoint file atomically (built in memory, then ordinary file I/O)."""
    arrays = {f"model_{i}": a for i, a in enumerate(model_values)}
    arrays.update({f"opt_{i}": a for i, a in enumerate(opt_values)})
    arrays["state"] = np.array(json.dumps(finite_json(state), allow_nan=False))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(checkpoint_file(directory), buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint file that is missing, empty or cannot be read; the message names it and says what to do."""


@contextlib.contextmanager
def _open_checkpoint(directory: str | os.PathLike) -> Iterator[tuple[dict[str, Any], Any]]:
    """(the JSON state, the open npz) of a checkpoint; any read error inside the block names the file."""
    path = checkpoint_file(directory)
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint {path}: no epoch finished in that run (or its first checkpoint write was "
            "interrupted), so there is nothing to resume. Start a new run without --resume."
        )
    try:
        # allow_pickle=False: a checkpoint holds plain arrays and one JSON string, never objects to unpickle.
        with np.load(path, allow_pickle=False) as z:
            state = json.loads(str(z["state"]))
            if not isinstance(state, dict):
                raise CheckpointError(f"The checkpoint {path} holds no training state: it was not written by kit.")
            yield state, z
    except NPZ_READ_ERRORS as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({npz_read_error(e)}): it is truncated or damaged. "
            f"Resume another run, or start a new one without --resume."
        ) from e


def read_checkpoint_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of the last checkpoint alone (the npz reads only that member, not the weights).

    Raises:
        CheckpointError: no checkpoint, or one that cannot be read (the message names the file).
    """
    with _open_checkpoint(directory) as (state, _):
        return state


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict[str, Any], list[np.ndarray], list[np.ndarray]]:
    """(state, model variable values, optimizer variable values) of the last checkpoint.

    Raises:
        CheckpointError: no checkpoint, or one that cannot be read (the message names the file).
    """
    with _open_checkpoint(directory) as (state, z):
        n_model = sum(1 for k in z.files if k.startswith("model_"))
        n_opt = sum(1 for k in z.files if k.startswith("opt_"))
        # Every member is read here, inside the error handling: a truncated file fails now, not mid-resume.
        return (
            state,
            [np.array(z[f"model_{i}"]) for i in range(n_model)],
            [np.array(z[f"opt_{i}"]) for i in range(n_opt)],
        )


def assign_values(variables, values: list[np.ndarray], what: str) -> None:
    """Assigns saved values to variables, refusing a checkpoint of another model."""
    variables = list(variables)
    if len(variables) != len(values) or any(tuple(v.shape) != tuple(a.shape) for v, a in zip(variables, values)):
        raise ValueError(
            f"The checkpoint's {what} do not match this model ({len(values)} saved, {len(variables)} here): "
            "it was written by another architecture, size or configuration."
        )
    for var, value in zip(variables, values):
        var.assign(value)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the learner's variables, the optimizer's and where training stands after every epoch.

    An epoch whose loss is not finite is never saved (the last good checkpoint stays). With
    `restore=(model_values, opt_values)` the values are assigned at the start of `fit`, after the
    optimizer is built: that and `fit(initial_epoch=...)` continue an interrupted run exactly.

    Args:
        directory: String or Path. Folder of the checkpoint file (created when first written).
        variables_of: keras.Model or None. Whose variables to save (default: the model being fit);
            a learner passes its whole model while it fits only the head.
        state: dict. JSON facts saved with each checkpoint (e.g. the stage and the rate).
        start_epoch: Integer. Number of the fit's first epoch in the table rows.
        history: list of dict. Table rows of earlier epochs, saved in front of this fit's rows.
        restore: (model values, optimizer values, random states) or None: what `read_checkpoint`
            read, assigned in `on_train_begin`.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        variables_of: keras.Model | None = None,
        state: dict | None = None,
        start_epoch: int = 0,
        history: list[dict] | None = None,
        restore: tuple[list, list] | None = None,
    ):
        super().__init__()
        self.directory = Path(directory)
        self.variables_of, self.state = variables_of, dict(state or {})
        self.start_epoch, self.history, self.restore = int(start_epoch), list(history or []), restore
        self.rows: list[dict] = []
        self.last_epoch: int | None = None

    @property
    def path(self) -> Path:
        return checkpoint_file(self.directory)

    def on_train_begin(self, logs=None):
        self.rows, self.last_epoch = [], None
        if self.restore is not None:
            model_values, opt_values, rng = (*self.restore, {})[:3]
            sync_model_state(self.model)
            assign_values((self.variables_of or self.model).variables, model_values, "model variables")
            assign_values(self.model.optimizer.variables, opt_values, "optimizer variables")
            set_rng_state(rng)
            self.restore = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # a diverged epoch: keep the last good checkpoint
        sync_model_state(self.model)
        model_values, opt_values = (
            _values((self.variables_of or self.model).variables),
            _values(self.model.optimizer.variables),
        )
        if not all(map(is_finite, model_values)):
            return  # the epoch's last update diverged: never checkpoint NaN weights
        self.rows.append(epoch_row(self.start_epoch + epoch, logs))
        state = {**self.state, "epoch": epoch + 1, "history": self.history + self.rows, "rng": rng_state()}
        write_checkpoint(self.directory, state, model_values, opt_values)
        self.last_epoch = self.start_epoch + epoch
