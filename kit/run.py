"""The run folder: the one place that knows what a training run leaves behind and how to read it.

`kit train` writes one folder per run, `<root>/runs/<UTC time>-<arch>/` (`<root>`: a competition's
`<data>/<slug>/`, or the work folder of a `--folder`, see `kit.env.work_dir_for`; `kit real` writes the
same); `kit analyze`, `kit submit` and `kit predict` read it back through `RunFolder` only:

| file | what |
| --- | --- |
| `config.json` | the resolved configuration (devices and precision included) |
| `history.json` | the chosen rate and the epoch table (strict JSON: no NaN) |
| `lr_find.png`, `lr_schedule.png` | the learning-rate range test, when it ran |
| `model.weights.h5` | the final weights |
| `predictions.npz` | `Predictions`: classes, validation files, labels and probabilities, test files and probabilities |
| `cv.json` | a CV run only (`kit cv`): its folds; each fold's own run is under `fold-<i>/runs/` |
| `checkpoint/` | the state at the end of the last finished epoch, for `kit train --resume` |
| `DONE` | written last: the run finished cleanly |

`<root>/runs/LATEST` names the newest run that finished cleanly; an unfinished run never becomes LATEST.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from kit.io import NPZ_READ_ERRORS, atomic_path, atomic_write, atomic_write_json, npz_read_error

LATEST = "LATEST"
RUNS = "runs"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"


class UnfinishedRunError(FileNotFoundError):
    """A run folder whose training did not finish (interrupted, diverged, or still running)."""


class DamagedRunError(ValueError):
    """A file of a run folder is missing or cannot be read as what the run wrote (edited, truncated, deleted)."""


def _damaged(path: Path, what: str) -> DamagedRunError:
    return DamagedRunError(
        f"{path} {what}: the run folder {path.parent} is damaged. Restore the file, "
        f"or train a new run with `kit train` (or pass --run with another run)."
    )


@dataclass
class Predictions:
    """The npz schema of `predictions.npz`: probabilities (N, c) in file order."""

    classes: list[str]
    val_files: list[str]
    val_y: np.ndarray
    val_probs: np.ndarray
    test_files: list[str] | None = None
    test_probs: np.ndarray | None = None
    # With TTA, the plain pass's probabilities too (`kit cv` reports both); None: no TTA (the same as above).
    val_plain: np.ndarray | None = None
    test_plain: np.ndarray | None = None
    val_fold: np.ndarray | None = None  # a CV run's: the fold that held each validation row out

    OPTIONAL = ("val_plain", "test_plain", "val_fold")

    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(
            classes=np.array(self.classes),
            val_files=np.array(self.val_files),
            val_y=np.asarray(self.val_y),
            val_probs=np.asarray(self.val_probs),
        )
        if self.test_probs is not None:
            out.update(test_files=np.array(self.test_files), test_probs=np.asarray(self.test_probs))
        out.update({k: np.asarray(getattr(self, k)) for k in self.OPTIONAL if getattr(self, k) is not None})
        return out

    def plain(self) -> Predictions:
        """The same predictions without TTA (themselves when there was none)."""
        return Predictions(
            self.classes,
            self.val_files,
            self.val_y,
            self.val_probs if self.val_plain is None else self.val_plain,
            self.test_files,
            self.test_probs if self.test_plain is None else self.test_plain,
            val_fold=self.val_fold,
        )

    @classmethod
    def from_arrays(cls, z: Any) -> Predictions:
        has_test = "test_probs" in z
        return cls(
            classes=[str(c) for c in z["classes"]],
            val_files=[str(f) for f in z["val_files"]],
            val_y=np.asarray(z["val_y"]),
            val_probs=np.asarray(z["val_probs"]),
            test_files=[str(f) for f in z["test_files"]] if has_test else None,
            test_probs=np.asarray(z["test_probs"]) if has_test else None,
            **{k: np.asarray(z[k]) for k in cls.OPTIONAL if k in z},
        )


class RunFolder:
    """One training run's folder. Build with `RunFolder.create(root, arch)`, `RunFolder.latest(root)`
    or `RunFolder(path)`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # -- the files -------------------------------------------------------------------------------
    config_file = property(lambda self: self.path / "config.json")
    history_file = property(lambda self: self.path / "history.json")
    weights_file = property(lambda self: self.path / "model.weights.h5")
    predictions_file = property(lambda self: self.path / "predictions.npz")
    lr_find_png = property(lambda self: self.path / "lr_find.png")
    lr_schedule_png = property(lambda self: self.path / "lr_schedule.png")
    checkpoint_dir = property(lambda self: self.path / "checkpoint")
    done_file = property(lambda self: self.path / "DONE")
    cv_file = property(lambda self: self.path / "cv.json")

    @property
    def is_cv(self) -> bool:
        """A `kit cv` run: the folds' runs under `fold-<i>/`, out-of-fold predictions, a fold ensemble."""
        return self.cv_file.is_file()

    def fold_root(self, i: int) -> Path:
        """Where a CV run's fold `i` keeps its own `runs/`."""
        return self.path / f"fold-{i}"

    def fold_runs(self) -> list[RunFolder]:
        """A finished CV run's fold runs, in fold order."""
        k = int(self.read_cv().get("k", 0))
        return [RunFolder.latest(self.fold_root(i)).require_finished() for i in range(k)]

    def read_cv(self) -> dict:
        return self._read_json(self.cv_file)

    def write_cv(self, record: dict) -> None:
        atomic_write_json(self.cv_file, record)

    # -- creating and finding runs ---------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike, arch: str) -> RunFolder:
        """A new, empty run folder `<root>/runs/<UTC time>-<arch>/` (a suffix keeps names unique)."""
        stamp = datetime.now(timezone.utc).strftime(TIME_FORMAT)
        runs = Path(root) / RUNS
        runs.mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            path = runs / (f"{stamp}-{arch}" if i == 0 else f"{stamp}-{arch}-{i}")
            try:
                path.mkdir()
                return cls(path)
            except FileExistsError:
                continue
        raise FileExistsError(f"Could not create a new run folder under {runs}.")

    @staticmethod
    def runs_dir(root: str | os.PathLike) -> Path:
        return Path(root) / RUNS

    @classmethod
    def latest(cls, root: str | os.PathLike) -> RunFolder:
        """The newest run that finished cleanly, as named by `<root>/runs/LATEST`."""
        marker = cls.runs_dir(root) / LATEST
        if not marker.is_file():
            raise FileNotFoundError(f"No finished training run under {marker.parent}: run `kit train` first.")
        run = cls(marker.parent / marker.read_text().strip())
        if not run.path.is_dir():
            raise FileNotFoundError(f"{marker} names {run.path}, which does not exist: run `kit train` again.")
        return run

    @classmethod
    def resolve(cls, root: str | os.PathLike, run: str | os.PathLike | None = None) -> RunFolder:
        """`run` (a path, or a run's name under `<root>/runs/`), else the latest finished run."""
        if run is None:
            return cls.latest(root)
        p = Path(run)
        if not p.is_dir() and (cls.runs_dir(root) / p).is_dir():
            p = cls.runs_dir(root) / p
        if not p.is_dir():
            raise FileNotFoundError(
                f"No run folder {run}: give a folder under {cls.runs_dir(root)} or leave it out for the latest."
            )
        return cls(p)

    @classmethod
    def _unfinished_where(cls, root: str | os.PathLike, keep) -> list[RunFolder]:
        runs = cls.runs_dir(root)
        if not runs.is_dir():
            return []
        cands = [cls(p) for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
        return sorted((r for r in cands if not r.finished and keep(r)), key=lambda r: r.name, reverse=True)

    @classmethod
    def unfinished_cv(cls, root: str | os.PathLike) -> list[RunFolder]:
        """CV runs without a DONE marker, newest first (what `kit cv --resume` looks through)."""
        return cls._unfinished_where(root, lambda r: r.is_cv)

    @classmethod
    def unfinished(cls, root: str | os.PathLike) -> list[RunFolder]:
        """Runs with a checkpoint folder but no DONE marker, newest first (what `--resume` looks through)."""
        return cls._unfinished_where(root, lambda r: r.checkpoint_dir.is_dir())

    def set_latest(self) -> None:
        """Points `runs/LATEST` at this run; refuses a run that did not finish cleanly."""
        if not self.finished:
            raise UnfinishedRunError(f"{self.path} did not finish cleanly; LATEST still names the last good run.")
        atomic_write(self.path.parent / LATEST, self.name)

    # -- state -----------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.done_file.is_file()

    def mark_finished(self) -> None:
        atomic_write(self.done_file, datetime.now(timezone.utc).strftime(TIME_FORMAT) + "\n")

    def require_finished(self) -> RunFolder:
        if not self.finished:
            raise UnfinishedRunError(
                f"{self.path} is an unfinished run (interrupted or diverged): skipping it. Resume it with "
                f"`kit train --resume {self.name}`, or pass --run with a finished run."
            )
        return self

    # -- reading and writing ---------------------------------------------------------------------
    def write_config(self, config: dict) -> None:
        atomic_write_json(self.config_file, config)

    def read_config(self) -> dict:
        """The run's config.json as a dict; a run without one has none (`{}`).

        Raises:
            DamagedRunError: the file is not JSON, or not a JSON object.
        """
        return self._read_json(self.config_file)

    @staticmethod
    def _read_json(path: Path) -> dict:
        if not path.is_file():
            return {}
        try:
            value = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise _damaged(path, f"is not valid JSON ({e})") from e
        if not isinstance(value, dict):
            raise _damaged(path, f"holds a JSON {type(value).__name__}, not the object the run wrote")
        return value

    def write_history(self, history: dict) -> None:
        atomic_write_json(self.history_file, history)

    def read_history(self) -> dict:
        return self._read_json(self.history_file)

    def write_predictions(self, preds: Predictions) -> Path:
        arrays = preds.arrays()
        with atomic_path(self.predictions_file, need=sum(a.nbytes for a in arrays.values())) as tmp:
            np.savez(tmp, **arrays)
        return self.predictions_file

    def read_predictions(self) -> Predictions:
        path = self.predictions_file
        if not path.is_file():
            if self.finished:  # DONE is written after the predictions: something removed them since
                raise _damaged(path, "is missing although the run finished (its DONE marker is there)")
            raise UnfinishedRunError(
                f"No predictions in {self.path}: the run did not finish; resume it with "
                f"`kit train --resume {self.name}` or run `kit train` again."
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                return Predictions.from_arrays({k: z[k] for k in z.files})
        except NPZ_READ_ERRORS as e:
            raise _damaged(path, f"cannot be read as the run's predictions ({npz_read_error(e)})") from e
