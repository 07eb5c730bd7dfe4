"""`kit predict`: a finished run's model on new image files, one prediction per file (a `kit cv` run's:
its fold models' mean).

The run's `config.json` gives the arch, size and augmentation (the model is rebuilt exactly as trained,
then its weights loaded: no ImageNet weights needed), its `predictions.npz` the class names.

Example:

```python
run = RunFolder.latest("data/dogs-vs-cats-redux-kernels-edition")
result = predict_images(["new/cat.jpg", "new/more_photos/"], run)
result.rows()        # [("new/cat.jpg", "cats", 0.98), ...]
```
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kit.data.images import is_image_name
from kit.io import atomic_write
from kit.run import RunFolder


@dataclass
class PredictResult:
    """The predictions for `files` (those that decoded) and the files that could not be read."""

    classes: list[str]
    files: list[Path]
    probs: np.ndarray  # (len(files), c)
    skipped: list[Path] = field(default_factory=list)

    def rows(self) -> list[tuple[str, str, float]]:
        """(path, most likely class, its probability), one per readable file, in input order."""
        best = self.probs.argmax(axis=1) if len(self.files) else np.zeros(0, dtype=int)
        return [(str(f), self.classes[k], float(self.probs[i, k])) for i, (f, k) in enumerate(zip(self.files, best))]

    def to_csv(self) -> str:
        """`path,class,probability,<one column per class>`, one row per readable file."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["path", "class", "probability", *self.classes])
        for (path, cls, p), probs in zip(self.rows(), self.probs):
            w.writerow([path, cls, f"{p:.6f}", *(f"{q:.6f}" for q in probs)])
        return buf.getvalue()


def expand_inputs(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given (whatever their extension), and the images under each folder (recursive, sorted).

    Raises:
        FileNotFoundError: a folder holds no images, or nothing at all was given.
    """
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file() and is_image_name(f) and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            if not found:
                raise FileNotFoundError(f"No images in folder {p} (extensions: .jpg, .png, ...).")
            files += found
        else:
            files.append(p)  # a missing or unreadable file is reported by the prediction, with the others
    if not files:
        raise FileNotFoundError("No image files to predict: give files or folders.")
    return files


def load_learner(run: RunFolder):
    """The model of a finished run, rebuilt from its config.json and loaded with its weights."""
    from kit.data import ImageClassifierData
    from kit.jobs.train import make_tfms
    from kit.training.learner import ConvLearner

    run.require_finished()
    cfg = run.read_config()
    missing = [k for k in ("arch", "size") if k not in cfg]
    if missing:
        raise ValueError(f"{run.config_file} lacks {missing}: cannot rebuild the model of run {run.path}.")
    if not run.weights_file.is_file():
        raise FileNotFoundError(f"Run {run.path} has no weights file {run.weights_file.name}.")
    classes = run.read_predictions().classes
    tfms = make_tfms(cfg["arch"], int(cfg["size"]), cfg.get("aug", "none"), cfg.get("max_zoom"))
    data = ImageClassifierData.from_classes(classes, tfms, bs=int(cfg.get("bs", 64)), work_dir=run.path)
    learn = ConvLearner.pretrained(
        cfg["arch"],
        data,
        weights=None,
        mixed_precision=cfg.get("mixed_precision", "auto"),
        bag=int(cfg.get("head_bag") or 1),  # saved resolved; a run from before bags has one head
    )
    learn.load(run.weights_file)
    return learn


def predict_images(
    inputs: list[str | os.PathLike], run: RunFolder, out: str | os.PathLike | None = None
) -> PredictResult:
    """Predicts every image of `inputs` (files or folders) with the run's model; writes a CSV to `out` if given.

    Files that cannot be read are left out of the result's `files` and listed in `skipped`
    (`learn.predict_files` also names them, with the reason, in one warning).
    """
    files = expand_inputs(inputs)
    run.require_finished()
    if run.is_cv:  # a `kit cv` run: its fold models, averaged as its config says
        from kit.jobs.cv import mean_probs

        probs, classes = [], []
        for fold in run.fold_runs():
            learn = load_learner(fold)
            log_probs, ok = learn.predict_files(files)
            probs.append(np.exp(log_probs))
            classes = list(learn.data.classes)
            del learn  # one fold model in memory at a time
        probs_ok = mean_probs([p[ok] for p in probs], run.read_config().get("cv_mean", "arithmetic"))
    else:
        learn = load_learner(run)
        log_probs, ok = learn.predict_files(files)
        classes, probs_ok = list(learn.data.classes), np.exp(log_probs[ok])
    result = PredictResult(
        classes,
        [f for f, good in zip(files, ok) if good],
        probs_ok,
        [f for f, good in zip(files, ok) if not good],
    )
    if out is not None:
        atomic_write(out, result.to_csv())
    return result
