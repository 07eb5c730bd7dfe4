"""Kaggle submission files: written atomically, validated against the competition, scored locally.

A submission is `<out_dir>/<slug>-<UTC time>-<arch>.csv`, e.g.
`submissions/dogs-vs-cats-redux-kernels-edition-20240131T120000Z-resnet50.csv`. It is written to a
temporary file in the same folder, checked, and renamed into place, so no reader (nor the upload)
ever sees half a file.

Example:

```python
path = write_submission(comp, test_ids, probs, data.classes, arch="resnet50")
validate_submission(comp, path, test_ids)
score_submission(comp, path, comp.local_answers(zips_dir))   # offline competitions only
```
"""
from __future__ import annotations

import csv
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from kit.competition import Competition, get_competition, parse_value, score_rows

DEFAULT_OUT_DIR = "submissions"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# How many missing or unknown ids an error message shows before "…".
_SHOW = 5


def submission_path(
    competition: Competition | str,
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
    arch: str = "resnet50",
    now: datetime | None = None,
) -> Path:
    """The file name a submission gets: `<out_dir>/<slug>-<YYYYmmddTHHMMSSZ>-<arch>.csv` (UTC).

    Args:
        competition: Competition or slug.
        out_dir: Path. The folder of submissions.
        arch: String. The architecture, so the file says which model made it.
        now: datetime or None. The time to stamp (naive means UTC); None means now.
    """
    comp = get_competition(competition)
    if not isinstance(arch, str) or not re.fullmatch(r"[A-Za-z0-9_.+-]+", arch) or arch.startswith("."):
        raise ValueError(f"arch must be a name of letters, digits and _.+- (it goes in a file name). Received arch={arch!r}")
    now = datetime.now(timezone.utc) if now is None else now
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return Path(out_dir) / f"{comp.slug}-{now.strftime(TIME_FORMAT)}-{arch}.csv"


def write_submission(
    competition: Competition | str,
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
    arch: str = "resnet50",
    eps: float | None = None,
    now: datetime | None = None,
) -> Path:
    """Writes a validated submission CSV atomically and returns its path.

    For a log-loss competition each probability is clipped to [eps, 1 - eps]: Kaggle charges
    -log(p) for the true class, so one confident mistake (p = 0) would cost infinity; with the
    default eps = 0.005 it costs at most log(200) = 5.3.

    Example:

    ```python
    write_submission("dogs-vs-cats-redux-kernels-edition", ["1", "2"], probs, ["cats", "dogs"])
    ```

    Args:
        competition: Competition or slug.
        ids: Sequence of strings. The test ids, one per row of probs (see `Competition.test_id`).
        probs: Array (N, len(classes)). Class probabilities from the model.
        classes: Sequence of strings. The class of each column of probs (the data's classes).
        out_dir: Path. The folder of submissions (created if missing).
        arch: String. The architecture name, put in the file name.
        eps: Float or None. The log-loss clip; None means the competition's (0.005 for redux).
            Ignored for accuracy competitions.
        now: datetime or None. The time in the file name; None means now (UTC).

    Returns:
        The path of the written CSV.
    """
    comp = get_competition(competition)
    rows = comp.submission_rows(ids, probs, classes, eps=eps)
    path = submission_path(comp, out_dir, arch, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(comp.submission_columns)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; a submission is an ordinary file.
        os.chmod(tmp, 0o644)
        validate_submission(comp, tmp, [str(i) for i in ids], _name=path)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_submission(competition: Competition | str, path: str | os.PathLike, _name: Path | None = None) -> dict[str, str]:
    """Reads a submission, checking its header, its rows' shape, each value and each id's uniqueness.

    Returns:
        {id: label text}, in file order.
    """
    comp = get_competition(competition)
    path = Path(path)
    name = _name or path
    if not path.is_file():
        raise FileNotFoundError(f"submission file not found: {name}")
    id_col, label_col = comp.submission_columns
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{name}: the file is empty; it must start with the header {id_col},{label_col}")
        if [h.strip() for h in header] != [id_col, label_col]:
            raise ValueError(f"{name}: line 1 must be the header {id_col},{label_col}. Received {','.join(header)!r}")
        for row in reader:
            n = reader.line_num
            if len(row) != 2:
                raise ValueError(
                    f"{name}: line {n} must have 2 fields ({id_col},{label_col}). Received {len(row)}: {row!r}"
                )
            i, v = row[0].strip(), row[1].strip()
            if not i:
                raise ValueError(f"{name}: line {n}, column {id_col!r} must not be empty")
            if i in lines:
                raise ValueError(f"{name}: line {n}, column {id_col!r}: id {i!r} appears twice (lines {lines[i]} and {n})")
            try:
                parse_value(comp, v)
            except ValueError as e:
                raise ValueError(f"{name}: line {n}, column {label_col!r} (id {i!r}) {e}") from None
            lines[i] = n
            values[i] = v
    return values


def _show(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids[:_SHOW]) + (" …" if len(ids) > _SHOW else "")


def validate_submission(
    competition: Competition | str,
    path: str | os.PathLike,
    expected_ids: Iterable[str],
    _name: Path | None = None,
) -> None:
    """Checks a submission file against the competition; raises ValueError naming the file, line and rule.

    The rules: the header is the competition's columns; every row has two fields; each value is
    valid (a probability in [0, 1], a class index or a class name); every test id appears exactly
    once; there is no unknown id (so there is one row per test image).

    Example:

    ```python
    validate_submission(comp, "submissions/x.csv", test_ids)
    ```

    Args:
        competition: Competition or slug.
        path: Path. The submission CSV.
        expected_ids: Iterable of strings. The ids of the test images.
    """
    comp = get_competition(competition)
    name = _name or Path(path)
    values = read_submission(comp, path, _name=name)
    expected = [str(i) for i in expected_ids]
    expected_set = set(expected)
    unknown = [i for i in values if i not in expected_set]
    if unknown:
        raise ValueError(f"{name}: column {comp.submission_columns[0]!r} has ids that are not test images: {_show(unknown)}")
    missing = [i for i in expected if i not in values]
    if missing:
        raise ValueError(
            f"{name}: needs one row per test image ({len(expected_set)}), has {len(values)}; "
            f"missing ids: {_show(missing)}"
        )


def _read_answers(competition: Competition, answers: Mapping[str, str] | str | os.PathLike) -> dict[str, str]:
    if isinstance(answers, Mapping):
        return {str(k): str(v) for k, v in answers.items()}
    path = Path(answers)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) != 2:
        raise ValueError(f"{path}: answers must be a CSV with the header id,<class>. Received {rows[:1]!r}")
    out = {}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise ValueError(f"{path}: line {n} must have 2 fields (id,class). Received {row!r}")
        out[row[0].strip()] = row[1].strip()
    return out


def score_submission(
    competition: Competition | str,
    path: str | os.PathLike,
    answers: Mapping[str, str] | str | os.PathLike,
) -> float:
    """Scores a submission locally with the competition's metric (scikit-learn's log_loss or accuracy).

    Example:

    ```python
    score_submission("digits", path, COMPETITION.local_answers(zips_dir))   # accuracy, e.g. 0.97
    ```

    Args:
        competition: Competition or slug.
        path: Path. The submission CSV (validated first).
        answers: Mapping {test id: class name}, or the path of a CSV `id,<class>` holding them.

    Returns:
        The log loss (lower is better) or the accuracy (higher is better).
    """
    comp = get_competition(competition)
    truth = _read_answers(comp, answers)
    validate_submission(comp, path, truth)
    return score_rows(comp, read_submission(comp, path), truth)
