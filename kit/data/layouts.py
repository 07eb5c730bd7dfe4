"""The three ways a folder holds a labelled image data set, found by looking at it.

    "folders"   train/<class>/ and valid/<class>/ (the lesson's layout; an optional flat test/)
    "csv"       an image folder and a labels CSV beside it (Kaggle's usual: dog breeds, cactus, ...)
    "tree"      train/<class>/ only (plant seedlings as it ships): valid is a seeded split of it

A `Layout` says which, where each part is (absolute paths, so a run records them), and lists its
labelled files and their split without decoding anything (`Layout.lists`), which is what a run's data
fingerprint and `ImageClassifierData` are built from.

Example:

```python
layout = detect_layout("/kaggle/input/dog-breed-identification")
layout.kind, layout.labels.name, layout.images.name   # ('csv', 'labels.csv', 'train')
```
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from kit.data.images import is_image_name

KINDS = ("folders", "csv", "tree")
# A CSV in the folder that holds no labels: the sample submission, a test list, a submission.
_NOT_LABELS = ("sample_submission", "submission", "test")
# Test folders as Kaggle names them (dogs-vs-cats' test1/, APTOS' test_images/).
_TEST_NAMES = ("test", "test_images", "test1")
_PROBE = 20  # ids of a CSV compared with a folder's file names to find the folder they name


@dataclass(frozen=True)
class Lists:
    """A layout's labelled files split into train and valid, and its test files: nothing decoded."""

    classes: list[str]
    trn: tuple[list[Path], np.ndarray]
    val: tuple[list[Path], np.ndarray]
    test: list[Path] | None
    split_record: Path | None  # where a made split is recorded (None for valid/ folders)

    def labelled(self) -> tuple[list[Path], np.ndarray]:
        """Every labelled file, train then valid, and its label: what `kit cv` folds and `kit train --all` fits."""
        (tf, ty), (vf, vy) = self.trn, self.val
        return list(tf) + list(vf), np.concatenate([np.asarray(ty, dtype=np.int64), np.asarray(vy, dtype=np.int64)])

    def all_train(self) -> Lists:
        """Every labelled file as train, none held out (`kit train --all`)."""
        return Lists(self.classes, self.labelled(), ([], np.zeros(0, dtype=np.int64)), self.test, None)


@dataclass(frozen=True)
class Layout:
    kind: str
    root: Path
    images: Path  # the training images: train/ (its class folders for "folders" and "tree")
    labels: Path | None = None  # "csv": the labels CSV
    valid: Path | None = None  # "folders": valid/
    test: Path | None = None
    sample_submission: Path | None = None
    suffix: str | None = None  # "csv": appended to an id to name its image (None: inferred)
    id_column: str | None = None
    label_column: str | None = None

    def to_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        paths = ("root", "images", "labels", "valid", "test", "sample_submission")
        return cls(**{k: (Path(v) if k in paths and v is not None else v) for k, v in d.items()})

    def describe(self) -> str:
        if self.kind == "csv":
            return f"{self.images} labelled by {self.labels.name}"
        if self.kind == "tree":
            return f"{self.images}/<class>/ (valid split from it)"
        return f"{self.images}/<class>/ and {self.valid}/<class>/"

    def lists(self, work: str | os.PathLike, val_pct: float = 0.2, seed: int = 42) -> Lists:
        """The labelled files and their split (recorded under `work/splits/` when made here)."""
        from kit.data.files import check_same_classes, read_class_folders, read_flat_folder

        test = read_flat_folder(self.test) if self.test is not None else None
        if self.kind == "folders":
            trn_files, trn_y, classes = read_class_folders(self.images.parent, self.images.name)
            val_files, val_y, val_classes = read_class_folders(self.valid.parent, self.valid.name)
            check_same_classes(classes, val_classes, self.root, self.images.name, self.valid.name)
            return Lists(classes, (trn_files, trn_y), (val_files, val_y), test, None)
        from kit.data.labels import read_class_tree, read_labels_csv, recorded_val_idxs

        if self.kind == "csv":
            table = read_labels_csv(self.labels, self.images, self.suffix, self.id_column, self.label_column)
        else:
            table = read_class_tree(self.images)
        val, record = recorded_val_idxs(table, work, val_pct, seed)
        trn = np.setdiff1d(np.arange(len(table)), val)
        y = table.y
        return Lists(
            table.classes,
            ([table.files[i] for i in trn], y[trn]),
            ([table.files[i] for i in val], y[val]),
            test,
            record,
        )


def _listing(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_dirs(folder: Path) -> list[Path]:
    return [p for p in _listing(folder) if p.is_dir()] if folder.is_dir() else []


def _has_images(folder: Path) -> bool:
    return any(is_image_name(e.name) for e in os.scandir(folder))


def _csv_ids(path: Path, n: int = _PROBE) -> tuple[list[str], list[str]]:
    """The header and the first ids (first column) of a CSV; ([], []) when it cannot be read as one."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            ids = [row[0].strip() for _, row in zip(range(n), reader) if row]
    except (OSError, UnicodeDecodeError, csv.Error):
        return [], []
    return header, ids


def _names_ids(folder: Path, ids: list[str]) -> bool:
    """Whether `folder`'s files are what `ids` name (with or without an extension)."""
    stems = {e.name for e in os.scandir(folder)}
    stems |= {Path(n).stem for n in stems}
    return bool(ids) and all(i in stems for i in ids)


def _find_test(root: Path, exclude: Path | None) -> Path | None:
    for name in _TEST_NAMES:
        p = root / name
        if p.is_dir() and p != exclude and _has_images(p):
            return p
    return None


def _find_sample(root: Path) -> Path | None:
    found = sorted(p for p in root.glob("*.csv") if "sample" in p.name.lower() and "submission" in p.name.lower())
    return found[0] if found else None


def _image_folder_for(root: Path, ids: list[str], csv_path: Path) -> Path:
    candidates = [p for p in _listing(root) if p.is_dir() and _names_ids(p, ids)]
    if not candidates:
        folders = ", ".join(p.name for p in _listing(root) if p.is_dir()) or "none"
        raise ValueError(
            f"No folder of {root} holds the images that {csv_path.name}'s ids name (e.g. {ids[:1]}); "
            f"its folders: {folders}. Name it with --images DIR."
        )
    # train_images/ over test_images/ should both match (they cannot: test ids are not in the labels).
    return candidates[0]


def detect_layout(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
) -> Layout:
    """The layout of `root`, found by looking: valid/<class>/ folders, else a labels CSV beside an image
    folder (named with `labels`, or the one CSV that is not a sample submission or a test list), else
    train/<class>/ alone. `labels` and `images` may be relative to `root`.

    Raises:
        FileNotFoundError: `root`, or a named file or folder, does not exist.
        ValueError: no layout fits (the message lists the three and what the folder holds), or two CSVs
            could be the labels.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder not found: {root}.")
    sample = _find_sample(root)
    if labels is not None or images is not None:
        if labels is None:
            image_dir = _resolve(root, images, "--images")
            if len(_class_dirs(image_dir)) >= 2:
                return Layout("tree", root, image_dir, test=_find_test(root, image_dir), sample_submission=sample)
            labels = _only_labels_csv(root, required=True)
        csv_path = _resolve(root, labels, "--labels", folder=False)
        _, ids = _csv_ids(csv_path)
        image_dir = _resolve(root, images, "--images") if images is not None else _image_folder_for(root, ids, csv_path)
        return Layout(
            "csv", root, image_dir, labels=csv_path, test=_find_test(root, image_dir), sample_submission=sample
        )
    train, valid = root / "train", root / "valid"
    if len(_class_dirs(train)) >= 2 and len(_class_dirs(valid)) >= 2:
        return Layout("folders", root, train, valid=valid, test=_find_test(root, None), sample_submission=sample)
    csv_path = _only_labels_csv(root, required=False)
    if csv_path is not None:
        _, ids = _csv_ids(csv_path)
        image_dir = _image_folder_for(root, ids, csv_path)
        return Layout(
            "csv", root, image_dir, labels=csv_path, test=_find_test(root, image_dir), sample_submission=sample
        )
    if len(_class_dirs(train)) >= 2:
        return Layout("tree", root, train, test=_find_test(root, train), sample_submission=sample)
    found = ", ".join(p.name + ("/" if p.is_dir() else "") for p in _listing(root)[:12]) or "nothing"
    raise ValueError(
        f"{root} is in none of the layouts the kit reads: train/<class>/ with valid/<class>/; an image "
        f"folder with a labels CSV beside it (id,label; name them with --labels FILE --images DIR); or "
        f"train/<class>/ alone. It holds: {found}."
    )


def _resolve(root: Path, path: str | os.PathLike, flag: str, folder: bool = True) -> Path:
    p = Path(path)
    p = (p if p.is_absolute() else root / p).absolute()
    if not (p.is_dir() if folder else p.is_file()):
        raise FileNotFoundError(f"{flag} {path}: no such {'folder' if folder else 'file'} ({p}).")
    return p


def _only_labels_csv(root: Path, required: bool) -> Path | None:
    found = [
        p
        for p in sorted(root.glob("*.csv"))
        if not any(p.name.lower().startswith(s) for s in _NOT_LABELS) and "submission" not in p.name.lower()
    ]
    if len(found) > 1:
        raise ValueError(
            f"{root} holds {len(found)} CSVs that could be the labels ({', '.join(p.name for p in found)}): "
            "name the one with --labels FILE."
        )
    if not found and required:
        raise ValueError(f"{root} holds no labels CSV (id,label): name it with --labels FILE.")
    return found[0] if found else None
