"""The metrics Kaggle scores by: the one implementation every job, report and submission score uses.

Accuracy and log loss are pure numpy; ROC AUC, micro-F1 and quadratic weighted kappa are scikit-learn's
(imported when first used). `METRICS` names each with how it reads its input and which way is better,
and `score(name, y, probs)` computes any of them from (N, c) probabilities.

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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "LOG_LOSS_EPS",
    "METRICS",
    "SKLEARN_EPS",
    "Metric",
    "accuracy",
    "f1_micro",
    "log_loss",
    "log_losses",
    "nll",
    "quadratic_kappa",
    "roc_auc",
    "score",
    "true_class_probs",
]

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


def _predicted(pred: np.ndarray | list) -> np.ndarray:
    """Labels from labels (N,) or from (N, c) scores (their argmax)."""
    pred = np.asarray(pred)
    return pred.argmax(axis=1) if pred.ndim == 2 else pred


def roc_auc(y: np.ndarray | list, probs: np.ndarray) -> float:
    """The area under the ROC curve of a binary problem (scikit-learn's `roc_auc_score`): `probs` are
    (N, 2) probabilities or (N,) probabilities of class 1. NaN when only one class is present (no curve)."""
    from sklearn.metrics import roc_auc_score

    probs = np.asarray(probs, dtype=np.float64)
    y = _labels(y, len(probs))
    if probs.ndim == 2:
        if probs.shape[1] != 2:
            raise ValueError(f"roc_auc is for two classes; received probabilities of {probs.shape[1]} classes.")
        probs = probs[:, 1]
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, probs))


def f1_micro(y: np.ndarray | list, pred: np.ndarray | list) -> float:
    """Micro-averaged F1 of single-label predictions (scikit-learn's `f1_score(average="micro")`); for one
    label per row it equals accuracy, as Kaggle's plant seedlings leaderboard shows. NaN for no rows."""
    from sklearn.metrics import f1_score

    pred = _predicted(pred)
    y = _labels(y, len(pred))
    return float(f1_score(y, pred, average="micro")) if len(y) else float("nan")


def quadratic_kappa(y: np.ndarray | list, pred: np.ndarray | list, n_classes: int | None = None) -> float:
    """Cohen's kappa with quadratic weights (scikit-learn's `cohen_kappa_score(weights="quadratic")`), for
    ordered classes 0..c-1 (APTOS' grades): a miss by two grades costs four times a miss by one. `n_classes`
    (default: (N, c) scores' c) fixes the grid so an absent grade still counts. NaN for no rows or one grade."""
    from sklearn.metrics import cohen_kappa_score

    pred_arr = np.asarray(pred)
    if n_classes is None and pred_arr.ndim == 2:
        n_classes = pred_arr.shape[1]
    pred_arr = _predicted(pred_arr)
    y = _labels(y, len(pred_arr))
    labels = list(range(n_classes)) if n_classes is not None else None
    if len(y) == 0 or (len(np.unique(y)) < 2 and len(np.unique(pred_arr)) < 2):
        return float("nan")
    return float(cohen_kappa_score(y, pred_arr, weights="quadratic", labels=labels))


@dataclass(frozen=True)
class Metric:
    """How one metric is computed from (N, c) probabilities and integer labels, and which way is better."""

    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    higher_is_better: bool
    on_probabilities: bool  # scored on probabilities (log loss, AUC), not on the predicted class


METRICS: dict[str, Metric] = {
    "log_loss": Metric("log_loss", lambda y, p: log_loss(y, p), False, True),
    "accuracy": Metric("accuracy", accuracy, True, False),
    "roc_auc": Metric("roc_auc", roc_auc, True, True),
    "f1_micro": Metric("f1_micro", f1_micro, True, False),
    "quadratic_kappa": Metric("quadratic_kappa", quadratic_kappa, True, False),
}


def score(name: str, y: np.ndarray | list, probs: np.ndarray) -> float:
    """The metric `name` (a key of METRICS) of (N, c) probabilities against integer labels.

    Example:

    ```python
    score("roc_auc", y, probs)   # e.g. 0.991
    ```
    """
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}: choose one of {', '.join(METRICS)}.")
    return METRICS[name].fn(np.asarray(y), np.asarray(probs))


def figures(y: np.ndarray | list, probs: np.ndarray, metric: str | None = None) -> dict[str, float]:
    """Accuracy and log loss of (N, c) probabilities, and the metric `metric` under its name when it is
    another: what a run, a baseline and a CV fold report."""
    out = {"accuracy": accuracy(y, probs), "log_loss": log_loss(y, probs)}
    if metric is not None and metric not in out:
        out[metric] = score(metric, y, probs)
    return out


def clip_rows(probs: np.ndarray, eps: float) -> np.ndarray:
    """Each row clipped to [eps, 1 - eps], then divided by its sum (as Kaggle does before scoring): the
    probabilities a log-loss submission holds. For 2 classes, the same as clipping P(1)."""
    p = np.clip(probs, eps, 1 - eps)
    return p / p.sum(axis=1, keepdims=True)
