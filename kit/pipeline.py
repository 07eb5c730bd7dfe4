"""The steps behind `kit download`, `kit analyze` and `kit submit`, one function each.

`kit train` is `kit.train.train`. These functions return what they did and raise on failure; only
the CLI prints and turns exceptions into exit codes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.competition import Competition, get_competition
from kit.layout import default_data_dir, in_kaggle_notebook, kaggle_input_dir, prepare_layout
from kit.submission import score_submission, validate_submission, write_submission
from kit.train import latest_run

ZIPS = "zips"  # where the competition's files land, under <data>/<slug>/


def data_dir_or_default(data_dir: str | Path | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


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
    from kit.kaggle import download_competition

    download_competition(comp.slug, zips, files=list(comp.files), progress=progress)
    return zips, "downloaded with the Kaggle API"


@dataclass
class DownloadResult:
    root: Path
    source: str
    counts: dict[str, int]


def download(slug: str, data_dir: str | Path | None = None, valid: int | None = None, seed: int = 42, force: bool = False, progress: bool = True) -> DownloadResult:
    """Fetches a competition's files and lays them out as class folders under <data>/<slug>/."""
    comp = get_competition(slug)
    data = data_dir_or_default(data_dir)
    src, how = source_files(comp, data / comp.slug, progress=progress)
    root = prepare_layout(comp, src, data, valid=valid, seed=seed, force=force, progress=progress)
    counts = {
        split: sum(1 for p in (root / split).rglob("*") if p.is_file())
        for split in ("train", "valid", "test", "sample")
        if (root / split).is_dir()
    }
    return DownloadResult(root, how, counts)


def _load_predictions(run: Path) -> dict[str, np.ndarray]:
    path = run / "predictions.npz"
    if not path.is_file():
        raise FileNotFoundError(f"No predictions in {run}: the run did not finish; run `kit train` again.")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def analyze(slug: str, data_dir: str | Path | None = None, run: str | Path | None = None) -> Path:
    """Writes the analysis PNGs and report.html of the latest (or given) run; returns the report."""
    from kit.analysis import Interpretation
    from kit.report import write_report

    comp = get_competition(slug)
    root = data_dir_or_default(data_dir) / comp.slug
    run_dir = Path(run) if run else latest_run(root)
    p = _load_predictions(run_dir)
    interp = Interpretation([str(f) for f in p["val_files"]], p["val_y"], p["val_probs"], classes=[str(c) for c in p["classes"]])
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else None
    hist = json.loads((run_dir / "history.json").read_text()) if (run_dir / "history.json").is_file() else {}
    lr_png = run_dir / "lr_find.png"
    return write_report(
        interp, run_dir, lr_finder_png=lr_png if lr_png.is_file() else None, config=config,
        history=hist.get("history"), title=f"{comp.title}: {run_dir.name}",
    )


@dataclass
class SubmitResult:
    path: Path
    n_rows: int
    local_score: float | None = None
    metric: str = ""
    status: object | None = None


def submit(slug: str, data_dir: str | Path | None = None, message: str | None = None, dry_run: bool = False, out_dir: str | Path = "submissions", run: str | Path | None = None, eps: float | None = None) -> SubmitResult:
    """Writes the latest run's test predictions as a validated CSV; uploads it unless dry_run."""
    comp = get_competition(slug)
    root = data_dir_or_default(data_dir) / comp.slug
    run_dir = Path(run) if run else latest_run(root)
    p = _load_predictions(run_dir)
    if "test_probs" not in p:
        raise ValueError(f"Run {run_dir} has no test predictions: {root / 'test'} was missing at training time.")
    ids = [comp.test_id(Path(str(f)).name) for f in p["test_files"]]
    config = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    if in_kaggle_notebook() and str(out_dir) == "submissions":
        out_dir = default_data_dir().parent / "submissions"
    path = write_submission(comp, ids, p["test_probs"], [str(c) for c in p["classes"]], out_dir=out_dir, arch=config.get("arch", "model"), eps=eps)
    validate_submission(comp, path, ids)
    result = SubmitResult(path, len(ids), metric=comp.metric)
    if comp.local_answers is not None:
        result.local_score = score_submission(comp, path, comp.local_answers(root / ZIPS))
    if not dry_run:
        from kit.kaggle import submission_status, submit as kaggle_submit

        info = kaggle_submit(comp.slug, path, message or f"kit {config.get('arch', '')} {run_dir.name}".strip())
        result.status = submission_status(comp.slug, info.ref) or info
    return result
