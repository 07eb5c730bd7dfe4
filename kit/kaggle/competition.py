"""What a competition plugin declares, and the registry that finds plugins by slug.

A plugin is one module in the `kit.plugins` package (or a third-party entry point in the group
`"kit.plugins"`) that exposes `COMPETITION = Competition(...)`: the Kaggle slug, the files to
download, how a training file's name gives its class, how a test file's name gives its id, the
submission's columns and meaning, and the metric. Adding a competition means adding one file.

Example:

```python
comp = get_competition("dogs-vs-cats-redux-kernels-edition")
comp.label_from_name("cat.123.jpg")   # "cats"
rows = comp.submission_rows(["1", "2"], probs, ["cats", "dogs"])   # [("1", "0.93"), ...]
```
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

from kit.checks import check_choice, check_int, check_number
from kit.data.images import is_image_name  # noqa: F401 - the one list of image extensions

# The submission kinds a plugin may declare:
#   "probability": one column, the probability of `positive_class` (binary, e.g. redux's P(dog));
#   "class_index": the predicted class's position in `Competition.classes` (2013: 1 = dog, 0 = cat);
#   "class_name":  the predicted class's folder name (digits: "0" … "9");
#   "probabilities": one column per class, headed by the class names (dog breeds' 120 columns).
SUBMISSION_KINDS = ("probability", "class_index", "class_name", "probabilities")
# How Kaggle scores, and how the kit scores the validation split (`kit.metrics.METRICS` computes them).
METRICS = ("log_loss", "accuracy", "roc_auc", "f1_micro", "quadratic_kappa")
# The metrics scored on probabilities; the others on a predicted class.
PROBABILITY_METRICS = ("log_loss", "roc_auc")
# Kaggle scores a log-loss submission with -log(p) for the true class: a confident wrong answer
# (p = 0) costs infinity and one such row ruins the score. Clipping to [eps, 1 - eps] caps that
# cost at log(1/eps) = 5.3 for eps = 0.005, while a right answer at 1 - eps costs only 0.005.
DEFAULT_EPS = 0.005
# The lesson's validation set: 2,000 of the 25,000 training images.
DEFAULT_VALID = 2000
ENTRY_POINT_GROUP = "kit.plugins"
# Kaggle slugs are letters, digits, "-" and "_" (a few old competitions use capitals).
SLUG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
KAGGLE_URL = "https://www.kaggle.com/competitions/{slug}"


def is_slug(slug: object) -> bool:
    """Whether `slug` looks like a Kaggle competition slug (and so is safe as a folder name)."""
    return isinstance(slug, str) and SLUG_PATTERN.fullmatch(slug) is not None


def label_by_prefix(prefixes: Mapping[str, str]) -> Callable[[str], str | None]:
    """Returns a `label_from_name` that reads the class from the name's first dot-separated part.

    Kaggle names training images `<prefix>.<n>.<ext>`; the prefix is mapped to a class folder.

    Example:

    ```python
    label = label_by_prefix({"cat": "cats", "dog": "dogs"})
    label("cat.123.jpg")   # "cats"; label("123.jpg") is None
    ```

    Args:
        prefixes: Mapping. File-name prefix (compared in lower case) to class folder name.
    """
    table = {k.lower(): v for k, v in prefixes.items()}

    def label_from_name(filename: str) -> str | None:
        name = Path(filename).name
        if "." not in name:
            return None
        return table.get(name.split(".", 1)[0].lower())

    return label_from_name


def id_from_stem(filename: str) -> str:
    """The test id Kaggle uses for a test image: its file name without extension ("123.jpg" → "123")."""
    return Path(filename).stem


def id_from_name(filename: str) -> str:
    """The test id of competitions whose ids keep the extension ("0a1b.png" → "0a1b.png")."""
    return Path(filename).name


@dataclass(frozen=True)
class Competition:
    """A Kaggle image-classification competition, as a plugin declares it.

    Example:

    ```python
    COMPETITION = Competition(
        slug="dogs-vs-cats", title="Dogs vs. Cats (2013)", classes=("cats", "dogs"),
        files=("train.zip", "test1.zip"), train_zip="train.zip", test_zip="test1.zip",
        label_from_name=label_by_prefix({"cat": "cats", "dog": "dogs"}),
        submission_kind="class_index", metric="accuracy")
    ```

    Args:
        slug: String. The Kaggle competition slug, also the folder under the data directory.
        title: String. A human-readable name.
        classes: Tuple of strings. The class names; their order defines "class_index". Empty for a
            `labels_csv` competition whose classes are the labels found in the CSV.
        files: Tuple of strings. The files to download from the competition.
        train_zip: String. The file among `files` holding the labelled training images (a zip,
            or, when already extracted, a folder named like the zip without `.zip`).
        test_zip: String. The file among `files` holding the unlabelled test images.
        label_from_name: Callable or None. Training file name → class folder name, or None for a file
            that is not a training image. None when the labels are in `labels_csv` or in class folders.
        labels_csv: String or None. The file among `files` holding the labels, one row per training
            image (`id,label`): the images are read where they lie, never copied into class folders.
        id_column, label_column: Strings or None. The CSV's columns (None: its first and second).
        suffix: String. Appended to a CSV id to name its image (".jpg"); "" when the id is the file name.
        labels_from_folders: Boolean. The training images lie in `train_folder/<class>/` (read in place).
        train_folder, test_folder: Strings. The image folders inside the extracted files (`train/`, `test/`).
        sample_submission: String or None. The file among `files` that shows the submission's format.
        bundle: Boolean. Download the competition as Kaggle's one `<slug>.zip` instead of file by file
            (a competition of loose files, such as histopathology's 220,025 tiles).
        test_id: Callable. Test file name → the id written in the submission.
        submission_columns: Tuple of strings. The submission's header: (id column, label column), or
            (id column,) for "probabilities", whose class columns follow in sample_submission's order.
        submission_kind: String. One of "probability", "class_index", "class_name", "probabilities".
        positive_class: String or None. For "probability": the class whose probability is written.
        metric: String. One of METRICS: how Kaggle scores, and how the validation split is scored.
        eps: Float. Probabilities are clipped to [eps, 1 - eps] for log loss (see DEFAULT_EPS).
        valid_size: Integer. The default number of validation images split from the training set.
        local_source: Callable or None. For offline competitions: `local_source(dest_dir)` writes the
            competition's files into dest_dir and returns their paths (instead of downloading).
        local_answers: Callable or None. `local_answers(dest_dir)` returns {test id: class name} so
            a submission can be scored locally.
        description: String. One line shown when listing competitions.
    """

    slug: str
    title: str
    classes: tuple[str, ...]
    files: tuple[str, ...]
    train_zip: str
    test_zip: str
    label_from_name: Callable[[str], str | None] | None = None
    test_id: Callable[[str], str] = id_from_stem
    submission_columns: tuple[str, str] = ("id", "label")
    submission_kind: str = "probability"
    positive_class: str | None = None
    metric: str = "log_loss"
    eps: float = DEFAULT_EPS
    valid_size: int = DEFAULT_VALID
    local_source: Callable[[Path], list[Path]] | None = field(default=None, compare=False)
    local_answers: Callable[[Path], dict[str, str]] | None = field(default=None, compare=False)
    description: str = ""
    labels_csv: str | None = None
    id_column: str | None = None
    label_column: str | None = None
    suffix: str = ""
    labels_from_folders: bool = False
    train_folder: str = "train"
    test_folder: str = "test"
    sample_submission: str | None = None
    bundle: bool = False

    def __post_init__(self) -> None:
        # Lists are accepted for convenience, but a frozen declaration must hold tuples.
        for name in ("classes", "files", "submission_columns"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        where = f"Competition(slug={self.slug!r})"
        if not isinstance(self.slug, str) or not SLUG_PATTERN.fullmatch(self.slug):
            raise ValueError(
                f"{where}: slug must be letters, digits, '-' and '_' (a Kaggle slug). Received slug={self.slug!r}"
            )
        if (len(self.classes) < 2 and not (self.labels_csv and not self.classes)) or len(set(self.classes)) != len(
            self.classes
        ):
            raise ValueError(
                f"{where}: classes must be at least two distinct names (or empty for a labels_csv competition, "
                f"whose classes are the CSV's labels). Received classes={self.classes!r}"
            )
        sources = [self.label_from_name is not None, self.labels_csv is not None, bool(self.labels_from_folders)]
        if sum(sources) != 1:
            raise ValueError(
                f"{where}: say where the labels are with exactly one of label_from_name, labels_csv and "
                f"labels_from_folders. Received label_from_name={self.label_from_name!r}, "
                f"labels_csv={self.labels_csv!r}, labels_from_folders={self.labels_from_folders!r}"
            )
        for name in ("labels_csv", "sample_submission"):
            value = getattr(self, name)
            if value is not None and value not in self.files:
                raise ValueError(f"{where}: {name} must be one of files={self.files!r}. Received {name}={value!r}")
        for c in self.classes:
            if not isinstance(c, str) or not c or c in (".", "..") or "/" in c or "\\" in c:
                raise ValueError(f"{where}: each class must be a plain folder name. Received {c!r} in classes")
        for name in ("train_zip", "test_zip"):
            if getattr(self, name) not in self.files and not self.bundle:
                raise ValueError(
                    f"{where}: {name} must be one of files={self.files!r}. Received {name}={getattr(self, name)!r}"
                )
        check_choice("submission_kind", self.submission_kind, SUBMISSION_KINDS, prefix=f"{where}: ")
        n_columns = 1 if self.submission_kind == "probabilities" else 2
        if len(self.submission_columns) != n_columns:
            shape = "(id column,)" if n_columns == 1 else "(id column, label column)"
            raise ValueError(
                f"{where}: submission_columns must be {shape} for submission_kind={self.submission_kind!r}. "
                f"Received submission_columns={self.submission_columns!r}"
            )
        check_choice("metric", self.metric, METRICS, prefix=f"{where}: ")
        if self.submission_kind == "probabilities":
            if self.metric not in PROBABILITY_METRICS:
                raise ValueError(
                    f"{where}: a 'probabilities' submission is scored on probabilities ({', '.join(PROBABILITY_METRICS)}). "
                    f"Received metric={self.metric!r}"
                )
        elif self.submission_kind == "probability":
            if len(self.classes) != 2 or self.positive_class not in self.classes:
                raise ValueError(
                    f"{where}: a 'probability' submission needs two classes and positive_class among them. "
                    f"Received classes={self.classes!r}, positive_class={self.positive_class!r}"
                )
        elif self.metric in PROBABILITY_METRICS:
            raise ValueError(
                f"{where}: metric={self.metric!r} is scored on probabilities: it needs submission_kind='probability' "
                f"or 'probabilities' (a hard class has no {self.metric}). Received submission_kind={self.submission_kind!r}"
            )
        check_number("eps", self.eps, min=0, max=0.5, max_open=True, prefix=f"{where}: ")
        check_int("valid_size", self.valid_size, min=0, prefix=f"{where}: ")

    @property
    def url(self) -> str:
        """The competition's page on Kaggle."""
        return KAGGLE_URL.format(slug=self.slug)

    @property
    def rules_url(self) -> str:
        """Where a person accepts the rules (Kaggle answers 403 until they do)."""
        return f"{self.url}/rules"

    @property
    def is_offline(self) -> bool:
        """Whether the files are generated locally (`local_source`) instead of downloaded."""
        return self.local_source is not None

    def submission_rows(
        self, ids: Sequence[str], probs: np.ndarray, classes: Sequence[str], eps: float | None = None
    ) -> list[tuple[str, str]]:
        """Turns test ids and class probabilities into submission rows; see `submission_rows`."""
        from kit.kaggle.submission import submission_rows

        return submission_rows(self, ids, probs, classes, eps=eps)


# ---------------------------------------------------------------------------------------------
# The registry.

_REGISTRY: dict[str, Competition] | None = None


def _plugin_competition(obj: object, origin: str) -> Competition:
    comp = getattr(obj, "COMPETITION", obj)
    if not isinstance(comp, Competition):
        raise TypeError(f"plugin {origin} must expose COMPETITION = Competition(...). Received {type(comp).__name__}")
    return comp


def _add(registry: dict[str, Competition], comp: Competition, origin: str) -> None:
    if comp.slug in registry and registry[comp.slug] is not comp:
        raise ValueError(f"plugin {origin} declares slug {comp.slug!r}, which another plugin already declares")
    registry[comp.slug] = comp


def _discover() -> dict[str, Competition]:
    import kit.plugins

    registry: dict[str, Competition] = {}
    for info in sorted(pkgutil.iter_modules(kit.plugins.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"kit.plugins.{info.name}")
        _add(registry, _plugin_competition(module, f"kit.plugins.{info.name}"), f"kit.plugins.{info.name}")
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        # A broken third-party plugin must not take the built-in competitions down with it.
        try:
            comp = _plugin_competition(ep.load(), f"entry point {ep.name!r} ({ep.value})")
            _add(registry, comp, f"entry point {ep.name!r} ({ep.value})")
        except Exception as e:  # noqa: BLE001 - reported, then skipped
            warnings.warn(f"skipping competition plugin {ep.name!r} ({ep.value}): {e}", stacklevel=3)
    return registry


def _registry(refresh: bool = False) -> dict[str, Competition]:
    global _REGISTRY
    if _REGISTRY is None or refresh:
        _REGISTRY = _discover()
    return _REGISTRY


def list_competitions(refresh: bool = False) -> list[Competition]:
    """All known competitions, sorted by slug: the `kit.plugins` modules and third-party entry points.

    Example:

    ```python
    [c.slug for c in list_competitions()]   # ["digits", "dogs-vs-cats", ...]
    ```

    Args:
        refresh: Boolean. Search the plugins again instead of using the cached result.
    """
    reg = _registry(refresh)
    return [reg[s] for s in sorted(reg)]


def get_competition(slug: str | Competition) -> Competition:
    """The competition with this slug; raises ValueError listing the known slugs when there is none.

    Example:

    ```python
    get_competition("dogs-vs-cats").metric   # "accuracy"
    ```

    Args:
        slug: String (or a Competition, returned as is).
    """
    if isinstance(slug, Competition):
        return slug
    reg = _registry()
    if slug not in reg:
        raise ValueError(f"Unknown competition {slug!r}. Known competitions: {', '.join(sorted(reg))}")
    return reg[slug]


def find_competition(slug: str) -> Competition | None:
    """The competition with this slug, or None: for a name that may be a competition's or not (a folder's,
    `/kaggle/input/<slug>`; a folder under data/ with no plugin)."""
    return _registry().get(slug)
