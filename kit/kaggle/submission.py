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
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kit import metrics
from kit.io import atomic_path
from kit.kaggle.competition import Competition, get_competition

DEFAULT_OUT_DIR = "submissions"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# How many missing or unknown ids an error message shows before "…".
_SHOW = 5


# -- the rows: format, parse, score ------------------------------------------------------------


def _check_classes(competition: Competition, classes: Sequence[str]) -> list[str]:
    classes = [str(c) for c in classes]
    if sorted(classes) != sorted(competition.classes):
        raise ValueError(
            f"classes must be the classes of {competition.slug!r} {list(competition.classes)} in the "
            f"model's column order. Received classes={classes}"
        )
    return classes


def _sort_key(i: str):
    # Kaggle lists test ids numerically (1, 2, …, 10), not as strings (1, 10, 2).
    return (0, int(i), "") if i.isdigit() else (1, 0, i)


def submission_rows(
    competition: Competition,
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    eps: float | None = None,
) -> list[tuple[str, str]]:
    """Turns test ids and class probabilities into the competition's submission rows.

    Rows are sorted by id (numerically when every id is a number, as Kaggle's sample files are).
    For log loss the probability is clipped to [eps, 1 - eps] (see DEFAULT_EPS for why).

    Example:

    ```python
    submission_rows(redux, ["1", "2"], np.array([[0.9, 0.1], [0.2, 0.8]]), ["cats", "dogs"])
    # [("1", "0.1"), ("2", "0.8")]
    ```

    Args:
        competition: Competition. What the submission must look like.
        ids: Sequence of strings. Test ids, one per row of probs.
        probs: Array of shape (N, len(classes)). Class probabilities (not log-probabilities).
        classes: Sequence of strings. The class of each column of probs.
        eps: Float or None. The clip for log loss; None means `competition.eps`.

    Returns:
        A list of (id, label text) tuples.
    """
    classes = _check_classes(competition, classes)
    ids = [str(i) for i in ids]
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(ids), len(classes)):
        raise ValueError(
            f"probs must have shape (len(ids), len(classes)) = ({len(ids)}, {len(classes)}). "
            f"Received probs.shape={probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or probs.min(initial=0.0) < 0 or probs.max(initial=0.0) > 1:
        raise ValueError(
            "probs must be probabilities in [0, 1] (apply exp to log-probabilities). "
            f"Received values in [{np.nanmin(probs) if probs.size else 0}, {np.nanmax(probs) if probs.size else 0}]"
        )
    seen: set[str] = set()
    for i in ids:
        if not i or i in seen:
            raise ValueError(f"ids must be distinct and non-empty. Received {i!r}" + (" twice" if i else ""))
        seen.add(i)
    eps = competition.eps if eps is None else eps
    if not (isinstance(eps, (int, float)) and 0 <= eps < 0.5):
        raise ValueError(f"eps must be in [0, 0.5). Received eps={eps!r}")

    kind = competition.submission_kind
    if kind == "probability":
        p = probs[:, classes.index(competition.positive_class)]
        if competition.metric == "log_loss":
            p = np.clip(p, eps, 1 - eps)
        # Six significant digits keep far more precision than the log-loss clip needs.
        labels = [format(float(v), ".6g") for v in p]
    else:
        predicted = [classes[k] for k in np.argmax(probs, axis=1)]
        if kind == "class_index":
            labels = [str(competition.classes.index(c)) for c in predicted]
        else:
            labels = predicted
    return sorted(zip(ids, labels), key=lambda row: _sort_key(row[0]))


def parse_value(competition: Competition, text: str) -> float | str:
    """Parses one submission label; raises ValueError saying the rule when it is not valid.

    Returns:
        The probability (float) for "probability" submissions, otherwise the class name.
    """
    kind = competition.submission_kind
    if kind == "probability":
        try:
            v = float(text)
        except ValueError:
            raise ValueError(f"must be a probability in [0, 1]. Received {text!r}") from None
        if not math.isfinite(v) or not 0 <= v <= 1:
            raise ValueError(f"must be a probability in [0, 1]. Received {text!r}")
        return v
    if kind == "class_index":
        n = len(competition.classes)
        if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) >= n:
            raise ValueError(
                f"must be a class index 0..{n - 1} ({', '.join(f'{i}={c}' for i, c in enumerate(competition.classes))}). "
                f"Received {text!r}"
            )
        return competition.classes[int(text)]
    if text not in competition.classes:
        raise ValueError(f"must be one of the classes {list(competition.classes)}. Received {text!r}")
    return text


def score_rows(competition: Competition, values: Mapping[str, str], answers: Mapping[str, str]) -> float:
    """Scores submission values against known answers with the competition's metric.

    Example:

    ```python
    score_rows(redux, {"1": "0.9", "2": "0.2"}, {"1": "dogs", "2": "cats"})   # log loss 0.164
    ```

    Args:
        competition: Competition. Gives the metric and the meaning of a label.
        values: Mapping. Test id → label text as written in the submission.
        answers: Mapping. Test id → true class name; must cover exactly the same ids.

    Returns:
        The log loss (lower is better) or the accuracy (higher is better).
    """
    missing = sorted(set(answers) - set(values), key=_sort_key)
    extra = sorted(set(values) - set(answers), key=_sort_key)
    if missing or extra:
        raise ValueError(
            f"the submission's ids must be the answers' ids. Missing ids {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''}; unknown ids {extra[:5]}{' …' if len(extra) > 5 else ''}"
        )
    if not answers:
        raise ValueError("answers must not be empty")
    bad = {i: c for i, c in answers.items() if c not in competition.classes}
    if bad:
        i, c = next(iter(bad.items()))
        raise ValueError(
            f"answers must be classes of {competition.slug!r} {list(competition.classes)}. Received {c!r} for id {i!r}"
        )
    order = sorted(answers, key=_sort_key)
    parsed = [parse_value(competition, values[i]) for i in order]
    truth = [answers[i] for i in order]
    if competition.submission_kind == "probability":
        y = np.array([t == competition.positive_class for t in truth], dtype=np.int64)
        p = np.array(parsed, dtype=np.float64)
        if competition.metric == "log_loss":
            return metrics.log_loss(y, p, eps=metrics.SKLEARN_EPS)  # p: the positive class's probability
        return metrics.accuracy(y, (p >= 0.5).astype(np.int64))
    return metrics.accuracy(truth, parsed)


# -- the file ------------------------------------------------------------------------------------


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
        raise ValueError(
            f"arch must be a name of letters, digits and _.+- (it goes in a file name). Received arch={arch!r}"
        )
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
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(comp.submission_columns)
    writer.writerows(rows)
    text = buf.getvalue()
    # Validated before it exists under its real name: a bad file is never left in submissions/.
    with atomic_path(path, need=len(text.encode()), what=f"the submission {path.name}") as tmp:
        tmp.write_text(text, newline="")
        validate_submission(comp, tmp, [str(i) for i in ids], _name=path)
    return path


def read_submission(
    competition: Competition | str, path: str | os.PathLike, _name: Path | None = None
) -> dict[str, str]:
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
                raise ValueError(
                    f"{name}: line {n}, column {id_col!r}: id {i!r} appears twice (lines {lines[i]} and {n})"
                )
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
        raise ValueError(
            f"{name}: column {comp.submission_columns[0]!r} has ids that are not test images: {_show(unknown)}"
        )
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
    """Scores a submission locally with the competition's metric (`kit.metrics`: log loss or accuracy).

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
