"""The pieces of a learner's state that are not plain facts: variable values and global random states.

`ConvLearner.state_dict()` is built from these (numpy arrays and JSON-able values only), and
`ConvLearner.load_state_dict()` puts them back; the checkpoint callback only writes and reads the result.

Example:

```python
values = variable_values(learn.model.variables)
assign_values(learn.model.variables, values, "model variables")  # refuses another model's values
```
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np


def variable_values(variables: Iterable) -> list[np.ndarray]:
    """Copies of the variables' values as numpy arrays (not views of device memory)."""
    return [np.array(keras.ops.convert_to_numpy(v), copy=True) for v in variables]


def assign_values(variables: Iterable, values: list[np.ndarray], what: str) -> None:
    """Assigns saved values to variables, refusing values of another model.

    Args:
        variables: iterable of keras.Variable. Where the values go, in order.
        values: list of numpy arrays. One per variable, of its shape.
        what: str. What the values are, for the message (e.g. "model variables").

    Raises:
        ValueError: the count or a shape differs (the message names the first difference).
    """
    variables = list(variables)
    values = list(values)
    if len(variables) != len(values):
        raise ValueError(
            f"The state's {what} do not match this learner ({len(values)} saved, {len(variables)} here): "
            "it was saved by another architecture, size or configuration."
        )
    for i, (var, value) in enumerate(zip(variables, values)):
        if tuple(var.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"The state's {what} do not match this learner: variable {i} ({var.path}) has shape "
                f"{tuple(var.shape)} here, {tuple(np.shape(value))} saved: it was saved by another "
                "architecture, size or configuration."
            )
    for var, value in zip(variables, values):
        var.assign(value)


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
