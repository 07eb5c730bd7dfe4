"""The lesson's flow for a competition, as named steps: data → learner → lr_find → fit → predict → save.

Each run writes into its own folder `<data>/<slug>/runs/<UTC time>-<arch>/` (for `--folder PATH`:
`<work>/runs/...`, see `work_root`), through `kit.run.RunFolder`
(which alone knows the files), and `kit analyze` and `kit submit` read it back the same way.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.env import work_dir_for
from kit.jobs.config import TrainConfig
from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on, transforms_top_down
from kit.run import Predictions, RunFolder
from kit.training.learner import ConvLearner

AUGMENTATIONS = {"side_on": transforms_side_on, "top_down": transforms_top_down, "none": None}


@dataclass
class Run:
    """What a training run left behind."""

    dir: Path
    config: TrainConfig
    history: list[dict]
    lr: float
    val_accuracy: float
    val_loss: float
    seconds: float


def competition_root(cfg: TrainConfig, data_dir: Path) -> Path:
    """The data: `cfg.folder` when set (any class-folder tree), else `<data_dir>/<slug>/`."""
    return Path(cfg.folder) if cfg.folder else Path(data_dir) / cfg.competition


def work_root(cfg: TrainConfig, data_dir: Path) -> Path:
    """Where caches and runs go: the competition's folder, or the work folder of `cfg.folder`
    (the folder itself when writable, else `cfg.work_dir` or the kit's user cache)."""
    return work_dir_for(cfg.folder, cfg.work_dir) if cfg.folder else competition_root(cfg, data_dir)


def make_tfms(arch: str, size: int, aug: str = "none", max_zoom: float | None = None):
    """The (train, valid) transforms of a configuration: `kit predict` rebuilds a run's model with them."""
    return tfms_from_model(arch, size, aug_tfms=AUGMENTATIONS[aug], max_zoom=max_zoom if aug != "none" else None)


def load_data(cfg: TrainConfig, root: Path, progress: bool = True) -> ImageClassifierData:
    path = root / "sample" if cfg.sample else root
    tfms = make_tfms(cfg.arch, cfg.size, cfg.aug, cfg.max_zoom)
    # A folder's caches go to its work folder (never into a read-only folder); a competition's stay in it.
    work = work_dir_for(cfg.folder, cfg.work_dir) if cfg.folder else None
    # sample/ has no test folder of its own: a quick run still predicts the real test set.
    test_name = "test" if (path / "test").is_dir() else "../test" if (root / "test").is_dir() else None
    return ImageClassifierData.from_paths(path, tfms=tfms, bs=cfg.bs, test_name=test_name, num_workers=cfg.num_workers, progress=progress, work_dir=work)


def pick_lr(learn: ConvLearner, cfg: TrainConfig, run: RunFolder) -> float:
    """The configured rate, or lr_find's suggestion (its plots saved into the run)."""
    if cfg.lr is not None:
        return float(cfg.lr)
    lr = learn.lr_find()
    save_figure(learn.sched.plot(), run.lr_find_png)
    save_figure(learn.sched.plot_lr(), run.lr_schedule_png)
    return float(lr)


def save_figure(fig, path: Path, dpi: int = 90) -> None:
    from kit.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def fit_stages(learn: ConvLearner, cfg: TrainConfig, lr: float, verbose: bool = True) -> list[float]:
    """The lesson's stages: head on activations, head on augmented images, then all layers."""
    result = learn.fit(lr, cfg.epochs, cycle_len=cfg.cycle_len, cycle_mult=cfg.cycle_mult, verbose=verbose)
    if cfg.augment_epochs:
        learn.precompute = False
        result = learn.fit(lr, cfg.augment_epochs, cycle_len=1, verbose=verbose)
    if cfg.unfreeze_epochs:
        learn.unfreeze()
        top = lr if cfg.unfreeze_lr is None else float(cfg.unfreeze_lr)
        lrs = np.array([top / cfg.lr_div**2, top / cfg.lr_div, top])
        result = learn.fit(lrs, cfg.unfreeze_epochs, cycle_len=1, cycle_mult=2, verbose=verbose)
    return result


def predictions(learn: ConvLearner, cfg: TrainConfig, is_test: bool) -> np.ndarray:
    """Probabilities (N, c): averaged over TTA passes when configured."""
    if cfg.tta and cfg.n_aug > 0:
        log_preds, _ = learn.TTA(n_aug=cfg.n_aug, is_test=is_test)
        return np.mean(np.exp(log_preds), axis=0)
    return np.exp(learn.predict(is_test=is_test))


def save_predictions(learn: ConvLearner, cfg: TrainConfig, run: RunFolder) -> Path:
    data = learn.data
    preds = Predictions(list(data.classes), [str(f) for f in data.val_files], data.val_y, predictions(learn, cfg, is_test=False))
    if data.test_ds is not None:
        preds.test_files = [str(f) for f in data.test_files]
        preds.test_probs = predictions(learn, cfg, is_test=True)
    return run.write_predictions(preds)


def train(cfg: TrainConfig, data_dir: Path, verbose: bool = True) -> Run:
    """Trains on `<data_dir>/<slug>/` as configured; see the module docstring for what it writes."""
    import keras

    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    root = competition_root(cfg, data_dir)
    data = load_data(cfg, root, progress=verbose)
    run = RunFolder.create(work_root(cfg, data_dir), cfg.arch)
    run.write_config(cfg.to_dict())
    learn = ConvLearner.pretrained(cfg.arch, data, precompute=True, weights=None if cfg.weights == "none" else cfg.weights, mixed_precision=cfg.mixed_precision, opt=cfg.opt)
    lr = pick_lr(learn, cfg, run)
    val_loss, acc = fit_stages(learn, cfg, lr, verbose=verbose)
    learn.save(run.weights_file)
    save_predictions(learn, cfg, run)
    run.write_history({"lr": lr, "history": learn.history, "val_loss": val_loss, "val_accuracy": acc})
    run.mark_finished()
    run.set_latest()
    return Run(run.path, cfg, learn.history, lr, acc, val_loss, time.perf_counter() - t0)
