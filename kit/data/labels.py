"""A data set is a list of image files and their labels: read from a labels CSV or from class folders,
without moving a file, and split into train and valid by a seeded split that is recorded.

Kaggle ships most image competitions as a flat image folder and a CSV (`id,label`): dog breeds'
`labels.csv`, histopathology's `train_labels.csv` over 220,025 tiles. `read_labels_csv` checks every
row (a sentence naming the line and the rule for a missing image, a duplicate id, an empty label, an
unknown column; multi-label CSVs refused) and lists the image folder once, so a large folder costs one
directory read, not a `stat` per row. The images stay where they lie (a read-only /kaggle/input too).

Example:

```python
table = read_labels_csv("data/dog-breed/labels.csv", "data/dog-breed/train", suffix=".jpg")
val = recorded_val_idxs(table, "work/splits", val_pct=0.2, seed=42)   # the same split on every run
```
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.checks import check_int, check_number
from kit.data.images import IMAGE_EXTENSIONS, is_image_name
from kit.io import atomic_write_json

# How many offending rows an error shows before "and N more".
_SHOW = 5
# A split record's format; bumped when its meaning changes, so an old one is not reused.
SPLIT_VERSION = 1


@dataclass
class LabelledFiles:
    """Images and their labels (strings), one per row, with the id each row is known by.

    `classes` are the distinct labels, sorted (numerically when every label is an integer, so grades
    "0".."10" keep their order); `y` are the rows' indices into them.
    """

    files: list[Path]
    labels: list[str]
    ids: list[str]
    source: str  # what the rows were read from, for messages and the run's record

    def __len__(self) -> int:
        return len(self.files)

    @property
    def classes(self) -> list[str]:
        return sort_classes(self.labels)

    @property
    def y(self) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index[label] for label in self.labels], dtype=np.int64)

    def subset(self, idxs: np.ndarray) -> LabelledFiles:
        return LabelledFiles(
            [self.files[i] for i in idxs], [self.labels[i] for i in idxs], [self.ids[i] for i in idxs], self.source
        )


def sort_classes(labels: Sequence[str]) -> list[str]:
    """The distinct labels, sorted as numbers when all are integers ("2" before "10"), else as text."""
    distinct = set(labels)
    if all(c.lstrip("-").isdigit() for c in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _shown(items: list[str]) -> str:
    more = f"; and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return "; ".join(items[:_SHOW]) + more


def _column(header: list[str], name: str | None, default: int, what: str, path: Path) -> int:
    if name is None:
        return default
    if name not in header:
        raise ValueError(f"{path}: no column {name!r} for the {what}; the header is {','.join(header)!r}.")
    return header.index(name)


def infer_suffix(ids: Sequence[str], names: set[str], folder: Path, csv_path: Path) -> str:
    """The extension that turns the CSV's ids into file names of `folder`: "" when the ids are file names
    (aerial cactus' `0004be2c.jpg`), else the one image extension that names the first ids' files."""
    probe = list(ids[:50])
    if all(i in names for i in probe):
        return ""
    exts = sorted({Path(n).suffix for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS})
    for ext in exts:
        if all(f"{i}{ext}" in names for i in probe):
            return ext
    raise ValueError(
        f"{csv_path}: the ids do not name images of {folder}, with or without an extension: row 2's id "
        f"{probe[0]!r} is neither a file there nor {probe[0]!r} + one of {exts or 'no image extension'}. "
        "Name the image folder (--images) and the extension (suffix=, e.g. '.jpg')."
    )


def read_labels_csv(
    csv_path: str | os.PathLike,
    folder: str | os.PathLike,
    suffix: str | None = "",
    id_column: str | None = None,
    label_column: str | None = None,
) -> LabelledFiles:
    """Reads a labels CSV (`id,label`, a header first) over the images of `folder`: row → `folder/<id><suffix>`.

    Args:
        csv_path: Path. The CSV; its first column is the id, its second the label (or name them).
        folder: Path. The folder of the images the ids name.
        suffix: String or None. Appended to an id to name its file (".jpg"); None infers it
            (`infer_suffix`): "" when the ids are file names.
        id_column, label_column: Strings or None. The columns to read, by header name.

    Raises:
        FileNotFoundError: the CSV or the folder is missing.
        ValueError: naming the line and the rule: an unknown column, a row of the wrong length, an
            empty id or label, a duplicate id, an id whose image is missing, a multi-label CSV
            (several space-separated tags per row: not supported yet), fewer than two classes.
    """
    csv_path, folder = Path(csv_path), Path(folder)
    if not csv_path.is_file():
        raise FileNotFoundError(f"Labels CSV not found: {csv_path}.")
    if not folder.is_dir():
        raise FileNotFoundError(f"Image folder not found: {folder} (the images the ids of {csv_path} name).")
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{csv_path} is empty: expected a header (id,label) and one row per image.")
    header = [h.strip() for h in rows[0]]
    if id_column is None and label_column is None and len(header) != 2:
        raise ValueError(
            f"{csv_path}: line 1 has {len(header)} columns {header}: the kit reads an id column and one label "
            "column. Name them with id_column= and label_column= (--id-column, --label-column)."
        )
    ic = _column(header, id_column, 0, "ids", csv_path)
    lc = _column(header, label_column, 1, "labels", csv_path)
    if ic == lc:
        raise ValueError(f"{csv_path}: the id and label columns must differ; both are {header[ic]!r}.")
    names = {e.name for e in os.scandir(folder)}  # one directory read, however many rows
    ids: list[str] = []
    labels: list[str] = []
    lines: dict[str, int] = {}
    problems: list[str] = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue  # a blank line (a trailing newline)
        if len(row) != len(header):
            problems.append(f"line {n} has {len(row)} fields, the header {len(header)}: {row!r}")
            continue
        i, label = row[ic].strip(), row[lc].strip()
        if not i:
            problems.append(f"line {n}: the id ({header[ic]!r}) is empty")
        elif not label:
            problems.append(f"line {n}: id {i!r} has an empty label ({header[lc]!r})")
        elif i in lines:
            problems.append(f"line {n}: id {i!r} appears twice (lines {lines[i]} and {n})")
        else:
            lines[i] = n
            ids.append(i)
            labels.append(label)
    if problems:
        raise ValueError(f"{csv_path}: {len(problems)} bad rows: " + _shown(problems) + ".")
    if not ids:
        raise ValueError(f"{csv_path} has a header but no rows.")
    _refuse_multi_label(labels, lines, ids, csv_path)
    if suffix is None:
        suffix = infer_suffix(ids, names, folder, csv_path)
    missing = [
        f"line {lines[i]}: id {i!r} has no image {folder / (i + suffix)}" for i in ids if i + suffix not in names
    ]
    if missing:
        raise ValueError(f"{csv_path}: {len(missing)} rows name no image: " + _shown(missing) + ".")
    not_images = [i + suffix for i in ids if not is_image_name(i + suffix)]
    if not_images:
        raise ValueError(
            f"{csv_path}: ids must name image files (.jpg, .png, .tif, ...); {len(not_images)} do not, "
            f"e.g. {not_images[0]!r}. Give the extension as suffix= (e.g. '.jpg')."
        )
    if len(set(labels)) < 2:
        raise ValueError(f"{csv_path}: needs at least two classes; every row has the label {labels[0]!r}.")
    return LabelledFiles([folder / (i + suffix) for i in ids], labels, ids, str(csv_path))


def _refuse_multi_label(labels: list[str], lines: dict[str, int], ids: list[str], csv_path: Path) -> None:
    """A CSV whose labels are combinations of space-separated tags (Planet's "clear primary road") is
    multi-label: refused. A class name that merely holds a space ("Sugar beet") is not: its words are
    not reused to make more classes than there are words."""
    spaced = [k for k, label in enumerate(labels) if len(label.split()) > 1]
    if not spaced:
        return
    distinct = set(labels)
    tags = {t for label in distinct for t in label.split()}
    uses = Counter(t for label in distinct for t in set(label.split()))
    # Multi-label: fewer tags than combinations, or a label made only of tags that other labels reuse
    # ("clear primary" beside "clear road" and "haze primary"); "Common wheat" has its own "wheat".
    reused = any(all(uses[t] >= 2 for t in label.split()) for label in distinct if len(label.split()) > 1)
    if len(tags) < len(distinct) or reused:
        k = spaced[0]
        raise ValueError(
            f"{csv_path}: line {lines[ids[k]]}: label {labels[k]!r} holds several space-separated tags, and "
            f"{len(set(labels))} label combinations use {len(tags)} tags: a multi-label competition, which the kit "
            "does not support yet (one class per image)."
        )


def read_class_tree(folder: str | os.PathLike) -> LabelledFiles:
    """`folder/<class>/<image>` as labelled files (plant seedlings' `train/`), ids `<class>/<name>`."""
    from kit.data.files import read_class_folders

    folder = Path(folder)
    files, y, classes = read_class_folders(folder.parent, folder.name)
    return LabelledFiles(files, [classes[k] for k in y], [f"{f.parent.name}/{f.name}" for f in files], str(folder))


# ---------------------------------------------------------------------------------------------
# The validation split.


def get_cv_idxs(n: int, val_pct: float = 0.2, seed: int = 42) -> np.ndarray:
    """The lesson-2 name: `int(val_pct * n)` indices of `n` rows drawn at random with `seed`, sorted.

    Example:

    ```python
    val_idxs = get_cv_idxs(len(labels))   # 20% of the rows, the same ones every time
    ```
    """
    n = check_int("n", n, min=1)
    check_number("val_pct", val_pct, min=0, max=1, min_open=True, max_open=True)
    n_val = int(val_pct * n)
    if n_val < 1:
        raise ValueError(f"val_pct={val_pct} of {n} rows leaves no validation row: use a larger val_pct.")
    return np.sort(np.random.default_rng(seed).permutation(n)[:n_val])


def val_split(labels: Sequence[str], val_pct: float = 0.2, seed: int = 42) -> np.ndarray:
    """The validation rows of a labelled list, `int(val_pct * n)` of them, stratified: each class keeps
    its share (largest remainder). A class of one row cannot both train and validate: it trains, and the
    split is stratified over the others. Sorted indices.

    Raises:
        ValueError: the split would leave a class with no training row (a val_pct too large).
    """
    from kit.kaggle.layout import stratified_split

    labels = list(labels)
    n_val = len(get_cv_idxs(len(labels), val_pct, seed))
    counts = Counter(labels)
    pool = np.array([k for k, label in enumerate(labels) if counts[label] >= 2], dtype=np.int64)
    if n_val > len(pool):
        raise ValueError(
            f"val_pct={val_pct} asks for {n_val} validation rows, but only {len(pool)} rows belong to classes "
            "of two rows or more: use a smaller val_pct."
        )
    _, chosen = stratified_split([labels[k] for k in pool], n_val, seed)
    idxs = np.sort(pool[chosen])
    left = Counter(labels) - Counter(labels[i] for i in idxs)
    gone = sorted(c for c in counts if left[c] == 0)
    if gone:
        raise ValueError(
            f"val_pct={val_pct} leaves no training image of class {gone[0]!r} ({counts[gone[0]]} rows): "
            "use a smaller val_pct, or more images of that class."
        )
    return idxs


def split_record_path(work: str | os.PathLike, source: str, val_pct: float, seed: int) -> Path:
    """Where a split of `source` with these parameters is recorded: `<work>/splits/<name>-<pct>-<seed>.json`."""
    name = Path(source).stem if Path(source).suffix.lower() == ".csv" else Path(source).name
    return Path(work) / "splits" / f"{name}-val{round(val_pct * 100, 3):g}-seed{seed}.json"


def recorded_val_idxs(
    table: LabelledFiles, work: str | os.PathLike, val_pct: float = 0.2, seed: int = 42
) -> tuple[np.ndarray, Path]:
    """The validation rows of `table`, as recorded under `work/splits/` by an earlier run, else made by
    `val_split` and recorded: a second run validates on the same images even if rows were added since
    (new rows train). Returns the indices and the record's path."""
    path = split_record_path(work, table.source, val_pct, seed)
    where = {i: k for k, i in enumerate(table.ids)}
    try:
        record = json.loads(path.read_text())
        if record.get("version") == SPLIT_VERSION and record.get("val_pct") == val_pct and record.get("seed") == seed:
            valid = record["valid"]
            if valid and all(i in where for i in valid):
                idxs = np.sort(np.array([where[i] for i in valid], dtype=np.int64))
                left = set(table.labels) - {table.labels[k] for k in set(range(len(table))) - set(idxs.tolist())}
                if not left:  # every class still trains
                    return idxs, path
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no record (or a damaged one): made again below, from the same seed
    idxs = val_split(table.labels, val_pct, seed)
    record = {
        "version": SPLIT_VERSION,
        "source": table.source,
        "val_pct": val_pct,
        "seed": seed,
        "valid": [table.ids[k] for k in idxs],
    }
    atomic_write_json(path, record)
    return idxs, path
