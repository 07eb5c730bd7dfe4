"""Accuracy and log loss: the one implementation every job, report and submission score uses.

Pure numpy on (N, c) probabilities (or a binary competition's (N,) probabilities of the positive
class) and integer labels. The log loss is the mean cross-entropy of the true class, that class's
probability clipped to `[eps, 1]` first, so that one confident mistake (p = 0) costs `-log(eps)`
instead of infinity. Kaggle clips at 1e-15; scikit-learn (1.3+) at the float64 machine epsilon,
which `SKLEARN_EPS` names for the callers that have always agreed with it.

Example:

```python
accuracy(y, probs), log_loss(y, probs)  # e.g. (0.995, 0.0181)
nll(y, log_probs)                       # the same log loss, from log-probabilities (no clip needed)
```
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOG_LOSS_EPS", "SKLEARN_EPS", "accuracy", "log_loss", "log_losses", "nll", "true_class_probs"]

LOG_LOSS_EPS = 1e-15  # Kaggle's clip: a p = 0 costs log(1e15) = 34.5
SKLEARN_EPS = float(np.finfo(np.float64).eps)  # scikit-learn's clip for float64 probabilities


def _labels(y: np.ndarray | list, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be a 1-D array of {n} labels, one per row of probs. Received shape {y.shape}.")
    return y


def true_class_probs(y: np.ndarray | list, probs: np.ndarray) -> np.ndarray:
    """Each row's probability of its true class: probs[i, y[i]] for (N, c) probabilities; p or 1 - p
    for a binary competition's (N,) probabilities of class 1."""
    probs = np.asarray(probs)
    y = _labels(y, len(probs))
    if probs.ndim == 1:
        return np.where(y == 1, probs, 1 - probs)
    return probs[np.arange(len(y)), y.astype(np.int64)]


def log_losses(y: np.ndarray | list, probs: np.ndarray, eps: float = LOG_LOSS_EPS) -> np.ndarray:
    """The cross-entropy of each row, -log(p_true clipped to [eps, 1]): what the model paid for it."""
    return -np.log(np.clip(true_class_probs(y, probs), eps, 1.0))


def log_loss(y: np.ndarray | list, probs: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """The mean of `log_losses`; NaN for no rows."""
    return float(np.mean(log_losses(y, probs, eps))) if len(probs) else float("nan")


def nll(y: np.ndarray | list, log_probs: np.ndarray) -> float:
    """The log loss from (N, c) log-probabilities, as the model outputs them (finite without a clip)."""
    log_probs = np.asarray(log_probs)
    y = _labels(y, len(log_probs))
    return float(-np.mean(log_probs[np.arange(len(y)), y.astype(np.int64)]))


def accuracy(y: np.ndarray | list, pred: np.ndarray | list) -> float:
    """The fraction of rows predicted right: `pred` holds labels (N,), or (N, c) scores whose argmax is
    the prediction (probabilities or log-probabilities); NaN for no rows."""
    pred = np.asarray(pred)
    y = _labels(y, len(pred))
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    return float(np.mean(pred == y)) if len(y) else float("nan")
