"""A checkpoint at the end of every epoch, written atomically, from which training continues exactly.

One file, `<directory>/last.npz`, holds the learner's `state_dict()`: every variable of its model
(weights, BatchNorm statistics, the random-seed states of dropout and augmentation layers) and of
the optimizer the fit uses (step count, momentum, rate, loss scale) as arrays, and a JSON record of
the rest (epochs done, where inside the fit training stands, the history, global random states)
beside the job's own facts (e.g. the stage and the rate). It is built in memory and written with
`kit.io.atomic_write`, so an interruption or a full disk never leaves half a checkpoint: the
previous one stays. `read_checkpoint` gives back what `ConvLearner.load_state_dict` takes.

Example:

```python
learn.fit(1e-2, 3, callbacks=[EpochCheckpoint("runs/r1/checkpoint", learn, facts={"stage": 0})])
learn.load_state_dict(read_checkpoint("runs/r1/checkpoint"))  # in a new process: the same fit continues
learn.fit(1e-2, 3)
```
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np

from kit.io import NPZ_READ_ERRORS, atomic_write, finite_json, npz_read_error
from kit.training.weights import is_finite

CHECKPOINT_FILE = "last.npz"
# 2: the learner's state_dict (arrays "model_<i>", "opt_<i>"; the rest JSON). The first format, before
# learners had a state of their own, held the caller's stage and epoch; it cannot be continued.
CHECKPOINT_FORMAT = 2
ARRAYS = {"model": "model_", "optimizer": "opt_"}


class HasState(Protocol):
    """What `EpochCheckpoint` saves: anything whose `state_dict()` is numpy arrays and JSON facts (a ConvLearner)."""

    def state_dict(self) -> dict[str, Any]: ...


def checkpoint_file(directory: str | os.PathLike) -> Path:
    """The checkpoint file inside a run's checkpoint folder."""
    return Path(directory) / CHECKPOINT_FILE


def write_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Writes a learner's state (and any JSON facts beside it) as one checkpoint file, atomically.

    Args:
        directory: String or Path. The checkpoint folder (created when missing).
        state: dict. `learn.state_dict()`, optionally with more JSON-able keys: "model" and
            "optimizer" are lists of numpy arrays ("optimizer" may be None), everything else is JSON.

    Returns:
        The path written.

    Raises:
        OSError: the disk is full or the folder cannot be written (the previous checkpoint stays).
    """
    record = {k: v for k, v in state.items() if k not in ARRAYS}
    arrays, counts = {}, {}
    for key, prefix in ARRAYS.items():
        values = state.get(key)
        counts[key] = None if values is None else len(values)
        arrays.update({f"{prefix}{i}": np.asarray(a) for i, a in enumerate(values or [])})
    record.update(format=CHECKPOINT_FORMAT, arrays=counts)
    arrays["state"] = np.array(json.dumps(finite_json(record), allow_nan=False))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(checkpoint_file(directory), buf.getvalue())


class CheckpointError(ValueError):
    """A checkpoint file that is missing, empty or cannot be read; the message names it and says what to do."""


@contextlib.contextmanager
def _open_checkpoint(directory: str | os.PathLike) -> Iterator[tuple[dict[str, Any], Any]]:
    """(the JSON record, the open npz) of a checkpoint; any read error inside the block names the file."""
    path = checkpoint_file(directory)
    if not path.is_file():
        raise CheckpointError(
            f"No checkpoint {path}: no epoch finished in that run (or its first checkpoint write was "
            "interrupted), so there is nothing to resume. Start a new run without --resume."
        )
    try:
        # allow_pickle=False: a checkpoint holds plain arrays and one JSON string, never objects to unpickle.
        with np.load(path, allow_pickle=False) as z:
            record = json.loads(str(z["state"]))
            if not isinstance(record, dict):
                raise CheckpointError(f"The checkpoint {path} holds no training state: it was not written by kit.")
            if record.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(
                    f"The checkpoint {path} was written by an older kit (format {record.get('format', 1)}; this kit "
                    f"reads format {CHECKPOINT_FORMAT}, the learner's state_dict), so it cannot be continued. "
                    "Start a new run without --resume."
                )
            yield record, z
    except NPZ_READ_ERRORS as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(
            f"The checkpoint {path} cannot be read ({npz_read_error(e)}): it is truncated or damaged. "
            f"Resume another run, or start a new one without --resume."
        ) from e


def read_checkpoint_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON record of the last checkpoint alone (the npz reads only that member, not the weights):
    the learner's facts ("epochs_done", "position", "history", ...) and the job's ("facts").

    Raises:
        CheckpointError: no checkpoint, or one that cannot be read (the message names the file).
    """
    with _open_checkpoint(directory) as (record, _):
        return record


def read_checkpoint(directory: str | os.PathLike) -> dict[str, Any]:
    """The last checkpoint as `ConvLearner.load_state_dict` takes it (the job's facts under "facts").

    Raises:
        CheckpointError: no checkpoint, or one that cannot be read (the message names the file).
    """
    with _open_checkpoint(directory) as (record, z):
        state = {k: v for k, v in record.items() if k not in ("format", "arrays")}
        counts = record.get("arrays") or {}
        for key, prefix in ARRAYS.items():
            n = counts.get(key)
            # Every member is read here, inside the error handling: a truncated file fails now, not mid-resume.
            state[key] = None if n is None else [np.array(z[f"{prefix}{i}"]) for i in range(int(n))]
        return state


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes the learner's `state_dict()` after every epoch, with the job's facts beside it.

    An epoch whose loss is not finite is never saved (the last good checkpoint stays). The learner
    records each finished epoch before the callbacks passed to `fit` run, so the state written is
    the one at the end of this epoch; `learn.load_state_dict(read_checkpoint(directory))` and the
    same `fit` continue the run exactly.

    Args:
        directory: String or Path. Folder of the checkpoint file (created when first written).
        learner: ConvLearner (anything with `state_dict()`). Whose state to save.
        facts: dict or None. JSON facts of the caller saved with each checkpoint (e.g. the stage and the
            rate); `read_checkpoint` gives them back under "facts".
    """

    def __init__(self, directory: str | os.PathLike, learner: HasState, facts: dict | None = None):
        super().__init__()
        self.directory, self.learner, self.facts = Path(directory), learner, dict(facts or {})
        self.last_epoch: int | None = None

    @property
    def path(self) -> Path:
        return checkpoint_file(self.directory)

    def on_train_begin(self, logs=None):
        self.last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # a diverged epoch: keep the last good checkpoint
        state = self.learner.state_dict()
        if not all(map(is_finite, state["model"])):
            return  # the epoch's last update diverged: never checkpoint NaN weights
        write_checkpoint(self.directory, {**state, "facts": self.facts})
        self.last_epoch = state["history"][-1]["epoch"]
