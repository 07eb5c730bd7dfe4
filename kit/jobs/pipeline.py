"""The steps behind `kit download`, `kit analyze` and `kit submit`, one function each.

`kit train` is `kit.jobs.train.train`. These functions return what they did and raise on failure; only
the CLI prints and turns exceptions into exit codes.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kit.env import default_data_dir, in_kaggle_notebook, work_dir_for, working_dir
from kit.io import atomic_copy
from kit.kaggle.competition import Competition, find_competition, get_competition
from kit.kaggle.layout import kaggle_input_dir, prepare_labelled_layout, prepare_layout, read_layout
from kit.kaggle.submission import score_submission, write_submission  # write_submission validates, once
from kit.run import Predictions, RunFolder

ZIPS = "zips"  # where the competition's files land, under <data>/<slug>/


def data_dir_or_default(data_dir: str | Path | None) -> Path:
    """`data_dir` (or the default), refused with a sentence when it, or a folder above it, is a file."""
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        where = "is a file" if p == path else f"is inside {p}, which is a file"
        raise NotADirectoryError(
            f"The data folder {path} {where}, not a folder: give --data-dir a folder (it is created if missing)."
        )
    return path


def source_files(comp: Competition, root: Path, progress: bool = True) -> tuple[Path, str]:
    """Gets the competition's files and returns (folder, how): local → Kaggle input → Kaggle API."""
    zips = root / ZIPS
    if comp.local_source is not None:
        zips.mkdir(parents=True, exist_ok=True)
        comp.local_source(zips)
        return zips, "generated offline"
    if in_kaggle_notebook():
        mounted = kaggle_input_dir(comp)
        if mounted is not None:
            return mounted, f"Kaggle input {mounted}"
    from kit.kaggle.client import download_bundle, download_competition

    if comp.bundle:
        download_bundle(comp.slug, zips, progress=progress)
    else:
        download_competition(comp.slug, zips, files=list(comp.files), progress=progress)
    return zips, "downloaded with the Kaggle API"


@dataclass
class DownloadResult:
    root: Path
    source: str
    counts: dict[str, int]


def download(
    slug: str,
    data_dir: str | Path | None = None,
    valid: int | None = None,
    seed: int = 42,
    force: bool = False,
    progress: bool = True,
) -> DownloadResult:
    """Fetches a competition's files and lays them out as class folders under <data>/<slug>/."""
    comp = get_competition(slug)
    data = data_dir_or_default(data_dir)
    src, how = source_files(comp, data / comp.slug, progress=progress)
    if comp.label_from_name is None:  # labels in a CSV or in class folders: the images stay where they are
        root = prepare_labelled_layout(comp, src, data, force=force, progress=progress)
        record = read_layout(root)
        counts = {"train": sum(record["counts"]["train"].values()), "test": record["counts"]["test"]}
        return DownloadResult(root, how, counts)
    root = prepare_layout(comp, src, data, valid=valid, seed=seed, force=force, progress=progress)
    counts = {
        split: sum(1 for p in (root / split).rglob("*") if p.is_file())
        for split in ("train", "valid", "test", "sample")
        if (root / split).is_dir()
    }
    return DownloadResult(root, how, counts)


def runs_root(
    slug: str | None,
    data_dir: str | Path | None = None,
    folder: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> Path:
    """The folder whose `runs/` holds a data set's runs: a folder's work folder, else `<data>/<slug>/`."""
    if folder is not None:
        return work_dir_for(folder, work_dir)
    return data_dir_or_default(data_dir) / get_competition(slug).slug


def analyze(
    slug: str | None,
    data_dir: str | Path | None = None,
    run: str | Path | None = None,
    folder: str | Path | None = None,
    work_dir: str | Path | None = None,
) -> Path:
    """Writes the analysis PNGs and report.html of the latest (or given) run; returns the report.

    With `folder` (a class-folder tree), its runs are read from its work folder and `slug` is ignored.
    """
    from kit.analysis.interpretation import Interpretation
    from kit.analysis.report import write_report

    root = runs_root(slug, data_dir, folder, work_dir)
    title = Path(os.path.abspath(folder)).name if folder is not None else get_competition(slug).title
    rf = RunFolder.resolve(root, run).require_finished()
    interp = Interpretation.from_run(rf)  # refuses a `kit train --all` run: it has no validation predictions
    if rf.is_cv:
        title += f" (out-of-fold predictions, {rf.read_cv().get('k')} folds)"
    lr_png = rf.lr_find_png
    history = rf.read_history()
    return write_report(
        interp,
        rf.path,
        lr_finder_png=lr_png if lr_png.is_file() else None,
        config=rf.read_config() or None,
        history=history.get("history"),
        title=f"{title}: {rf.name}",
        metric=(history.get("final") or {}).get("metric"),
    )


def ensemble_predictions(runs: Sequence[RunFolder]) -> Predictions:
    """The mean test probabilities of finished runs (or CV runs), for `kit submit --runs`.

    Raises:
        ValueError: fewer than 2 runs, a run without test predictions, or runs of other classes or test images.
    """
    import numpy as np

    if len(runs) < 2:
        raise ValueError(f"An ensemble needs at least 2 runs; received {len(runs)}: {[str(r.path) for r in runs]}.")
    preds = [r.read_predictions() for r in runs]
    first, name = preds[0], runs[0].path
    want = [Path(f).name for f in first.test_files or []]
    probs = []
    for r, p in zip(runs, preds):
        if p.test_probs is None:
            raise ValueError(f"Run {r.path} has no test predictions, so it cannot join an ensemble.")
        if p.classes != first.classes:
            raise ValueError(
                f"Run {r.path} predicts the classes {p.classes[:5]}{'...' if len(p.classes) > 5 else ''}, but {name} "
                f"predicts {first.classes[:5]}{'...' if len(first.classes) > 5 else ''}: an ensemble averages the same classes."
            )
        names = [Path(f).name for f in p.test_files]
        if sorted(names) != sorted(want):
            extra, missing = sorted(set(names) - set(want)), sorted(set(want) - set(names))
            raise ValueError(
                f"Run {r.path} predicted other test images than {name} ({len(names)} vs {len(want)}; only in it: "
                f"{extra[:3]}, only in {name.name}: {missing[:3]}): an ensemble averages the same test images."
            )
        order = {n: j for j, n in enumerate(names)}
        probs.append(np.asarray(p.test_probs)[[order[n] for n in want]])
    return Predictions(
        first.classes, first.val_files, first.val_y, first.val_probs, first.test_files, np.mean(probs, axis=0)
    )


@dataclass
class SubmitResult:
    path: Path
    n_rows: int
    local_score: float | None = None
    metric: str = ""
    status: object | None = None
    also: Path | None = None  # /kaggle/working/submission.csv, in a Kaggle notebook


KAGGLE_SUBMISSION = "submission.csv"  # what a code competition's notebook must leave in /kaggle/working


def _folder_format(folder: Path, config: dict, classes: list[str], comp: Competition | None):
    """The submission format of a `--folder` run: its competition's, when the folder is one (named by its
    slug, as /kaggle/input/<slug> is), else read from the folder's sample_submission.csv."""
    from kit.data.layouts import detect_layout
    from kit.kaggle.submission import competition_format, format_from_sample

    layout = detect_layout(folder, config.get("labels"), config.get("images"))
    sample = layout.sample_submission
    if comp is not None:
        return competition_format(comp, classes=classes, sample=sample)
    if sample is None:
        raise FileNotFoundError(
            f"kit submit --folder {folder}: no sample_submission.csv there to give the submission's format "
            "(its header and ids). Add it, or name the competition with -c SLUG."
        )
    from kit.kaggle.competition import PROBABILITY_METRICS

    name = re.sub(r"[^A-Za-z0-9_.+-]", "-", folder.name).strip(".-") or "submission"
    metric = config.get("metric") or None
    with open(sample, newline="", encoding="utf-8-sig") as f:
        per_class = len(next(csv.reader(f), [])) > 2
    # The run's metric says how the valid split was shown; it names the submission's only when the sample's
    # shape allows it (a column per class is always probabilities).
    if per_class and metric not in PROBABILITY_METRICS:
        metric = None
    return format_from_sample(sample, classes, name=name, metric=metric)


def submit(
    slug: str,
    data_dir: str | Path | None = None,
    message: str | None = None,
    dry_run: bool = False,
    out_dir: str | Path = "submissions",
    run: str | Path | None = None,
    eps: float | None = None,
    folder: str | Path | None = None,
    work_dir: str | Path | None = None,
    runs: Sequence[str | Path] | None = None,
) -> SubmitResult:
    """Writes the latest (or given) run's test predictions as a validated CSV; uploads it unless dry_run.

    A `kit cv` run submits its fold ensemble, clipped at the eps its out-of-fold predictions chose (unless
    `eps` is given). `runs` (two or more finished runs or CV runs) submits the mean of their test
    probabilities (`ensemble_predictions`).

    The format is the competition's; for `folder` (any data folder), the competition's whose slug names
    the folder, else the one its sample_submission.csv shows (header, class columns' order, ids). In a
    Kaggle notebook the file is also written as /kaggle/working/submission.csv, what a code competition
    scores.
    """
    from kit.kaggle.submission import competition_format

    comp: Competition | None = None
    if folder is not None:
        folder = Path(folder)
        root = work_dir_for(folder, work_dir)
        comp = find_competition(folder.resolve().name)
    else:
        comp = get_competition(slug)
        root = data_dir_or_default(data_dir) / comp.slug
    if runs:
        if run is not None:
            raise ValueError(f"Give either --run {run} or --runs {' '.join(map(str, runs))}, not both.")
        folders = [RunFolder.resolve(root, r).require_finished() for r in runs]
        rf, p = folders[0], ensemble_predictions(folders)
        arch = f"ensemble{len(folders)}"
    else:
        rf = RunFolder.resolve(root, run).require_finished()
        p = rf.read_predictions()
        arch = rf.read_config().get("arch", "model")
        if arch.lower().startswith("hub:"):  # a preset's folder or handle holds slashes; only then load Keras
            from kit.models.archs import arch_label

            arch = arch_label(arch)
        if eps is None and rf.is_cv:
            eps = (rf.read_history().get("cv") or {}).get("clip", {}).get("eps")
    run_dir = rf.path
    config = rf.read_config()
    if p.test_probs is None:
        where = folder if folder is not None else root / "test"
        raise ValueError(f"Run {run_dir} has no test predictions: {where} had no test images at training time.")
    if folder is not None:
        fmt = _folder_format(folder, config, p.classes, comp)
    else:
        from kit.kaggle.layout import read_layout

        record = read_layout(root) or {}
        sample = (record.get("layout") or {}).get("sample_submission")
        fmt = competition_format(comp, classes=p.classes, sample=Path(sample) if sample else None)
    ids = [fmt.id_of(Path(f).name) for f in p.test_files]
    if in_kaggle_notebook() and str(out_dir) == "submissions":
        out_dir = default_data_dir().parent / "submissions"
    path = write_submission(fmt, ids, p.test_probs, p.classes, out_dir=out_dir, arch=arch, eps=eps)
    result = SubmitResult(path, len(ids), metric=fmt.metric)
    if in_kaggle_notebook():
        result.also = atomic_copy(path, working_dir() / KAGGLE_SUBMISSION)
    if comp is not None and comp.local_answers is not None and folder is None:
        result.local_score = score_submission(fmt, path, comp.local_answers(root / ZIPS))
    if not dry_run:
        if comp is None:
            raise ValueError(
                f"{path} is written, but {folder} is not a known competition to upload to: name it with -c SLUG "
                "(`kit list`), or pass --dry-run."
            )
        from kit.kaggle.client import submission_status
        from kit.kaggle.client import submit as kaggle_submit

        info = kaggle_submit(comp.slug, path, message or f"kit {arch} {run_dir.name}".strip())
        result.status = submission_status(comp.slug, info.ref) or info
    return result
