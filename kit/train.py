"""The lesson's flow for a competition, as named steps: data → learner → lr_find → fit → predict → save.

Each run writes into its own folder `<data>/<slug>/runs/<UTC time>-<arch>/`: config.json (the
resolved configuration), history.json, lr_find.png, model.weights.h5 and predictions.npz (validation
and test log-probabilities with the file lists), which `kit analyze` and `kit submit` read.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from kit.config import TrainConfig
from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on, transforms_top_down
from kit.learner import ConvLearner

AUGMENTATIONS = {"side_on": transforms_side_on, "top_down": transforms_top_down, "none": None}
LATEST = "LATEST"


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


def write_json(path: Path, obj: object) -> None:
    """Writes JSON atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def competition_root(cfg: TrainConfig, data_dir: Path) -> Path:
    return Path(data_dir) / cfg.competition


def new_run_dir(root: Path, arch: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run = root / "runs" / f"{stamp}-{arch}"
    run.mkdir(parents=True, exist_ok=False)
    return run


def latest_run(root: Path) -> Path:
    """The folder of the most recent run under root/runs (named in runs/LATEST)."""
    marker = Path(root) / "runs" / LATEST
    if not marker.is_file():
        raise FileNotFoundError(f"No training run under {Path(root) / 'runs'}: run `kit train` first.")
    run = marker.parent / marker.read_text().strip()
    if not run.is_dir():
        raise FileNotFoundError(f"{marker} names {run}, which does not exist: run `kit train` again.")
    return run


def load_data(cfg: TrainConfig, root: Path, progress: bool = True) -> ImageClassifierData:
    path = root / "sample" if cfg.sample else root
    tfms = tfms_from_model(cfg.arch, cfg.size, aug_tfms=AUGMENTATIONS[cfg.aug], max_zoom=cfg.max_zoom if cfg.aug != "none" else None)
    # sample/ has no test folder of its own: a quick run still predicts the real test set.
    test_name = "test" if (path / "test").is_dir() else "../test" if (root / "test").is_dir() else None
    return ImageClassifierData.from_paths(path, tfms=tfms, bs=cfg.bs, test_name=test_name, num_workers=cfg.num_workers, progress=progress)


def pick_lr(learn: ConvLearner, cfg: TrainConfig, run: Path) -> float:
    """The configured rate, or lr_find's suggestion (its plot saved as lr_find.png)."""
    if cfg.lr is not None:
        return float(cfg.lr)
    lr = learn.lr_find()
    fig = learn.sched.plot()
    fig.savefig(run / "lr_find.png", dpi=90)
    learn.sched.plot_lr().savefig(run / "lr_schedule.png", dpi=90)
    return float(lr)


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


def save_predictions(learn: ConvLearner, cfg: TrainConfig, run: Path) -> Path:
    data = learn.data
    arrays = dict(
        classes=np.array(data.classes),
        val_files=np.array(data.val_files),
        val_y=data.val_y,
        val_probs=predictions(learn, cfg, is_test=False),
    )
    if data.test_ds is not None:
        arrays.update(test_files=np.array(data.test_files), test_probs=predictions(learn, cfg, is_test=True))
    path = run / "predictions.npz"
    tmp = run / f".predictions.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def train(cfg: TrainConfig, data_dir: Path, verbose: bool = True) -> Run:
    """Trains on `<data_dir>/<slug>/` as configured; see the module docstring for what it writes."""
    import keras

    t0 = time.perf_counter()
    keras.utils.set_random_seed(cfg.seed)
    root = competition_root(cfg, data_dir)
    data = load_data(cfg, root, progress=verbose)
    run = new_run_dir(root, cfg.arch)
    write_json(run / "config.json", cfg.to_dict())
    learn = ConvLearner.pretrained(cfg.arch, data, precompute=True, weights=None if cfg.weights == "none" else cfg.weights, mixed_precision=cfg.mixed_precision, opt=cfg.opt)
    lr = pick_lr(learn, cfg, run)
    val_loss, acc = fit_stages(learn, cfg, lr, verbose=verbose)
    tmp_weights = learn.save("_last")
    os.replace(tmp_weights, run / "model.weights.h5")
    save_predictions(learn, cfg, run)
    write_json(run / "history.json", {"lr": lr, "history": learn.history, "val_loss": val_loss, "val_accuracy": acc})
    (root / "runs" / f".{LATEST}.tmp").write_text(run.name)
    os.replace(root / "runs" / f".{LATEST}.tmp", root / "runs" / LATEST)
    return Run(run, cfg, learn.history, lr, acc, val_loss, time.perf_counter() - t0)
