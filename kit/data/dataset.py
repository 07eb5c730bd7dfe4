"""`ImageClassifierData`: the lesson's data object over class folders, feeding uint8 batches."""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from kit.checks import check_int
from kit.data.cache import default_workers, pixels_key, start_decoding
from kit.data.decode_job import DecodeJob
from kit.data.files import check_same_classes, read_class_folders, read_flat_folder
from kit.data.transforms import Transforms

if TYPE_CHECKING:
    from kit.data.labels import LabelledFiles


class Batches(keras.utils.PyDataset):
    """Batches of rows of `x` (a memmap or array) with labels `y`, reshuffled every epoch.

    Indices inside a batch are sorted so a memmap reads forward; the batch is still a random draw.

    With `fixed=True` every batch has exactly `bs` rows, so a compiled (XLA) step never meets a second
    shape: a shuffled last batch is topped up with rows drawn from the rest of the epoch (real images,
    so BatchNorm's batch statistics see no padding), an unshuffled one is padded by repeating its last
    row; `n` is the number of real rows, and predictions past it are padding to drop.

    With `passes > 1` (shuffled only) an epoch is that many passes over the rows, each in its own
    shuffled order: how a head fit on precomputed activations gets enough steps from a small data set.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        bs: int,
        shuffle: bool = False,
        seed: int | None = None,
        rows: np.ndarray | None = None,
        workers: int = 1,
        fixed: bool = False,
        passes: int = 1,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.x, self.bs, self.shuffle, self.fixed = x, int(bs), shuffle, fixed
        self.passes = check_int("passes", passes, min=1)
        if self.passes > 1 and not shuffle:
            raise ValueError("Batches(passes > 1) repeats the rows of a training epoch: it needs shuffle=True.")
        # `rows` picks the rows of x that belong (skipped images are left out); y is per kept row.
        self._rows = np.arange(len(x)) if rows is None else np.asarray(rows)
        self.y = None if y is None else np.asarray(y)
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(self._rows))
        if shuffle:
            self._reshuffle()

    def _reshuffle(self) -> None:
        if self.passes == 1:
            self._rng.shuffle(self._order)  # in place, as it always drew: a seed's order is unchanged
        else:
            n = len(self._rows)
            self._order = np.concatenate([self._rng.permutation(n) for _ in range(self.passes)])

    def __len__(self) -> int:
        return math.ceil(len(self._rows) * self.passes / self.bs)

    @property
    def n(self) -> int:
        """Real rows (without a fixed last batch's top-up or padding)."""
        return len(self._rows)

    def __getitem__(self, i: int):
        pos = self._order[i * self.bs : (i + 1) * self.bs]
        short = self.bs - len(pos)
        if self.fixed and short > 0:
            if self.shuffle:  # rows from the rest of the epoch, wrapping round when n < bs
                pos = np.concatenate([pos, self._order[np.arange(short) % len(self._order)]])
            else:
                pos = np.concatenate([pos, np.full(short, pos[-1])])
        if self.shuffle:
            pos = np.sort(pos)
        xb = np.asarray(self.x[self._rows[pos]])
        if self.y is None:
            return (xb,)
        return xb, self.y[pos]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._reshuffle()


class Split:
    """One split's files, labels (None for test) and decoded images.

    `images` is the whole decoded uint8 memmap; `rows` are its rows that belong to the split (files
    that failed to decode are left out), aligned with `files` and `y`. While worker processes still
    decode the split (`decoding`, its `DecodeJob`), reading any of these, or `len`, waits for them.
    """

    def __init__(
        self, name: str, files: list[Path], y: np.ndarray | None, images: np.ndarray | None, rows: np.ndarray | None
    ):
        self.name = name
        self._files, self._y, self._images, self._rows = files, y, images, rows
        self.job: DecodeJob | None = None  # the decode that made `images`, kept for its timings
        self._lock = threading.Lock()
        self._pending: tuple[Path, list[str] | None] | None = None

    @classmethod
    def from_job(
        cls, job: DecodeJob, files: list[Path], y: np.ndarray | None, folder: Path, classes: list[str] | None
    ) -> Split:
        """The split `job` decodes: its rows, files and labels are known once the job ends."""
        s = cls(job.name, files, y, None, None)
        s.job, s._pending = job, (folder, classes)
        return s

    @property
    def decoding(self) -> DecodeJob | None:
        """The job still writing this split's images, or None once they are all on disk."""
        job = self.job
        return job if job is not None and not job.done else None

    def _ready(self) -> Split:
        with self._lock:
            if self._pending is not None:
                self._keep(*self._pending)
                self._pending = None
        return self

    def _keep(self, folder: Path, classes: list[str] | None) -> None:
        images, ok = self.job.result()  # waits; raises the decode's error; warns about skipped files
        keep = np.flatnonzero(ok)
        if len(keep) == 0 and self._files:
            raise ValueError(
                f"No image of the '{self.name}' split could be decoded ({len(self._files)} files in {folder})."
            )
        self._files = [self._files[i] for i in keep]
        self._y = None if self._y is None else self._y[keep]
        self._images, self._rows = images, keep
        missing = (
            sorted(set(range(len(classes))) - set(np.unique(self._y).tolist()))
            if classes and self._y is not None and len(keep)
            else []  # an empty split (`kit train --all`'s valid) lacks nothing it was meant to have
        )
        if missing:
            warnings.warn(
                f"Split '{self.name}' has no decodable image of classes {[classes[i] for i in missing]}.", stacklevel=4
            )

    files = property(lambda self: self._ready()._files)
    y = property(lambda self: self._ready()._y)
    images = property(lambda self: self._ready()._images)
    rows = property(lambda self: self._ready()._rows)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def fnames(self) -> list[str]:
        return [str(f) for f in self.files]

    @property
    def key(self) -> str:
        """Names the pixels this split feeds (its image cache and kept rows), for caches derived from them."""
        return pixels_key(self.images, self.rows, self.files)


def _check_val_idxs(val_idxs: Sequence[int] | np.ndarray, n: int, source: str) -> np.ndarray:
    """Sorted, distinct row indices in [0, n) that leave at least one training row."""
    val = np.asarray(val_idxs)
    if val.ndim != 1 or (val.size and not np.issubdtype(val.dtype, np.integer)):
        raise ValueError(f"val_idxs must be a 1-D list of row numbers of {source}. Received {val_idxs!r:.80}")
    val = np.unique(val.astype(np.int64))
    if len(val) != len(np.asarray(val_idxs)):
        raise ValueError(f"val_idxs must not repeat a row of {source}; {len(np.asarray(val_idxs)) - len(val)} repeat.")
    if val.size == 0 or val[0] < 0 or val[-1] >= n or len(val) >= n:
        raise ValueError(
            f"val_idxs must be between 1 and {n - 1} distinct rows in [0, {n}) of {source} (some rows must train). "
            f"Received {len(val)} rows in [{val.min(initial=0)}, {val.max(initial=0)}]."
        )
    return val


def _first_per_class(files: list[Path], y: np.ndarray, n: int) -> tuple[list[Path], np.ndarray]:
    """The first `n` files of each class, in their original (sorted) order."""
    keep = np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)])
    keep.sort()
    return [files[i] for i in keep], y[keep]


class ImageClassifierData:
    """Train, valid and optional test images with their labels, as the lesson's `data` object.

    Example:
        data = ImageClassifierData.from_paths("data/dogscats/", tfms=tfms_from_model(resnet50, 224))
        data.classes, data.val_y[:5], len(data.trn_ds)

    Images are decoded once, in parallel worker processes, into a uint8 cache under `path/tmp/`
    (`work_dir/tmp/` when `path` is read-only; reused by later runs) and fed to the model as uint8
    batches; files that cannot be decoded are left out of their split with one warning that lists them.
    `from_paths` returns while the workers decode: what needs a split's images, files or labels waits
    for them, and `ConvLearner.pretrained(..., precompute=True)` runs the body on them as they land.
    """

    def __init__(
        self,
        path: Path,
        classes: list[str],
        trn: Split,
        val: Split,
        test: Split | None,
        tfms: tuple[Transforms, Transforms],
        bs: int,
        num_workers: int,
        work_dir: Path | None = None,
        tmp_dir: Path | None = None,
    ):
        self.path, self.classes = Path(path), classes
        # What the kit writes (decoded images, activations, saved models) goes under work_dir, never
        # into a read-only `path`; work_dir is `path` itself when that is writable (the lesson's layout).
        self.work_dir = Path(work_dir) if work_dir is not None else self.path
        self._tmp_dir = Path(tmp_dir) if tmp_dir is not None else self.work_dir / "tmp"
        self.trn_ds, self.val_ds, self.test_ds = trn, val, test
        self.trn_tfms, self.val_tfms = tfms
        self.bs, self.num_workers = bs, num_workers

    # The lesson's attribute names.
    @property
    def c(self) -> int:
        return len(self.classes)

    @property
    def sz(self) -> int:
        return self.val_tfms.sz

    @property
    def trn_y(self) -> np.ndarray:
        return self.trn_ds.y

    @property
    def val_y(self) -> np.ndarray:
        return self.val_ds.y

    @property
    def trn_files(self) -> list[str]:
        return self.trn_ds.fnames

    @property
    def val_files(self) -> list[str]:
        return self.val_ds.fnames

    @property
    def test_files(self) -> list[str]:
        return self.test_ds.fnames if self.test_ds is not None else []

    @property
    def tmp_dir(self) -> Path:
        return self._tmp_dir

    @property
    def models_dir(self) -> Path:
        return self.work_dir / "models"

    def warn_vanished(self) -> list[Path]:
        """Warns about images deleted or moved since `from_paths`, naming them; returns them.

        Their pixels, decoded then, are still in the cache and still used: the splits, labels and
        predictions stay aligned. `from_paths` again leaves them out.
        """
        splits = [s for s in (self.trn_ds, self.val_ds, self.test_ds) if s is not None]
        gone = [f for s in splits for f in s.files if not f.exists()]
        if gone:
            shown = "\n  ".join(map(str, gone[:20])) + (f"\n  and {len(gone) - 20} more" if len(gone) > 20 else "")
            warnings.warn(
                f"{len(gone)} images were deleted or moved after from_paths; the pixels decoded then are used "
                f"(call ImageClassifierData.from_paths again to leave them out):\n  {shown}",
                stacklevel=3,
            )
        return gone

    def split(self, name: str) -> Split:
        s = {"train": self.trn_ds, "valid": self.val_ds, "test": self.test_ds}.get(name)
        if s is None:
            raise ValueError(
                f"Unknown or absent split {name!r}: choose 'train', 'valid' or 'test' (test needs test_name)."
            )
        return s

    def batches(
        self, name: str, shuffle: bool = False, bs: int | None = None, seed: int | None = None, fixed: bool = False
    ) -> Batches:
        s = self.split(name)
        return Batches(s.images, s.y, bs or self.bs, shuffle=shuffle, seed=seed, rows=s.rows, fixed=fixed)

    @classmethod
    def from_paths(
        cls,
        path: str | Path,
        tfms: tuple[Transforms, Transforms] | None = None,
        bs: int = 64,
        trn_name: str = "train",
        val_name: str = "valid",
        test_name: str | None = None,
        num_workers: int | None = None,
        progress: bool = True,
        work_dir: str | Path | None = None,
        tmp_dir: str | Path | None = None,
        max_per_class: int | None = None,
    ) -> ImageClassifierData:
        """Reads `path/trn_name/<class>/*`, `path/val_name/<class>/*` and an optional flat test folder.

        Args:
            path: str or Path. The data folder (the lesson's PATH).
            tfms: (train, valid) Transforms from `tfms_from_model`; None means 224 px, no augmentation.
            bs: int. Batch size.
            trn_name, val_name: str. Folder names of the training and validation splits.
            test_name: str or None. A flat folder of unlabelled test images.
            num_workers: int. Decoding processes (default: every core); 1 decodes here, before returning.
            progress: bool. Show a progress bar while decoding.
            work_dir: str, Path or None. Where the decoded images (`tmp/`) and saved models (`models/`)
                go. Default: `path` when writable, else a folder of the kit's user cache
                (`kit.env.work_dir_for`): nothing is ever written into a read-only `path`.
            tmp_dir: str, Path or None. The cache folder itself (default: `work_dir/tmp`).
            max_per_class: int or None. Keep only the first n files (by name) of each class of the
                train and valid splits: a quick look at a large folder.
        """
        from kit.env import work_dir_for

        path = Path(path)
        check_int("max_per_class", max_per_class, min=1, none_ok=True)
        trn_files, trn_y, classes = read_class_folders(path, trn_name)
        val_files, val_y, val_classes = read_class_folders(path, val_name)
        check_same_classes(classes, val_classes, path, trn_name, val_name)
        test_files = read_flat_folder(path / test_name) if test_name else None
        return cls.from_lists(
            path,
            classes,
            (trn_files, trn_y),
            (val_files, val_y),
            test_files,
            tfms=tfms,
            bs=bs,
            names=(trn_name, val_name, test_name),
            num_workers=num_workers,
            progress=progress,
            work_dir=work_dir_for(path, work_dir),
            tmp_dir=tmp_dir,
            max_per_class=max_per_class,
        )

    @classmethod
    def from_csv(
        cls,
        path: str | Path,
        folder: str,
        csv_fname: str | Path,
        val_idxs: Sequence[int] | np.ndarray | None = None,
        suffix: str | None = "",
        test_name: str | None = None,
        tfms: tuple[Transforms, Transforms] | None = None,
        bs: int = 64,
        val_pct: float = 0.2,
        seed: int = 42,
        id_column: str | None = None,
        label_column: str | None = None,
        num_workers: int | None = None,
        progress: bool = True,
        work_dir: str | Path | None = None,
        tmp_dir: str | Path | None = None,
        max_per_class: int | None = None,
    ) -> ImageClassifierData:
        """Images of `path/folder` labelled by a CSV (`id,label`), read where they lie: lesson 2's

            ImageClassifierData.from_csv(PATH, "train", f"{PATH}labels.csv", test_name="test",
                                         val_idxs=get_cv_idxs(n), suffix=".jpg", tfms=tfms, bs=bs)

        Args:
            path: str or Path. The competition's folder (may be read-only, e.g. /kaggle/input/<slug>).
            folder: str. The images' folder inside `path`.
            csv_fname: str or Path. The labels CSV (absolute, or inside `path`); see `read_labels_csv`
                for the rules each row must follow.
            val_idxs: the CSV rows (0 = the first after the header) that validate; None: a seeded 20%
                split, stratified where every class has two rows or more, recorded under
                `work_dir/splits/` so that every later run validates on the same images.
            suffix: str or None. Appended to an id to name its file (".jpg"); None infers it.
            test_name: str or None. A flat folder of unlabelled test images inside `path`.
            val_pct, seed: the split made when val_idxs is None.
            id_column, label_column: the CSV's columns by name (default: its first and second).
            Others: as `from_paths`.
        """
        from kit.data.labels import read_labels_csv, recorded_val_idxs
        from kit.env import work_dir_for

        path = Path(path)
        csv_path = Path(csv_fname) if Path(csv_fname).is_absolute() else path / csv_fname
        table = read_labels_csv(csv_path, path / folder, suffix, id_column, label_column)
        work = work_dir_for(path, work_dir)
        if val_idxs is None:
            val_idxs, _ = recorded_val_idxs(table, work, val_pct, seed)
        return cls.from_table(
            path,
            table,
            val_idxs,
            test_files=read_flat_folder(path / test_name) if test_name else None,
            tfms=tfms,
            bs=bs,
            test_name=test_name,
            num_workers=num_workers,
            progress=progress,
            work_dir=work,
            tmp_dir=tmp_dir,
            max_per_class=max_per_class,
        )

    @classmethod
    def from_table(
        cls,
        path: str | Path,
        table: LabelledFiles,
        val_idxs: Sequence[int] | np.ndarray,
        test_files: list[Path] | None = None,
        tfms: tuple[Transforms, Transforms] | None = None,
        bs: int = 64,
        test_name: str | None = None,
        num_workers: int | None = None,
        progress: bool = True,
        work_dir: str | Path | None = None,
        tmp_dir: str | Path | None = None,
        max_per_class: int | None = None,
    ) -> ImageClassifierData:
        """A labelled list (`kit.data.labels`: a CSV's rows, or one class-folder tree) split by `val_idxs`."""
        val = _check_val_idxs(val_idxs, len(table), table.source)
        trn = np.setdiff1d(np.arange(len(table)), val)
        y, classes = table.y, table.classes
        files = table.files
        return cls.from_lists(
            path,
            classes,
            ([files[i] for i in trn], y[trn]),
            ([files[i] for i in val], y[val]),
            test_files,
            tfms=tfms,
            bs=bs,
            names=("train", "valid", test_name or "test"),
            num_workers=num_workers,
            progress=progress,
            work_dir=work_dir,
            tmp_dir=tmp_dir,
            max_per_class=max_per_class,
        )

    @classmethod
    def from_lists(
        cls,
        path: str | Path,
        classes: list[str],
        trn: tuple[list[Path], np.ndarray],
        val: tuple[list[Path], np.ndarray],
        test_files: list[Path] | None,
        tfms: tuple[Transforms, Transforms] | None = None,
        bs: int = 64,
        names: tuple[str, str, str | None] = ("train", "valid", "test"),
        num_workers: int | None = None,
        progress: bool = True,
        work_dir: str | Path | None = None,
        tmp_dir: str | Path | None = None,
        max_per_class: int | None = None,
    ) -> ImageClassifierData:
        """The data object over files already listed: (files, labels) of train and valid, test files.

        Every constructor ends here; the images start decoding into `tmp_dir` (see the class)."""
        from kit.env import work_dir_for

        path = Path(path)
        work = Path(work_dir) if work_dir is not None else work_dir_for(path)
        tmp = Path(tmp_dir) if tmp_dir is not None else work / "tmp"
        check_int("max_per_class", max_per_class, min=1, none_ok=True)
        if tfms is None:
            tfms = (Transforms(224), Transforms(224))
        check_int("bs", bs, min=1)
        workers = default_workers() if num_workers is None else int(num_workers)
        (trn_files, trn_y), (val_files, val_y) = trn, val
        if max_per_class is not None:
            trn_files, trn_y = _first_per_class(trn_files, trn_y, max_per_class)
            val_files, val_y = _first_per_class(val_files, val_y, max_per_class)
        trn_name, val_name, test_name = names
        sz = tfms[1].sz

        wanted = [(trn_name, trn_files, trn_y, classes), (val_name, val_files, val_y, classes)]
        if test_files is not None:
            wanted.append((test_name or "test", test_files, None, None))
        jobs = start_decoding(
            [(name, files) for name, files, _, _ in wanted], sz, tmp, num_workers=workers, progress=progress
        )
        splits = [Split.from_job(job, files, y, path / name, cls_) for job, (name, files, y, cls_) in zip(jobs, wanted)]
        for s in splits:
            if s.decoding is None:
                s._ready()  # decoded already: its warnings and errors come from here, as they always did
        trn_split, val_split = splits[:2]
        test = splits[2] if test_files is not None else None
        return cls(path, list(classes), trn_split, val_split, test, tfms, bs, workers, work_dir=work, tmp_dir=tmp)

    @classmethod
    def from_classes(
        cls,
        classes: list[str],
        tfms: tuple[Transforms, Transforms] | None = None,
        bs: int = 64,
        work_dir: str | Path = ".",
    ) -> ImageClassifierData:
        """A data object with classes and transforms but no images: what a learner needs to predict new files.

        Example:
            data = ImageClassifierData.from_classes(["cats", "dogs"], tfms_from_model(resnet50, 224))
            learn = ConvLearner.pretrained(resnet50, data, weights=None); learn.load("runs/r1/model.weights.h5")
            log_probs, ok = learn.predict_files(["a.jpg", "b.jpg"])
        """
        if tfms is None:
            tfms = (Transforms(224), Transforms(224))
        sz = tfms[1].sz
        empty = lambda name: Split(
            name, [], np.zeros(0, dtype=np.int64), np.zeros((0, sz, sz, 3), dtype=np.uint8), np.zeros(0, dtype=np.int64)
        )  # noqa: E731
        return cls(
            Path(work_dir),
            list(classes),
            empty("train"),
            empty("valid"),
            None,
            tfms,
            bs,
            default_workers(),
            work_dir=Path(work_dir),
        )

    def __repr__(self) -> str:
        n_test = len(self.test_ds) if self.test_ds is not None else 0
        return f"ImageClassifierData({self.path}, classes={self.classes}, sz={self.sz}, train={len(self.trn_ds)}, valid={len(self.val_ds)}, test={n_test}, bs={self.bs})"
