"""Kaggle submission files: written atomically, validated against their format, scored locally.

A `SubmissionFormat` says what a file must look like: its columns, what a value means ("probability"
of one class, "class_index", "class_name", or "probabilities": one column per class), the metric, and,
when a sample_submission.csv is known, the ids in its order. `competition_format` builds one from a
plugin's `Competition`, `format_from_sample` infers one for a plain folder from its sample file. Every
function here takes a format, or a Competition or slug (whose format is built for it).

A submission is `<out_dir>/<name>-<UTC time>-<arch>.csv`, e.g.
`submissions/dogs-vs-cats-redux-kernels-edition-20240131T120000Z-resnet50.csv`. It is written to a
temporary file in the same folder, checked, and renamed into place, so no reader (nor the upload)
ever sees half a file.

Example:

```python
fmt = competition_format(comp, classes=data.classes, sample=zips / "sample_submission.csv")
path = write_submission(fmt, [fmt.id_of(f) for f in test_files], probs, data.classes, arch="resnet50")
score_submission(fmt, path, answers)   # answers: {test id: class name}, where they are known
```
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kit import metrics
from kit.checks import check_choice, check_number
from kit.data.images import is_image_name
from kit.io import atomic_path
from kit.kaggle.competition import (
    DEFAULT_EPS,
    METRICS,
    PROBABILITY_METRICS,
    SUBMISSION_KINDS,
    Competition,
    get_competition,
)

DEFAULT_OUT_DIR = "submissions"
TIME_FORMAT = "%Y%m%dT%H%M%SZ"
# What may go in a file name: an architecture, a slug, a folder's name.
FILE_PART = re.compile(r"[A-Za-z0-9_.+-]+")
# The class `format_from_sample` takes as "positive" for a one-column, two-class sample (compared in
# lower case): Kaggle's binary competitions ask for P(1) (cactus, cancer), P(True) or P(yes).
POSITIVE_NAMES = ("1", "true", "yes", "positive")
# How many ids (or columns) an error message shows before "…".
_SHOW = 5
_SHOW_COLUMNS = 8

# -- the format ------------------------------------------------------------------------------


def _check_file_part(what: str, value: object) -> str:
    if not isinstance(value, str) or not FILE_PART.fullmatch(value) or value.startswith("."):
        raise ValueError(
            f"{what} must be a name of letters, digits and _.+- (it goes in a file name). Received {what}={value!r}"
        )
    return value


@dataclass(frozen=True)
class SubmissionFormat:
    """What a submission file must look like, wherever the format came from (a plugin or a sample file).

    Example:

    ```python
    fmt = SubmissionFormat(name="histo", id_column="id", value_columns=("label",), kind="probability",
                           classes=("0", "1"), positive_class="1", metric="roc_auc")
    fmt.columns, fmt.id_of("f00d.tif")   # ("id", "label"), "f00d"
    ```

    Args:
        name: String. Goes in the file name (a slug or a folder's name): letters, digits and _.+-.
        id_column: String. The header of the id column.
        value_columns: Tuple of strings. The one label column, or for "probabilities" the class
            columns in file order (they are class names).
        kind: String. One of SUBMISSION_KINDS: "probability", "class_index", "class_name", "probabilities".
        classes: Tuple of strings. The class names, in the order "class_index" numbers them (and
            "quadratic_kappa" grades them 0..c-1).
        positive_class: String or None. For "probability": the class whose probability is written.
        metric: String. One of METRICS.
        eps: Float. Log-loss clip: probabilities are written within [eps, 1 - eps] (see DEFAULT_EPS).
        expected_ids: Tuple of strings or None. The sample submission's ids in its order, when known:
            rows are written in this order and a file must hold exactly these ids.
        keep_extension: Boolean. Whether a test id is the file name with its extension ("a1.png")
            or without ("a1").
    """

    name: str
    id_column: str
    value_columns: tuple[str, ...]
    kind: str
    classes: tuple[str, ...]
    positive_class: str | None = None
    metric: str = "log_loss"
    eps: float = DEFAULT_EPS
    expected_ids: tuple[str, ...] | None = None
    keep_extension: bool = False

    def __post_init__(self) -> None:
        for attr in ("value_columns", "classes") + (("expected_ids",) if self.expected_ids is not None else ()):
            object.__setattr__(self, attr, tuple(str(v) for v in getattr(self, attr)))
        _check_file_part("SubmissionFormat name", self.name)
        where = f"SubmissionFormat(name={self.name!r}): "
        if not isinstance(self.id_column, str) or not self.id_column:
            raise ValueError(f"{where}id_column must be a non-empty string. Received id_column={self.id_column!r}")
        check_choice("kind", self.kind, SUBMISSION_KINDS, prefix=where)
        check_choice("metric", self.metric, METRICS, prefix=where)
        check_number("eps", self.eps, min=0, max=0.5, max_open=True, prefix=where)
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes) or "" in self.classes:
            raise ValueError(f"{where}classes must be at least two distinct names. Received classes={self.classes!r}")
        columns = (self.id_column, *self.value_columns)
        if len(set(columns)) != len(columns) or "" in columns:
            raise ValueError(f"{where}the columns must be distinct non-empty names. Received {columns!r}")
        if self.kind == "probabilities":
            if sorted(self.value_columns) != sorted(self.classes):
                raise ValueError(
                    f"{where}a 'probabilities' submission has one column per class: value_columns must be the "
                    f"classes {list(self.classes)} in any order. Received value_columns={self.value_columns!r}"
                )
        elif len(self.value_columns) != 1:
            raise ValueError(
                f"{where}a {self.kind!r} submission has one value column. Received value_columns={self.value_columns!r}"
            )
        if self.kind in ("probability", "probabilities"):
            if self.kind == "probabilities" and self.metric not in PROBABILITY_METRICS:
                raise ValueError(
                    f"{where}a 'probabilities' submission is scored on probabilities "
                    f"({', '.join(PROBABILITY_METRICS)}). Received metric={self.metric!r}"
                )
            if self.kind == "probability" and self.positive_class not in self.classes:
                raise ValueError(
                    f"{where}a 'probability' submission needs two classes and positive_class among them. "
                    f"Received classes={self.classes!r}, positive_class={self.positive_class!r}"
                )
        elif self.metric in PROBABILITY_METRICS:
            raise ValueError(
                f"{where}metric={self.metric!r} is scored on probabilities: it needs kind='probability' or "
                f"'probabilities' (a hard class has no {self.metric}). Received kind={self.kind!r}"
            )
        if len(self.classes) != 2 and (self.kind == "probability" or self.metric == "roc_auc"):
            raise ValueError(
                f"{where}kind={self.kind!r} with metric={self.metric!r} is for two classes. "
                f"Received {len(self.classes)} classes {list(self.classes)[:_SHOW]}"
            )
        if self.expected_ids is not None and (
            len(set(self.expected_ids)) != len(self.expected_ids) or "" in self.expected_ids
        ):
            raise ValueError(f"{where}expected_ids must be distinct non-empty ids")

    @property
    def columns(self) -> tuple[str, ...]:
        """The header: the id column, then the value columns."""
        return (self.id_column, *self.value_columns)

    def id_of(self, filename: str | os.PathLike) -> str:
        """The test id of a test image: its file name, with or without the extension (`keep_extension`)."""
        p = Path(filename)
        return p.name if self.keep_extension else p.stem


def _read_sample(sample: str | os.PathLike) -> tuple[list[str], list[str]]:
    """A sample submission's header and ids (file order); refuses an empty file, an empty or repeated id."""
    path = Path(sample)
    if not path.is_file():
        raise FileNotFoundError(f"sample submission not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if len(header) < 2:
            raise ValueError(
                f"{path}: line 1 must be a header of an id column and at least one value column. "
                f"Received {','.join(header)!r}"
            )
        ids: list[str] = []
        lines: dict[str, int] = {}
        for row in reader:
            n = reader.line_num
            i = row[0].strip() if row else ""
            if not i:
                raise ValueError(f"{path}: line {n}, column {header[0]!r} must not be empty")
            if i in lines:
                raise ValueError(
                    f"{path}: line {n}, column {header[0]!r}: id {i!r} appears twice (lines {lines[i]} and {n})"
                )
            lines[i] = n
            ids.append(i)
    return header, ids


def competition_format(
    comp: Competition | str, classes: Sequence[str] | None = None, sample: str | os.PathLike | None = None
) -> SubmissionFormat:
    """The submission format a plugin's Competition declares.

    Example:

    ```python
    competition_format("dog-breed-identification", sample=zips / "sample_submission.csv")
    ```

    Args:
        comp: Competition or slug.
        classes: Sequence of strings or None. The data's classes: needed when `comp.classes` is empty
            (a labels_csv competition), otherwise they must be the competition's (in any order).
        sample: Path or None. The competition's sample_submission.csv: its header must be the
            competition's columns (for "probabilities": the id column and every class, whose order
            the file keeps), and its ids become `expected_ids`. Without it, "probabilities" columns
            follow the classes' order and any ids are accepted.
    """
    comp = get_competition(comp)
    where = f"competition {comp.slug!r}"
    header, sample_ids = _read_sample(sample) if sample is not None else (None, None)
    names = tuple(str(c) for c in classes) if classes is not None else ()
    if comp.classes and names and sorted(names) != sorted(comp.classes):
        raise ValueError(f"classes must be the classes of {where} {list(comp.classes)}. Received classes={list(names)}")
    names = comp.classes or names
    id_col = comp.submission_columns[0]
    if comp.submission_kind == "probabilities":
        if header is not None:
            if header[0] != id_col or (names and sorted(header[1:]) != sorted(names)):
                raise ValueError(
                    f"{sample}: line 1 must be {id_col!r} and one column per class of {where} "
                    f"({_join([id_col, *sorted(names)]) if names else id_col + ',<classes>'}). "
                    f"Received {_join(header)!r}"
                )
            names = names or tuple(header[1:])
        value_columns = tuple(header[1:]) if header is not None else names
    else:
        if header is not None and tuple(header) != comp.submission_columns:
            raise ValueError(
                f"{sample}: line 1 must be the header {_join(comp.submission_columns)} of {where}. "
                f"Received {_join(header)!r}"
            )
        value_columns = comp.submission_columns[1:]
    if not names:
        raise ValueError(
            f"{where} declares no classes (they are the data's): pass classes=data.classes"
            + (" or the sample submission" if comp.submission_kind == "probabilities" else "")
        )
    return SubmissionFormat(
        name=comp.slug,
        id_column=id_col,
        value_columns=value_columns,
        kind=comp.submission_kind,
        classes=names,
        positive_class=comp.positive_class,
        metric=comp.metric,
        eps=comp.eps,
        expected_ids=tuple(sample_ids) if sample_ids is not None else None,
        # A plugin's test_id is a function; the ones the kit offers keep the extension or drop it.
        keep_extension=comp.test_id("probe.png") == "probe.png",
    )


def default_eps(kind: str, n_classes: int) -> float:
    """The log-loss clip of a format read from a sample: DEFAULT_EPS, divided by c - 1 for a column per class
    (a confident right answer costs log(1 + (c - 1)·eps), so many classes want a smaller eps)."""
    return DEFAULT_EPS / (n_classes - 1 if kind == "probabilities" else 1)


def format_from_sample(
    sample_csv: str | os.PathLike,
    classes: Sequence[str],
    name: str,
    metric: str | None = None,
    eps: float | None = None,
) -> SubmissionFormat:
    """Infers the submission format of a plain folder from its sample_submission.csv and the data's classes.

    The rules, on the sample's header (its first column is the id):
    - the id and one column per class (any order) → "probabilities", columns in the header's
      order; metric default "log_loss".
    - the id and one column, two classes → "probability" of the positive class: the class the
      column is named after if there is one, else the class named "1", "True", "yes" or "positive"
      (any case), else the second class; metric default "log_loss". Given a metric scored on the
      class (accuracy, f1_micro, quadratic_kappa), "class_name" instead.
    - the id and one column, more classes → "class_name"; metric default "accuracy".
    - anything else → ValueError.
    Ids keep their extension (`keep_extension`) when every sample id has an image extension.

    Example:

    ```python
    fmt = format_from_sample("data/cactus/sample_submission.csv", ["0", "1"], "cactus", metric="roc_auc")
    fmt.kind, fmt.positive_class, fmt.id_of("a1.jpg")   # "probability", "1", "a1.jpg"
    ```

    Args:
        sample_csv: Path. The sample submission.
        classes: Sequence of strings. The data's classes (their order numbers them, see SubmissionFormat).
        name: String. The format's name, used in file names (e.g. the folder's name).
        metric: String or None. One of METRICS; None means the rule's default.
        eps: Float or None. The log-loss clip; None: DEFAULT_EPS, divided by c - 1 for a column per
            class, so that the clip adds no more mass to a row's wrong columns than the binary case's.
    """
    header, ids = _read_sample(sample_csv)
    classes = tuple(str(c) for c in classes)
    id_col, values = header[0], header[1:]
    positive = None
    if len(values) == len(classes) and sorted(values) == sorted(classes):
        kind, default = "probabilities", "log_loss"
    elif len(values) == 1 and len(classes) == 2 and (metric is None or metric in PROBABILITY_METRICS):
        kind, default = "probability", "log_loss"
        named = [c for c in classes if c.lower() in POSITIVE_NAMES]
        positive = values[0] if values[0] in classes else named[0] if named else classes[1]
    elif len(values) == 1 and len(classes) >= 2:
        kind, default = "class_name", "accuracy"
    else:
        raise ValueError(
            f"{sample_csv}: cannot tell the submission format from the header {_join(header)!r} and "
            f"{len(classes)} classes {list(classes)[:_SHOW]}. The rule: the id and one column per class "
            f"(probabilities), or the id and one column (the probability of the positive class for two "
            f"classes, else the class name)"
        )
    return SubmissionFormat(
        name=name,
        id_column=id_col,
        value_columns=tuple(values),
        kind=kind,
        classes=classes,
        positive_class=positive,
        metric=default if metric is None else metric,
        eps=eps if eps is not None else default_eps(kind, len(classes)),
        expected_ids=tuple(ids),
        keep_extension=bool(ids) and all(is_image_name(i) for i in ids),
    )


def _format(
    target: SubmissionFormat | Competition | str,
    classes: Sequence[str] | None = None,
    header: Sequence[str] | None = None,
) -> SubmissionFormat:
    """The format of a target; a classless "probabilities" competition takes its classes from a header."""
    if isinstance(target, SubmissionFormat):
        return target
    comp = get_competition(target)
    if comp.classes:
        # The competition's classes rule; a caller's are checked against them where they are used.
        return competition_format(comp)
    if classes is None and comp.submission_kind == "probabilities" and header:
        classes = [h.strip() for h in header[1:]]
    return competition_format(comp, classes=classes)


# -- the rows: format, parse, score ------------------------------------------------------------


def _join(columns: Sequence[str]) -> str:
    columns = list(columns)
    if len(columns) <= _SHOW_COLUMNS:
        return ",".join(columns)
    return ",".join(columns[:4]) + f",… ({len(columns)} columns)"


def _check_classes(fmt: SubmissionFormat, classes: Sequence[str]) -> list[str]:
    classes = [str(c) for c in classes]
    if sorted(classes) != sorted(fmt.classes):
        raise ValueError(
            f"classes must be the classes of {fmt.name!r} {list(fmt.classes)} in the "
            f"model's column order. Received classes={classes}"
        )
    return classes


def _sort_key(i: str):
    # Kaggle lists test ids numerically (1, 2, …, 10), not as strings (1, 10, 2).
    return (0, int(i), "") if i.isdigit() else (1, 0, i)


def _differences(have: Iterable[str], want: Iterable[str]) -> tuple[list[str], list[str]]:
    have, want = list(have), list(want)
    have_set, want_set = set(have), set(want)
    return [i for i in want if i not in have_set], [i for i in have if i not in want_set]


def submission_rows(
    target: SubmissionFormat | Competition | str,
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    eps: float | None = None,
) -> list[tuple[str, ...]]:
    """Turns test ids and class probabilities into the format's submission rows.

    Rows follow the sample submission's ids when the format knows them (the ids must then be exactly
    those), else they are sorted by id (numerically when every id is a number, as Kaggle's samples are).
    For log loss probabilities are clipped to [eps, 1 - eps] (see DEFAULT_EPS for why); a
    "probabilities" row is then divided by its sum (see below). Probabilities get 6 significant digits.

    Example:

    ```python
    submission_rows(redux, ["1", "2"], np.array([[0.9, 0.1], [0.2, 0.8]]), ["cats", "dogs"])
    # [("1", "0.1"), ("2", "0.8")]
    ```

    Args:
        target: SubmissionFormat, Competition or slug. What the submission must look like.
        ids: Sequence of strings. Test ids, one per row of probs.
        probs: Array of shape (N, len(classes)). Class probabilities (not log-probabilities).
        classes: Sequence of strings. The class of each column of probs.
        eps: Float or None. The clip for log loss; None means the format's.

    Returns:
        A list of tuples: (id, label text), or (id, one text per class column) for "probabilities".
    """
    fmt = _format(target, classes=classes)
    classes = _check_classes(fmt, classes)
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
    if fmt.expected_ids is not None:
        missing, unknown = _differences(ids, fmt.expected_ids)
        if missing or unknown:
            raise ValueError(
                f"ids must be the {len(fmt.expected_ids)} ids of the sample submission of {fmt.name!r}. "
                f"Missing ids: {_show(missing) or 'none'}; unknown ids: {_show(unknown) or 'none'}"
            )
    eps = fmt.eps if eps is None else eps
    if not (isinstance(eps, (int, float)) and 0 <= eps < 0.5):
        raise ValueError(f"eps must be in [0, 0.5). Received eps={eps!r}")

    # Six significant digits keep far more precision than the log-loss clip needs.
    if fmt.kind == "probabilities":
        p = probs[:, [classes.index(c) for c in fmt.value_columns]]
        if fmt.metric == "log_loss":
            # Kaggle divides each row by its sum before scoring, so a clipped row that no longer
            # sums to 1 would be scored on other numbers than the file shows: renormalising here
            # makes the written numbers the scored ones (and the local score Kaggle's). The clip
            # comes first so that no class is left at 0; after the division a value may sit a
            # little under eps. The clip's price grows with the classes: a confident right answer
            # costs log(1 + (c - 1)·eps), 0.47 for 120 breeds at eps = 0.005, so a many-class
            # competition wants a small eps (1e-4 costs 0.012 there).
            p = metrics.clip_rows(p, eps)
        labels = [tuple(format(float(v), ".6g") for v in row) for row in p]
    elif fmt.kind == "probability":
        p = probs[:, classes.index(fmt.positive_class)]
        if fmt.metric == "log_loss":
            p = np.clip(p, eps, 1 - eps)
        labels = [(format(float(v), ".6g"),) for v in p]
    else:
        predicted = [classes[k] for k in np.argmax(probs, axis=1)]
        if fmt.kind == "class_index":
            labels = [(str(fmt.classes.index(c)),) for c in predicted]
        else:
            labels = [(c,) for c in predicted]
    rows = [(i, *label) for i, label in zip(ids, labels)]
    if fmt.expected_ids is not None:
        position = {i: k for k, i in enumerate(fmt.expected_ids)}
        return sorted(rows, key=lambda row: position[row[0]])
    return sorted(rows, key=lambda row: _sort_key(row[0]))


def _probability(text: object) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"must be a probability in [0, 1]. Received {text!r}") from None
    if not math.isfinite(v) or not 0 <= v <= 1:
        raise ValueError(f"must be a probability in [0, 1]. Received {text!r}")
    return v


def parse_value(target: SubmissionFormat | Competition | str, text: str) -> float | str:
    """Parses one submission value; raises ValueError saying the rule when it is not valid.

    Returns:
        The probability (float) for "probability" and "probabilities" submissions (one class
        column's value), otherwise the class name.
    """
    fmt = _format(target)
    if fmt.kind in ("probability", "probabilities"):
        return _probability(text)
    if fmt.kind == "class_index":
        n = len(fmt.classes)
        if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) >= n:
            raise ValueError(
                f"must be a class index 0..{n - 1} ({', '.join(f'{i}={c}' for i, c in enumerate(fmt.classes))}). "
                f"Received {text!r}"
            )
        return fmt.classes[int(text)]
    if text not in fmt.classes:
        raise ValueError(f"must be one of the classes {list(fmt.classes)}. Received {text!r}")
    return text


def _class_score(metric: str, y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    if metric == "accuracy":
        return metrics.accuracy(y, pred)
    if metric == "f1_micro":
        return metrics.f1_micro(y, pred)
    if metric == "quadratic_kappa":
        return metrics.quadratic_kappa(y, pred, n_classes=n_classes)
    raise ValueError(f"metric {metric!r} is not scored on a class; choose one of accuracy, f1_micro, quadratic_kappa")


def score_rows(
    target: SubmissionFormat | Competition | str,
    values: Mapping[str, str | Sequence[str]],
    answers: Mapping[str, str],
) -> float:
    """Scores submission values against known answers with the format's metric.

    Log loss: of the true class's probability (for "probabilities" after dividing each row by its
    sum, as Kaggle does). ROC AUC: of the positive class's probability. Accuracy, micro-F1 and
    quadratic kappa: of the predicted class (a "probability" of 0.5 or more predicts the positive
    class), kappa grading the format's classes 0..c-1 in their order.

    Example:

    ```python
    score_rows(redux, {"1": "0.9", "2": "0.2"}, {"1": "dogs", "2": "cats"})   # log loss 0.164
    ```

    Args:
        target: SubmissionFormat, Competition or slug. Gives the metric and the meaning of a value.
        values: Mapping. Test id → value text as written (for "probabilities", the texts of the
            class columns in `value_columns` order, as `read_submission` returns them).
        answers: Mapping. Test id → true class name; must cover exactly the same ids.

    Returns:
        The metric: log loss (lower is better), or accuracy, ROC AUC, micro-F1, kappa (higher is better).
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
    fmt = _format(target)
    bad = {i: c for i, c in answers.items() if c not in fmt.classes}
    if bad:
        i, c = next(iter(bad.items()))
        raise ValueError(f"answers must be classes of {fmt.name!r} {list(fmt.classes)}. Received {c!r} for id {i!r}")
    order = sorted(answers, key=_sort_key)
    y = np.array([fmt.classes.index(answers[i]) for i in order], dtype=np.int64)
    n = len(fmt.classes)
    if fmt.kind == "probabilities":
        rows = []
        for i in order:
            row = values[i]
            if isinstance(row, str) or len(row) != len(fmt.value_columns):
                raise ValueError(
                    f"id {i!r} must have one value per class column ({len(fmt.value_columns)}). Received {row!r}"
                )
            rows.append([_probability(v) for v in row])
        p = np.array(rows, dtype=np.float64)[:, [fmt.value_columns.index(c) for c in fmt.classes]]
        p = p / p.sum(axis=1, keepdims=True)  # as Kaggle scores (validation refuses a row of zeros)
        if fmt.metric == "log_loss":
            return metrics.log_loss(y, p, eps=metrics.SKLEARN_EPS)
        return metrics.roc_auc(y, p)
    parsed = [parse_value(fmt, values[i]) for i in order]
    if fmt.kind == "probability":
        pos = fmt.classes.index(fmt.positive_class)
        p = np.array(parsed, dtype=np.float64)
        y_pos = (y == pos).astype(np.int64)
        if fmt.metric == "log_loss":
            return metrics.log_loss(y_pos, p, eps=metrics.SKLEARN_EPS)  # p: the positive class's probability
        if fmt.metric == "roc_auc":
            return metrics.roc_auc(y_pos, p)
        pred = np.where(p >= 0.5, pos, 1 - pos)
    else:
        pred = np.array([fmt.classes.index(c) for c in parsed], dtype=np.int64)
    return _class_score(fmt.metric, y, pred, n)


# -- the file ------------------------------------------------------------------------------------


def submission_path(
    target: SubmissionFormat | Competition | str,
    out_dir: str | os.PathLike = DEFAULT_OUT_DIR,
    arch: str = "resnet50",
    now: datetime | None = None,
) -> Path:
    """The file name a submission gets: `<out_dir>/<name>-<YYYYmmddTHHMMSSZ>-<arch>.csv` (UTC).

    Args:
        target: SubmissionFormat (its name), Competition or slug.
        out_dir: Path. The folder of submissions.
        arch: String. The architecture, so the file says which model made it.
        now: datetime or None. The time to stamp (naive means UTC); None means now.
    """
    name = target.name if isinstance(target, SubmissionFormat) else get_competition(target).slug
    _check_file_part("arch", arch)
    now = datetime.now(timezone.utc) if now is None else now
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return Path(out_dir) / f"{name}-{now.strftime(TIME_FORMAT)}-{arch}.csv"


def write_submission(
    target: SubmissionFormat | Competition | str,
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
        target: SubmissionFormat, Competition or slug.
        ids: Sequence of strings. The test ids, one per row of probs (`SubmissionFormat.id_of`).
        probs: Array (N, len(classes)). Class probabilities from the model.
        classes: Sequence of strings. The class of each column of probs (the data's classes).
        out_dir: Path. The folder of submissions (created if missing).
        arch: String. The architecture name, put in the file name.
        eps: Float or None. The log-loss clip; None means the format's (0.005 for redux).
            Ignored for other metrics.
        now: datetime or None. The time in the file name; None means now (UTC).

    Returns:
        The path of the written CSV.
    """
    fmt = _format(target, classes=classes)
    rows = submission_rows(fmt, ids, probs, classes, eps=eps)
    path = submission_path(fmt, out_dir, arch, now)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fmt.columns)
    writer.writerows(rows)
    text = buf.getvalue()
    # Validated before it exists under its real name: a bad file is never left in submissions/.
    with atomic_path(path, need=len(text.encode()), what=f"the submission {path.name}") as tmp:
        tmp.write_text(text, newline="")
        validate_submission(fmt, tmp, [str(i) for i in ids], _name=path)
    return path


def _read(
    target: SubmissionFormat | Competition | str, path: str | os.PathLike, name: Path
) -> tuple[SubmissionFormat, dict[str, str | tuple[str, ...]], dict[str, int]]:
    """The format, the values {id: text or texts} in file order, and each id's line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"submission file not found: {name}")
    values: dict[str, str | tuple[str, ...]] = {}
    lines: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        fmt = _format(target, header=header)
        columns = fmt.columns
        if header is None:
            raise ValueError(f"{name}: the file is empty; it must start with the header {_join(columns)}")
        got = [h.strip() for h in header]
        if got != list(columns):
            missing, unknown = _differences(got, columns)
            detail = ""
            if len(columns) > 2:  # a header of many class columns: say which differ
                detail = (
                    f" (missing columns: {_show(missing) or 'none'}; unknown columns: {_show(unknown) or 'none'})"
                    if missing or unknown
                    else " (the same columns in another order)"
                )
            raise ValueError(f"{name}: line 1 must be the header {_join(columns)}{detail}. Received {_join(header)!r}")
        id_col = fmt.id_column
        for row in reader:
            n = reader.line_num
            if len(row) != len(columns):
                shown = f": {row!r}" if len(row) <= _SHOW_COLUMNS else ""
                raise ValueError(
                    f"{name}: line {n} must have {len(columns)} fields ({_join(columns)}). Received {len(row)}{shown}"
                )
            i = row[0].strip()
            if not i:
                raise ValueError(f"{name}: line {n}, column {id_col!r} must not be empty")
            if i in lines:
                raise ValueError(
                    f"{name}: line {n}, column {id_col!r}: id {i!r} appears twice (lines {lines[i]} and {n})"
                )
            texts = tuple(v.strip() for v in row[1:])
            for column, v in zip(fmt.value_columns, texts):
                try:
                    parse_value(fmt, v)
                except ValueError as e:
                    raise ValueError(f"{name}: line {n}, column {column!r} (id {i!r}) {e}") from None
            if fmt.kind == "probabilities" and not any(float(v) > 0 for v in texts):
                raise ValueError(
                    f"{name}: line {n} (id {i!r}): the class probabilities must not all be 0 "
                    f"(Kaggle divides each row by its sum). Received {_join(texts)!r}"
                )
            lines[i] = n
            values[i] = texts if fmt.kind == "probabilities" else texts[0]
    return fmt, values, lines


def read_submission(
    target: SubmissionFormat | Competition | str, path: str | os.PathLike, _name: Path | None = None
) -> dict[str, str | tuple[str, ...]]:
    """Reads a submission, checking its header, its rows' shape, each value and each id's uniqueness.

    Returns:
        {id: label text} in file order; for "probabilities", {id: the class columns' texts in the
        header's order}.
    """
    return _read(target, path, _name or Path(path))[1]


def _show(ids: list[str]) -> str:
    return ", ".join(repr(i) for i in ids[:_SHOW]) + (" …" if len(ids) > _SHOW else "")


def validate_submission(
    target: SubmissionFormat | Competition | str,
    path: str | os.PathLike,
    expected_ids: Iterable[str] | None = None,
    _name: Path | None = None,
) -> None:
    """Checks a submission file against its format; raises ValueError naming the file, line and rule.

    The rules: the header is exactly the format's columns, in order; every row has one field per
    column; each value is valid (a probability in [0, 1], a class index or a class name; a
    "probabilities" row is not all zeros); every test id appears exactly once; there is no unknown
    id; and when the format knows the sample submission's ids, the ids are exactly those.

    Example:

    ```python
    validate_submission(comp, "submissions/x.csv", test_ids)
    ```

    Args:
        target: SubmissionFormat, Competition or slug.
        path: Path. The submission CSV.
        expected_ids: Iterable of strings or None. The ids of the test images; None means the
            format's `expected_ids` (the sample's), which must then be known.
    """
    name = _name or Path(path)
    fmt, values, lines = _read(target, path, name)
    checks = []
    if expected_ids is not None:
        checks.append(([str(i) for i in expected_ids], "test images", None))
    if fmt.expected_ids is not None:
        checks.append((list(fmt.expected_ids), "in the sample submission", "line {} of the sample"))
    if not checks:
        raise ValueError(
            f"validate_submission needs the test ids: pass expected_ids, or a format that knows the sample's "
            f"ids. Received expected_ids=None for {fmt.name!r}"
        )
    for expected, what, where in checks:
        missing, unknown = _differences(values, expected)
        if unknown:
            raise ValueError(
                f"{name}: column {fmt.id_column!r} has ids that are not {what}: {_show(unknown)} "
                f"(first on line {lines[unknown[0]]})"
            )
        if missing:
            at = f" (first expected on {where.format(expected.index(missing[0]) + 2)})" if where else ""
            raise ValueError(
                f"{name}: needs one row per test image ({len(set(expected))}), has {len(values)}; "
                f"missing ids: {_show(missing)}{at}"
            )


def _read_answers(answers: Mapping[str, str] | str | os.PathLike) -> dict[str, str]:
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
    target: SubmissionFormat | Competition | str,
    path: str | os.PathLike,
    answers: Mapping[str, str] | str | os.PathLike,
) -> float:
    """Scores a submission locally with the format's metric (`kit.metrics`), after validating it.

    Example:

    ```python
    score_submission("digits", path, COMPETITION.local_answers(zips_dir))   # accuracy, e.g. 0.97
    ```

    Args:
        target: SubmissionFormat, Competition or slug.
        path: Path. The submission CSV (validated first, against the answers' ids).
        answers: Mapping {test id: class name}, or the path of a CSV `id,<class>` holding them.

    Returns:
        The metric (see `score_rows`).
    """
    truth = _read_answers(answers)
    validate_submission(target, path, truth)
    fmt, values, _ = _read(target, path, Path(path))
    return score_rows(fmt, values, truth)
