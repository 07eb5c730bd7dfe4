"""`kit cv`: k-fold cross-validation over every labelled image, the way Kagglers choose a recipe.

One seeded, stratified k-fold split of train and valid together; fold i trains any recipe `kit train`
runs on the other folds and predicts fold i, so every image gets one out-of-fold (OOF) prediction from
the model that never saw it. The OOF figures (with and without TTA, each fold's and their spread) choose
the recipe and the log-loss clip; the k fold models, averaged, predict the test images.

A CV run is a run folder, `<root>/runs/<UTC time>-<arch>-cv<k>/`, so `kit submit|analyze|predict --run`
take it as they take a run (`kit.run` lists the files):

| file | what |
| --- | --- |
| `cv.json` | k, the seed, the mean, each image's fold (its path inside the data folder) |
| `fold-<i>/runs/<run>/` | fold i's own `kit train` run, resumable as any run |
| `predictions.npz` | validation rows: the OOF predictions of every image (and `val_fold`); test rows: the fold mean |
| `history.json` | OOF figures with and without TTA, each fold's, their spread, the chosen clip (`cv`) |
| `config.json`, `DONE` | as a run's |

Example:

```python
result = run_cv(load_config(recipe="real", folder="../shared/dogscats"), Path("data"))
result.oof["tta"]     # {"accuracy": ..., "log_loss": ...}
result.clip           # {"eps": ..., "log_loss": ..., "default_eps": ..., "default_log_loss": ...}
```
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import metrics
from kit.checks import check_choice, check_int
from kit.data.layouts import Lists
from kit.jobs.config import CV_MEANS, TrainConfig
from kit.jobs.train import (
    STAGE_LABELS,
    competition_root,
    data_fingerprint,
    data_work_dir,
    final_figures,
    pin_folder,
    preflight,
    resolve_layout,
    resumed_config,
    run_metric,
    train,
    work_root,
)
from kit.models.archs import arch_label
from kit.run import Predictions, RunFolder

# The clips `best_clip` tries: a log grid (10 a decade) over the range where a clip can matter. Never none:
# an image the OOF predictions never met may be confidently wrong, and 1e-5 caps it at 11.5 nats.
CLIP_GRID = tuple(np.geomspace(1e-5, 0.1, 41).tolist())


@dataclass
class CVResult:
    """What a finished `kit cv` left behind: its run folder and its out-of-fold figures."""

    dir: Path
    k: int
    folds: list[dict]  # each fold's: n_train, n_valid, its held-out figures with and without TTA, its run
    oof: dict[str, dict[str, float]]  # "tta" (the configured predictions) and "plain": OOF figures
    spread: dict[str, dict[str, float]]  # the same variants: each figure's standard deviation over the folds
    stages: dict[str, dict[str, float]]  # each stage's OOF accuracy and log loss at its end (no TTA), e.g. "head"
    clip: dict[str, float]  # the log-loss clip that minimises the OOF log loss, beside the default's
    n_test: int
    seconds: float

    @property
    def summary(self) -> str:
        def line(v: str) -> str:
            f, s = self.oof[v], self.spread[v]
            return ", ".join(f"{name.replace('_', ' ')} {f[name]:.4f} ± {s[name]:.4f}" for name in f)

        c = self.clip
        stages = "".join(
            f"{STAGE_LABELS.get(name, name)} {f['accuracy']:.4f} / {f['log_loss']:.4f}, "
            for name, f in self.stages.items()
        )
        return (
            f"OOF over {self.k} folds: {stages}with TTA: {line('tta')}; without: {line('plain')}; "
            f"clipped at eps={c['eps']:.3g}: {c['log_loss']:.4f} (default eps={c['default_eps']:.3g}: "
            f"{c['default_log_loss']:.4f}); {self.n_test} test images averaged over the folds; "
            f"{self.seconds:.0f} s; run {self.dir}"
        )


def assign_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each row's fold in 0..k-1: stratified by label (scikit-learn's StratifiedKFold, shuffled with
    `seed`), so each fold holds ~1/k of every class; a class with fewer than k rows lands in fewer folds."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y)
    k = check_int("k", k, min=2)
    if k > len(y):
        raise ValueError(f"k-fold cross-validation needs at least k={k} labelled images; received {len(y)}.")
    folds = np.empty(len(y), dtype=np.int64)
    with warnings.catch_warnings():  # "The least populated class has only n members": spread as they can be
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, held) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)):
            folds[held] = i
    return folds


def mean_probs(probs: Sequence[np.ndarray], how: str = "arithmetic") -> np.ndarray:
    """The fold models' probabilities averaged: "arithmetic", or "geometric" (exp of the mean log, each
    row renormalised to sum to 1, so that one model's near-0 vetoes a class)."""
    check_choice("how", how, CV_MEANS)
    stack = np.stack([np.asarray(p, dtype=np.float64) for p in probs])
    if how == "arithmetic":
        return stack.mean(axis=0)
    g = np.exp(np.log(np.clip(stack, 1e-15, 1.0)).mean(axis=0))
    return g / g.sum(axis=1, keepdims=True)


def best_clip(y: np.ndarray, probs: np.ndarray, default_eps: float) -> dict[str, float]:
    """The clip of `CLIP_GRID` with the lowest log loss on `y`, beside the default clip's log loss."""
    losses = [metrics.log_loss(y, metrics.clip_rows(probs, e)) for e in CLIP_GRID]
    i = int(np.argmin(losses))
    return {
        "eps": float(CLIP_GRID[i]),
        "log_loss": float(losses[i]),
        "default_eps": float(default_eps),
        "default_log_loss": float(metrics.log_loss(y, metrics.clip_rows(probs, default_eps))),
    }


def stage_oof(folds: list[dict]) -> dict[str, dict[str, float]]:
    """Each stage's OOF figures from the folds' held-out figures at that stage's end: their means weighted
    by the fold's images, which for accuracy and log loss (means over images) are the pooled OOF figures."""
    names = [n for n in folds[0]["stages"] if all(n in f["stages"] for f in folds)] if folds else []
    n = sum(f["n_valid"] for f in folds)
    return {
        s: {m: sum(f["stages"][s][m] * f["n_valid"] for f in folds) / n for m in ("accuracy", "log_loss")}
        for s in names
    }


def fold_lists(lists: Lists, files: list[Path], y: np.ndarray, folds: np.ndarray, i: int) -> Lists:
    """Fold `i` as a train/valid split: the other folds train, fold `i` is held out."""
    held = folds == i
    pick = lambda mask: ([f for f, m in zip(files, mask) if m], y[mask])  # noqa: E731
    return Lists(lists.classes, pick(~held), pick(held), lists.test, None)


def _rel(f: Path, base: Path) -> str:
    f = Path(f)
    return f.relative_to(base).as_posix() if f.is_relative_to(base) else str(f)


def default_eps(cfg: TrainConfig, n_classes: int) -> float:
    """The clip a submission gets by default: the competition's, else a sample submission's (a column per
    class when there are more than 2, `kit.kaggle.submission.default_eps`)."""
    from kit.kaggle.competition import find_competition
    from kit.kaggle.submission import default_eps as sample_eps

    comp = find_competition(Path(cfg.folder).resolve().name if cfg.folder else cfg.competition)
    if comp is not None:
        return float(comp.eps)
    return sample_eps("probabilities" if n_classes > 2 else "probability", n_classes)


def find_cv_resume(root: Path, resume: str | Path | bool) -> RunFolder:
    """The CV run `kit cv --resume [RUN]` continues: the one named, else the newest unfinished one."""
    if resume is True:
        runs = RunFolder.unfinished_cv(root)
        if not runs:
            raise FileNotFoundError(f"No unfinished CV run under {RunFolder.runs_dir(root)}: nothing to resume.")
        return runs[0]
    run = RunFolder.resolve(root, resume)
    if not run.is_cv:
        raise ValueError(
            f"{run.path} is not a CV run (it has no {run.cv_file.name}): resume it with `kit train --resume`."
        )
    if run.finished:
        raise ValueError(f"{run.path} finished cleanly: there is nothing to resume. Start a new `kit cv`.")
    return run


def _fold_run(
    cfg: TrainConfig, data_dir: Path, split: Lists, root: Path, verbose: bool
) -> tuple[RunFolder, Predictions]:
    """Fold's run: the finished one kept from before, else its unfinished one resumed, else a new one."""
    try:
        done = RunFolder.latest(root)
        if done.finished:
            return done, done.read_predictions()
    except FileNotFoundError:
        pass
    resume = True if RunFolder.unfinished(root) else None
    run = train(cfg, data_dir, verbose=verbose, resume=resume, split=split, runs_root=root)
    rf = RunFolder(run.dir)
    return rf, rf.read_predictions()


def run_cv(
    cfg: TrainConfig,
    data_dir: Path,
    verbose: bool = True,
    resume: str | Path | bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> CVResult:
    """k-fold cross-validation of `cfg` (`cfg.cv_folds` folds over train + valid, seeded by `cfg.split_seed`);
    see the module docstring for what it writes. `progress` gets one line as each fold starts and ends.

    `resume=True` (the newest unfinished CV run) or a CV run's name or path continues it: finished folds
    are kept, the fold it was in resumes from its last epoch's checkpoint, the others are trained.

    Raises:
        ValueError: `cfg.all_data` (nothing is left to hold out), or a resume on other images.
    """

    say = progress or (lambda line: None)
    t0 = time.perf_counter()
    root_runs = work_root(cfg, data_dir)
    cv_run: RunFolder | None = None
    if resume:
        cv_run = find_cv_resume(root_runs, resume)
        cfg = resumed_config(cv_run.read_config(), cfg)
    if cfg.all_data:
        raise ValueError("Config all_data trains on every labelled image, so `kit cv` would have no fold to hold out.")
    preflight(cfg)
    root = competition_root(cfg, data_dir)
    layout = resolve_layout(cfg, root)
    lists = layout.lists(data_work_dir(cfg, root), cfg.val_pct, cfg.split_seed)
    files, y = lists.labelled()
    k = cfg.cv_folds
    folds = assign_folds(y, k, cfg.split_seed)
    base = Path(layout.root)
    record = {
        "k": k,
        "seed": cfg.split_seed,
        "mean": cfg.cv_mean,
        "folds": {_rel(f, base): int(i) for f, i in zip(files, folds)},
    }
    if cv_run is not None:
        if cv_run.read_cv().get("folds") != record["folds"]:
            raise ValueError(
                f"{cv_run.path} holds out other images than {base} gives now (files added, removed or relabelled): "
                "resuming would mix two splits. Start a new `kit cv`."
            )
    else:
        pin_folder(cfg)
        cv_run = RunFolder.create(root_runs, f"{arch_label(cfg.arch)}-cv{k}")
        pool = lists.all_train()
        cv_run.write_cv(record)
        cv_run.write_config(
            {
                **cfg.to_dict(),
                "cv": {k_: record[k_] for k_ in ("k", "seed", "mean")},
                "data": data_fingerprint(layout, pool),
            }
        )
    metric = run_metric(cfg)
    index = {str(Path(f).resolve()): j for j, f in enumerate(files)}
    c = len(lists.classes)
    oof = {v: np.full((len(files), c), np.nan) for v in ("tta", "plain")}
    tests: dict[str, list[np.ndarray]] = {"tta": [], "plain": []}
    test_files: list[str] | None = None
    per_fold: list[dict] = []
    for i in range(k):
        split = fold_lists(lists, files, y, folds, i)
        n_trn, n_val = len(split.trn[0]), len(split.val[0])
        say(f"cv: fold {i + 1}/{k}: {n_trn} train / {n_val} held out")
        t = time.perf_counter()
        rf, preds = _fold_run(cfg, data_dir, split, cv_run.fold_root(i), verbose)
        rows = np.array([index[str(Path(f).resolve())] for f in preds.val_files], dtype=np.int64)
        if np.any(folds[rows] != i):  # the run must have predicted only the images it held out
            raise ValueError(f"{rf.path} predicted images outside fold {i}: the fold's run is not this CV's.")
        fold = {"fold": i, "n_train": n_trn, "n_valid": len(rows), "run": str(rf.path)}
        fold["stages"] = rf.read_history().get("stages") or {}  # held-out figures at each stage's end, no TTA
        for v, p in (("tta", preds), ("plain", preds.plain())):
            oof[v][rows] = p.val_probs
            fold[v] = metrics.figures(preds.val_y, p.val_probs, metric)
            if p.test_probs is not None:
                tests[v].append(p.test_probs)
        if i and preds.test_files != test_files:
            raise ValueError(f"{rf.path} predicted other test images than fold 0's run: its folds cannot be averaged.")
        test_files = preds.test_files
        per_fold.append(fold)
        f = fold["tta"]
        say(
            f"cv: fold {i + 1}/{k}: accuracy {f['accuracy']:.4f}, log loss {f['log_loss']:.4f} "
            f"({time.perf_counter() - t:.0f} s); {k - i - 1} to go"
        )
    predicted = ~np.isnan(oof["tta"][:, 0])  # an image no fold could decode has no OOF row
    if not predicted.all():
        warnings.warn(
            f"{int((~predicted).sum())} images had no prediction (unreadable): left out of the OOF figures.",
            stacklevel=2,
        )
    yp = y[predicted]
    result_oof = {v: metrics.figures(yp, oof[v][predicted], metric) for v in oof}
    spread = {v: {name: float(np.std([f[v][name] for f in per_fold])) for name in result_oof[v]} for v in oof}
    stages = stage_oof(per_fold)
    clip = best_clip(yp, oof["tta"][predicted], default_eps(cfg, c))
    preds = Predictions(
        list(lists.classes),
        [str(f) for f, ok in zip(files, predicted) if ok],
        yp,
        oof["tta"][predicted],
        test_files if tests["tta"] else None,
        mean_probs(tests["tta"], cfg.cv_mean) if tests["tta"] else None,
        val_plain=oof["plain"][predicted],
        test_plain=mean_probs(tests["plain"], cfg.cv_mean) if tests["plain"] else None,
        val_fold=folds[predicted],
    )
    cv_run.write_predictions(preds)
    cv = {
        "k": k,
        "mean": cfg.cv_mean,
        "folds": per_fold,
        "oof": result_oof,
        "spread": spread,
        "stages": stages,
        "clip": clip,
    }
    final = final_figures(yp, oof["tta"][predicted], tta=cfg.tta and cfg.n_aug > 0, metric=metric)
    cv_run.write_history({"cv": cv, "final": final})
    cv_run.mark_finished()
    cv_run.set_latest()
    return CVResult(
        cv_run.path,
        k,
        per_fold,
        result_oof,
        spread,
        stages,
        clip,
        len(test_files or []) if tests["tta"] else 0,
        time.perf_counter() - t0,
    )
