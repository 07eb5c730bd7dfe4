"""Class folders → sorted file lists and integer labels, with errors that say what is wrong where."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from kit.data.images import is_image_name


def _listing(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if not p.name.startswith("."))


def _is_file_or_broken_link(p: Path) -> bool:
    # A link that dangles or loops is not a file, but it is kept so that decoding lists it in the
    # one warning of skipped images instead of it vanishing without a word.
    return p.is_file() or (p.is_symlink() and not p.exists())


def _split_images(files: list[Path], where: Path) -> list[Path]:
    files = [f for f in files if _is_file_or_broken_link(f)]
    images = [f for f in files if is_image_name(f)]
    others = [f.name for f in files if not is_image_name(f)]
    if others:
        shown = ", ".join(others[:10]) + (f" and {len(others) - 10} more" if len(others) > 10 else "")
        warnings.warn(f"Ignored {len(others)} non-image files in {where}: {shown}", stacklevel=3)
    return images


def read_class_folders(root: Path, split: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """Reads `root/split/<class>/*` into (files, labels, classes), classes sorted by name.

    Raises:
        FileNotFoundError: `root` or `root/split` does not exist.
        ValueError: fewer than two class folders, or an empty class folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"Data folder not found: {root} (expected {root}/{split}/<class>/<image>).")
    split_dir = root / split
    if not split_dir.is_dir():
        found = ", ".join(p.name for p in _listing(root) if p.is_dir()) or "no folders"
        raise FileNotFoundError(f"No '{split}' folder in {root}: expected {split_dir}/<class>/<image>; found {found}.")
    class_dirs = [p for p in _listing(split_dir) if p.is_dir()]
    if len(class_dirs) < 2:
        raise ValueError(
            f"{split_dir} needs one folder per class and at least two classes; "
            f"received {len(class_dirs)}: {[p.name for p in class_dirs]}."
        )
    files: list[Path] = []
    labels: list[int] = []
    for ci, d in enumerate(class_dirs):
        images = _split_images(_listing(d), d)
        if not images:
            raise ValueError(f"Class folder {d} has no images (extensions: .jpg, .png, ...).")
        files += images
        labels += [ci] * len(images)
    return files, np.asarray(labels, dtype=np.int64), [d.name for d in class_dirs]


def read_flat_folder(folder: Path) -> list[Path]:
    """The images of a flat folder (the test set), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Test folder not found: {folder}.")
    images = _split_images(_listing(folder), folder)
    if not images:
        raise ValueError(f"Test folder {folder} has no images.")
    return images


def check_same_classes(trn: list[str], val: list[str], root: Path, trn_name: str, val_name: str) -> None:
    if trn != val:
        raise ValueError(
            f"The class folders of {root / trn_name} and {root / val_name} differ: "
            f"{trn_name} has {trn}, {val_name} has {val}. "
            f"Only in {trn_name}: {sorted(set(trn) - set(val))}; only in {val_name}: {sorted(set(val) - set(trn))}."
        )
