"""The lesson's bare functions, which act on the Interpretation that `learn.interpret()` made last.

fast.ai's lesson 1 calls `most_by_correct(1, False)` and `plot_val_with_title(idxs, title)` with no
object in front: the notebook's globals held the predictions. Here that one piece of state lives in
this module, and only here; `Interpretation` itself keeps none.

Example:

```python
interp = learn.interpret()                                   # becomes the current interpretation
plot_val_with_title(most_by_correct(1, False), "Most incorrect dogs")
```
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pyplot and the analysis room load only when a function is called
    import numpy as np
    from matplotlib.figure import Figure

    from kit.analysis.interpretation import Interpretation

_current: Interpretation | None = None


def use(interp: Interpretation | None) -> Interpretation | None:
    """Makes `interp` the one the bare functions act on (`learn.interpret()` calls this); returns it."""
    global _current
    _current = interp
    return interp


def current_interpretation() -> Interpretation:
    """The Interpretation the bare functions act on; RuntimeError if there is none yet."""
    if _current is None:
        raise RuntimeError(
            "There are no predictions to look at yet: call learn.interpret() "
            "(or kit.lesson.use(Interpretation.from_learner(learn))) first."
        )
    return _current


def rand_by_correct(is_correct: bool, n: int = 4, seed: int | None = None) -> np.ndarray:
    """`Interpretation.rand_by_correct` on the current interpretation."""
    return current_interpretation().rand_by_correct(is_correct, n=n, seed=seed)


def most_by_correct(y: int | str, is_correct: bool, n: int = 4) -> np.ndarray:
    """`Interpretation.most_by_correct` on the current interpretation."""
    return current_interpretation().most_by_correct(y, is_correct, n=n)


def most_uncertain(n: int = 4) -> np.ndarray:
    """`Interpretation.most_uncertain` on the current interpretation."""
    return current_interpretation().most_uncertain(n=n)


def top_losses(n: int | None = None) -> np.ndarray:
    """`Interpretation.top_losses` on the current interpretation."""
    return current_interpretation().top_losses(n=n)


def plot_val_with_title(idxs: Sequence[int] | np.ndarray, title: str, **kwargs: Any) -> Figure:
    """`Interpretation.plot_val_with_title` on the current interpretation."""
    return current_interpretation().plot_val_with_title(idxs, title, **kwargs)


def plot_confusion_matrix(normalize: bool = False, **kwargs: Any) -> Figure:
    """`Interpretation.plot_confusion_matrix` on the current interpretation."""
    return current_interpretation().plot_confusion_matrix(normalize=normalize, **kwargs)


def plot_top_losses(n: int = 9, **kwargs: Any) -> Figure:
    """`Interpretation.plot_top_losses` on the current interpretation."""
    return current_interpretation().plot_top_losses(n=n, **kwargs)
