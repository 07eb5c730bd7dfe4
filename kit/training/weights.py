"""Saving weights so that a full disk is an ordinary error: the HDF5 is built in memory, then written.

`keras.Model.save_weights` lets HDF5 write the file itself; when the disk fills mid-write, HDF5 reports
an error and the half-closed file can later crash the process (SIGSEGV on the next garbage
collection, killing a notebook kernel). Here Keras' own weights writer (`H5IOStore`, which accepts an
`io.BytesIO`) fills a buffer, and the bytes go to disk with ordinary file I/O through
`kit.io.atomic_write`: a failure is an `OSError` naming the folder, the temporary file is removed and
the previous file stays intact. The result loads with `model.load_weights`.

Example:

```python
save_weights(model, "models/224_all.weights.h5")   # refuses NaN weights; OSError if the disk is full
```
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import keras
import numpy as np

from kit._compat import save_weights_h5
from kit.io import atomic_write, is_no_room, no_room_error


class NonFiniteWeightsError(FloatingPointError):
    """The weights hold NaN or infinity: saving them would only hide a diverged run."""


def weights_bytes(model: keras.Model) -> bytes:
    """The model's `.weights.h5` file, built in memory by Keras' own writer."""
    if not model.built:
        raise ValueError(f"Cannot save the weights of {model.name}: the model is not built yet.")
    buf = io.BytesIO()
    save_weights_h5(model, buf)
    return buf.getvalue()


def is_finite(a: np.ndarray) -> bool:
    """Whether a variable's values hold no NaN or infinity (integer counters always do)."""
    return not np.issubdtype(a.dtype, np.floating) or bool(np.all(np.isfinite(a)))


def non_finite_weights(model: keras.Model) -> list[str]:
    """Paths of the model's weights that hold NaN or infinity (empty when all are finite)."""
    return [v.path for v in model.weights if not is_finite(np.asarray(keras.ops.convert_to_numpy(v)))]


def check_finite(model: keras.Model, what: str = "the weights") -> None:
    """Raises NonFiniteWeightsError naming the first bad weights."""
    bad = non_finite_weights(model)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteWeightsError(
            f"Refusing to save {what}: {len(bad)} weight tensor(s) hold NaN or infinity ({shown}), so training "
            "diverged. Load earlier weights, or train again with a lower rate (or run lr_find)."
        )


def save_weights(model: keras.Model, path: str | os.PathLike) -> Path:
    """Writes `model`'s weights to `path` (a `.weights.h5`) atomically, refusing non-finite weights.

    Raises:
        NonFiniteWeightsError: a weight is NaN or infinite; nothing is written.
        OSError: the disk is full (or another write error); the message names the folder, no
            temporary file is left and an existing file at `path` is unchanged.
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"A weights file must end in '.weights.h5' (what model.load_weights reads). Received {path}.")
    check_finite(model, f"the weights {path.name}")
    data = weights_bytes(model)
    try:
        atomic_write(path, data)
    except OSError as e:
        if is_no_room(e):  # before the write (not enough free), or during it (the disk filled, a size limit)
            raise no_room_error(e, path.parent, f"the weights {path.name}", need=len(data)) from e
        raise OSError(
            e.errno,
            f"Could not write the weights {path.name} ({len(data)} bytes) in {path.parent}: "
            f"{e.strerror or e}. The previous file, if any, is unchanged; free some space or save elsewhere.",
        ) from e
    return path
