"""Looking at the results: the lesson's selections, metrics and plots of validation predictions.

"The first thing to do after building a model is to find a way to visualise what it has built"
(fast.ai 2018, lesson 1). An `Interpretation` holds the validation files, their true labels and the
predicted probabilities; it needs no model, so it can be built from any saved predictions.

Example:

```python
interp = learn.interpret()        # or Interpretation.from_learner(learn, tta=True)
plot_val_with_title(most_by_correct(0, False), "Most incorrect cats")
interp.plot_confusion_matrix(normalize=True).savefig("cm.png")
```

The lesson's bare functions (`most_by_correct(...)`, `plot_val_with_title(...)`) live in `kit.lesson`
and act on the Interpretation that `learn.interpret()` made last; this module keeps no global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError

from kit import metrics
from kit.checks import check_int

__all__ = ["Interpretation"]

# Rows of `probs` come from a softmax (or an average of several); a float32 softmax over 1000
# classes sums to 1 within ~1e-5, so anything further off is not a probability distribution.
PROB_SUM_ATOL = 1e-3
# Clipping keeps the loss of a confidently wrong prediction finite (the same eps as scikit-learn).
LOSS_EPS = metrics.SKLEARN_EPS
# Images are shrunk before plotting: a tile is ~3 inches wide, and full-size photos would make a
# report with hundreds of tiles slow and heavy.
THUMB_MAX_SIDE = 256
TILE_INCHES = 3.0


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False. Received {name}={value!r}")
    return bool(value)


def _to_numpy(x: Any) -> np.ndarray:
    """A backend tensor (possibly on an accelerator) or array-like as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except (TypeError, RuntimeError, ValueError):
        # torch tensors on a GPU refuse np.asarray; keras knows how to bring every backend's home.
        import keras

        return np.asarray(keras.ops.convert_to_numpy(x))


def _load_thumb(path: Path) -> tuple[np.ndarray | None, str]:
    """The image as a small RGB array, or (None, why) when it is missing or unreadable."""
    if not path.is_file():
        return None, "missing"
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((THUMB_MAX_SIDE, THUMB_MAX_SIDE))
            return np.asarray(im), ""
    except (UnidentifiedImageError, OSError, ValueError):
        return None, "unreadable"


def _grid(n: int, ncols: int | None) -> tuple[int, int]:
    if ncols is None:
        # A single row for the lesson's 4 images; a near-square grid for longer selections.
        ncols = n if n <= 5 else math.ceil(math.sqrt(n))
    ncols = min(check_int("ncols", ncols, min=1), n)
    return math.ceil(n / ncols), ncols


def _empty_figure(title: str, figsize: tuple[float, float] | None) -> Figure:
    fig = Figure(figsize=figsize or (6, 2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, "No images to show: the selection is empty", ha="center", va="center")
    fig.suptitle(title)
    return fig


class Interpretation:
    """Validation predictions with the lesson's selections, metrics and plots.

    Builds from arrays, so it needs no model: `files[i]` is the image whose true class is `y[i]`
    and whose predicted class probabilities are `probs[i]`. Creating one makes it the target of the
    module-level functions (`most_by_correct(0, True)` etc.).

    Example:

    ```python
    interp = Interpretation(files, y, probs, classes=["cats", "dogs"], root=PATH)
    fig = interp.plot_val_with_title(interp.most_by_correct(1, False), "Most incorrect dogs")
    ```

    Args:
        files: List of str or Path. The N validation images, in the order of `y` and `probs`.
        y: Integer array of shape (N,). True class index of each image.
        probs: Float array of shape (N, c). Predicted probabilities; each row sums to 1.
        classes: List of c str. Class names, index i naming class i.
        root: Path or None. Folder that relative `files` are resolved against.
    """

    def __init__(
        self,
        files: Sequence[str | Path],
        y: np.ndarray,
        probs: np.ndarray,
        classes: Sequence[str],
        root: str | Path | None = None,
    ) -> None:
        probs = _to_numpy(probs)
        y = _to_numpy(y)
        classes = [str(c) for c in classes]
        if probs.ndim != 2:
            raise ValueError(f"probs must have shape (N, n_classes). Received shape {probs.shape}")
        n, c = probs.shape
        if c < 2:
            raise ValueError(f"probs needs at least 2 classes (columns). Received shape {probs.shape}")
        if len(classes) != c:
            raise ValueError(
                f"classes must name each of the {c} columns of probs. Received {len(classes)} classes: {classes}"
            )
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match probs. Received shape {y.shape}")
        if n and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise ValueError(f"y must hold integer class indices. Received dtype {y.dtype}")
        y = y.astype(np.int64)
        bad = np.flatnonzero((y < 0) | (y >= c))
        if bad.size:
            raise ValueError(f"y must hold class indices in [0, {c}). Received y[{bad[0]}]={y[bad[0]]}")
        if len(files) != n:
            raise ValueError(f"files must list the {n} images of probs. Received {len(files)} files")
        probs = probs.astype(np.float64)
        if not np.all(np.isfinite(probs)) or np.any(probs < 0):
            raise ValueError("probs must be finite and non-negative (probabilities, not logits or log-probabilities)")
        sums = probs.sum(axis=1)
        off = np.flatnonzero(np.abs(sums - 1) > PROB_SUM_ATOL)
        if off.size:
            raise ValueError(
                f"each row of probs must sum to 1 (probabilities, not logits). "
                f"Received row {off[0]} summing to {sums[off[0]]:.6g}"
            )
        self.root = Path(root) if root is not None else None
        self.files = [Path(f) for f in files]
        self.y = y
        self.probs = probs
        self.classes = classes
        self.preds = probs.argmax(axis=1)
        self.is_correct = self.preds == y
        # Cross-entropy of each image: what the model paid for it.
        self.losses = metrics.log_losses(y, probs, eps=LOSS_EPS)

    @classmethod
    def from_learner(cls, learn: Any, tta: bool = False) -> Interpretation:
        """Builds an Interpretation from a learner's predictions on its validation set.

        Example:

        ```python
        interp = Interpretation.from_learner(learn, tta=True)
        ```

        Args:
            learn: ConvLearner. Its `predict()` gives (N, c) log-probabilities in file order and its
                `TTA()` gives (log_preds of shape (1 + n_aug, N, c), y); `learn.data` gives
                `val_y`, `val_files` and `classes`.
            tta: bool. Average the probabilities over test-time augmentations.
        """
        tta = _check_bool("tta", tta)
        if tta:
            out = learn.TTA()
            log_preds = _to_numpy(out[0] if isinstance(out, tuple) else out)
        else:
            log_preds = _to_numpy(learn.predict())
        # Averaging probabilities, not log-probabilities, is what the lesson does (np.mean(np.exp(...), 0)).
        probs = np.exp(log_preds.astype(np.float64))
        if probs.ndim == 3:
            probs = probs.mean(axis=0)
        data = learn.data
        return cls(list(data.val_files), _to_numpy(data.val_y), probs, list(data.classes))

    @classmethod
    def from_run(cls, run: Any, tta: bool = True) -> Interpretation:
        """Builds an Interpretation from a finished run's saved validation predictions; a `kit cv` run's
        are its out-of-fold predictions, every labelled image predicted by the fold model that held it out.

        Example:

        ```python
        interp = Interpretation.from_run(RunFolder.latest("data/dogs-vs-cats-redux-kernels-edition"))
        interp.plot_top_losses(9)   # the photos the folds get most wrong
        ```

        Args:
            run: RunFolder (or its path). A finished run or CV run.
            tta: bool. The predictions with TTA as the run made them; False: its plain pass.
        """
        from kit.run import RunFolder

        rf = run if isinstance(run, RunFolder) else RunFolder(run)
        p = rf.require_finished().read_predictions()
        if not _check_bool("tta", tta):
            p = p.plain()
        if len(p.val_y) == 0:
            raise ValueError(
                f"{rf.path} trained on every labelled image (kit train --all): it has no validation predictions to "
                "analyze. Analyze a run with a validation split, or a `kit cv` run (its out-of-fold predictions)."
            )
        return cls(p.val_files, p.val_y, p.val_probs, classes=p.classes)

    # -- helpers ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def path(self, i: int) -> Path:
        """The full path of validation image i."""
        f = self.files[i]
        return self.root / f if self.root is not None and not f.is_absolute() else f

    def class_index(self, cls: int | str, name: str = "y") -> int:
        """A class given by index or name, as an index; ValueError naming `name` if there is none."""
        if isinstance(cls, str):
            if cls not in self.classes:
                raise ValueError(f"{name} must be a class index or one of {self.classes}. Received {name}={cls!r}")
            return self.classes.index(cls)
        if isinstance(cls, (bool, np.bool_)) or not isinstance(cls, (int, np.integer)):
            raise ValueError(f"{name} must be a class index (int) or class name. Received {name}={cls!r}")
        if not 0 <= cls < self.n_classes:
            raise ValueError(
                f"{name} must be a class index in [0, {self.n_classes}) for classes {self.classes}. "
                f"Received {name}={cls}"
            )
        return int(cls)

    def _check_idxs(self, idxs: Any) -> np.ndarray:
        idxs = np.asarray(idxs)
        if idxs.size == 0:
            return np.zeros(0, dtype=np.int64)
        if idxs.ndim != 1 or not np.issubdtype(idxs.dtype, np.integer) or idxs.dtype == bool:
            raise ValueError(
                "idxs must be a 1-D sequence of integer image indices (for a boolean mask use "
                f"np.where(mask)[0]). Received dtype {idxs.dtype}, shape {idxs.shape}"
            )
        bad = np.flatnonzero((idxs < -len(self)) | (idxs >= len(self)))
        if bad.size:
            raise ValueError(f"idxs must index the {len(self)} validation images. Received {idxs[bad[0]]}")
        return idxs.astype(np.int64) % len(self)

    # -- selections (the lesson's names) ---------------------------------------------------------

    def rand_by_correct(self, is_correct: bool, n: int = 4, seed: int | None = None) -> np.ndarray:
        """Indices of up to `n` random images that the model got right (or wrong).

        Args:
            is_correct: bool. True for correctly classified images, False for mistakes.
            n: int. How many; fewer when fewer exist.
            seed: int or None. Seed for a reproducible draw.
        """
        is_correct = _check_bool("is_correct", is_correct)
        n = check_int("n", n, min=0)
        pool = np.flatnonzero(self.is_correct == is_correct)
        rng = np.random.default_rng(seed)
        return rng.choice(pool, size=min(n, pool.size), replace=False).astype(np.int64)

    def most_by_correct(self, y: int | str, is_correct: bool, n: int = 4) -> np.ndarray:
        """The `n` most confidently right (or wrong) images of true class `y`.

        Among images of true class `y` that were classified correctly (`is_correct=True`), those
        with the highest probability of class `y`; among the misclassified ones, those with the
        lowest. With two classes this is the lesson's ordering by P(class 1). Ties keep index order.

        Args:
            y: int or str. True class, by index or name.
            is_correct: bool. Correctly classified images, or mistakes.
            n: int. How many; fewer when fewer exist.
        """
        cls = self.class_index(y, "y")
        is_correct = _check_bool("is_correct", is_correct)
        n = check_int("n", n, min=0)
        idxs = np.flatnonzero((self.y == cls) & (self.is_correct == is_correct))
        p = self.probs[idxs, cls]
        order = np.argsort(-p if is_correct else p, kind="stable")
        return idxs[order[:n]]

    def most_uncertain(self, n: int = 4) -> np.ndarray:
        """The `n` images whose top two class probabilities are closest.

        With two classes this is the lesson's `np.argsort(np.abs(probs - 0.5))`, since the margin
        |p1 - p0| equals 2|p1 - 0.5|. Ties keep index order.
        """
        n = check_int("n", n, min=0)
        top2 = np.sort(self.probs, axis=1)[:, -2:]
        margin = top2[:, 1] - top2[:, 0]
        return np.argsort(margin, kind="stable")[:n]

    def top_losses(self, n: int | None = None) -> np.ndarray:
        """Indices of the images with the highest cross-entropy loss, highest first (all if n is None)."""
        n = check_int("n", n, min=0, none_ok=True)
        return np.argsort(-self.losses, kind="stable")[:n]

    # -- metrics ---------------------------------------------------------------------------------

    def accuracy(self) -> float:
        """Fraction of validation images whose most probable class is the true one."""
        return metrics.accuracy(self.y, self.preds) if len(self) else float("nan")

    def log_loss(self) -> float:
        """Mean cross-entropy of the true class (what the lesson's `val_loss` reports)."""
        if not len(self):
            return float("nan")
        # float32 softmax rows sum to 1 only within ~1e-6: renormalised, as scikit-learn's log_loss was fed.
        probs = self.probs.astype(np.float64)
        probs /= probs.sum(axis=1, keepdims=True)
        return metrics.log_loss(self.y, probs, eps=LOSS_EPS)

    def confusion_matrix(self, normalize: bool = False) -> np.ndarray:
        """(c, c) matrix: row = true class, column = predicted; `normalize` divides each row by its total."""
        from sklearn.metrics import confusion_matrix

        normalize = _check_bool("normalize", normalize)
        labels = list(range(self.n_classes))
        if not len(self):
            return np.zeros((self.n_classes, self.n_classes))
        return confusion_matrix(self.y, self.preds, labels=labels, normalize="true" if normalize else None)

    def per_class(self) -> list[dict[str, Any]]:
        """Precision, recall, F1 and support of each class, as one dict per class."""
        from sklearn.metrics import precision_recall_fscore_support

        labels = list(range(self.n_classes))
        if not len(self):
            zeros = np.zeros(self.n_classes)
            p = r = f = zeros
            s = zeros.astype(int)
        else:
            p, r, f, s = precision_recall_fscore_support(self.y, self.preds, labels=labels, zero_division=0)
        return [
            {"class": name, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(self.classes)
        ]

    def metrics(self) -> dict[str, Any]:
        """Accuracy, log loss and counts in one dict."""
        return {
            "n_images": len(self),
            "n_classes": self.n_classes,
            "n_correct": int(self.is_correct.sum()),
            "accuracy": self.accuracy(),
            "log_loss": self.log_loss(),
        }

    # -- plots -----------------------------------------------------------------------------------

    def _image_tiles(
        self, idxs: np.ndarray, titles: list[str], suptitle: str, figsize: tuple[float, float] | None, ncols: int | None
    ) -> Figure:
        rows, cols = _grid(len(idxs), ncols)
        fig = Figure(figsize=figsize or (TILE_INCHES * cols, TILE_INCHES * rows + 0.6), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, i, t in zip(axes, idxs, titles):
            path = self.path(int(i))
            img, why = _load_thumb(path)
            if img is None:
                # A placeholder keeps the grid readable and says which file to look at.
                ax.imshow(np.full((64, 64, 3), 220, dtype=np.uint8))
                ax.text(
                    0.5,
                    0.5,
                    f"{why}\n{path.name}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    transform=ax.transAxes,
                    wrap=True,
                )
            else:
                ax.imshow(img)
            ax.set_title(t, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(path.name, fontsize=7)
        for ax in axes[len(idxs) :]:
            fig.delaxes(ax)
        fig.suptitle(suptitle)
        return fig

    def plot_val_with_title(
        self,
        idxs: Sequence[int] | np.ndarray,
        title: str,
        cls: int | str | None = None,
        figsize: tuple[float, float] | None = None,
        ncols: int | None = None,
    ) -> Figure:
        """Validation images `idxs` in a row (or grid), each titled with a class probability.

        With two classes each title is P(class 1), e.g. P(dogs), as in the lesson; with more, the
        predicted class and its probability, unless `cls` names the class to show.

        Example:

        ```python
        plot_val_with_title(most_by_correct(0, True), "Most correct cats")
        ```

        Args:
            idxs: Integer indices into the validation set.
            title: str. The figure's title.
            cls: int, str or None. Show the probability of this class for every image.
            figsize: (width, height) in inches, or None to size by the number of images.
            ncols: int or None. Images per row.
        """
        idxs = self._check_idxs(idxs)
        if idxs.size == 0:
            return _empty_figure(title, figsize)
        if cls is None and self.n_classes == 2:
            cls = 1
        if cls is not None:
            c = self.class_index(cls, "cls")
            titles = [f"P({self.classes[c]})={self.probs[i, c]:.3f}" for i in idxs]
        else:
            titles = [f"{self.classes[self.preds[i]]} {self.probs[i, self.preds[i]]:.3f}" for i in idxs]
        return self._image_tiles(idxs, titles, title, figsize, ncols)

    def plot_top_losses(
        self, n: int = 9, figsize: tuple[float, float] | None = None, ncols: int | None = None
    ) -> Figure:
        """The `n` images with the highest loss, titled prediction/actual/loss/probability of actual."""
        idxs = self.top_losses(n)
        title = "Top losses: prediction/actual/loss/probability of actual"
        if idxs.size == 0:
            return _empty_figure(title, figsize)
        titles = [
            f"{self.classes[self.preds[i]]}/{self.classes[self.y[i]]}\n"
            f"{self.losses[i]:.2f}/{self.probs[i, self.y[i]]:.2f}"
            for i in idxs
        ]
        return self._image_tiles(idxs, titles, title, figsize, ncols)

    def plot_confusion_matrix(
        self,
        normalize: bool = False,
        ax: Any | None = None,
        figsize: tuple[float, float] | None = None,
        cmap: str = "Blues",
    ) -> Figure:
        """The confusion matrix as an annotated heat map (rows: actual, columns: predicted).

        Args:
            normalize: bool. Show each row as fractions of its true class (i.e. recall on the diagonal).
            ax: matplotlib Axes or None. Draw into this axes instead of a new figure.
            figsize: (width, height) in inches for a new figure.
            cmap: str. Matplotlib colour map name.
        """
        cm = self.confusion_matrix(normalize)
        c = self.n_classes
        if ax is None:
            side = max(4.0, 0.5 * c + 2.5)
            fig = Figure(figsize=figsize or (side, side), layout="constrained")
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.imshow(cm, cmap=cmap, vmin=0, vmax=1 if normalize else max(1, cm.max()))
        ax.set_xticks(range(c), self.classes, rotation=45 if c > 2 else 0, ha="right" if c > 2 else "center")
        ax.set_yticks(range(c), self.classes)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("Actual")
        ax.set_title("Normalised confusion matrix" if normalize else "Confusion matrix")
        # Numbers are only legible on small matrices; large ones rely on the colours.
        if c <= 30:
            threshold = (1 if normalize else max(1, cm.max())) / 2
            for (r, k), v in np.ndenumerate(cm):
                ax.text(
                    k,
                    r,
                    f"{v:.2f}" if normalize else f"{int(v)}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if v > threshold else "black",
                )
        return fig
