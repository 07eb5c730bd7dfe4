"""The lesson's flow for a competition, as named steps: data → learner → lr_find → fit → predict → save.

Each run writes into its own folder `<data>/<slug>/runs/<UTC time>-<arch>/` (for `--folder PATH`:
`<work>/runs/...`, see `work_root`), through `kit.run.RunFolder`
(which alone knows the files), and `kit analyze` and `kit submit` read it back the same way.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on, transforms_top_down
from kit.data.files import read_class_folders
from kit.env import work_dir_for
from kit.jobs.config import TrainConfig, config_from_dict
from kit.run import Predictions, RunFolder
from kit.training.callbacks.checkpoint import (
    CheckpointError,
    EpochCheckpoint,
    assign_values,
    checkpoint_file,
    read_checkpoint,
    read_checkpoint_state,
)
from kit.training.distribute import check_batch_size, list_devices, resolve_devices
from kit.training.learner import ConvLearner
from kit.training.schedules import sgdr_total_epochs

AUGMENTATIONS = {"side_on": transforms_side_on, "top_down": transforms_top_down, "none": None}
# lr_find's first rate (the learner's default), and how often to retry 100x lower when it diverges at once.
LR_FIND_START, LR_FIND_TRIES = 1e-5, 2


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
    return ImageClassifierData.from_paths(
        path, tfms=tfms, bs=cfg.bs, test_name=test_name, num_workers=cfg.num_workers, progress=progress, work_dir=work
    )


def pick_lr(learn: ConvLearner, cfg: TrainConfig, run: RunFolder) -> float:
    """The configured rate, or lr_find's suggestion (its plots saved into the run).

    When the loss diverges before lr_find has a curve to read (fewer than 5 finite points), the
    test runs again from a rate 100x lower; if it still diverges at once, this raises rather than
    train at a guess.
    """
    if cfg.lr is not None:
        return float(cfg.lr)
    start = LR_FIND_START
    for _ in range(LR_FIND_TRIES):
        lr = learn.lr_find(start_lr=start)
        if learn.sched.reliable:
            break
        start /= 100
    else:
        raise ValueError(
            f"lr_find's loss diverged within a few batches even from start_lr={start * 100:g}, so its suggestion "
            "would be a guess: set the rate with --lr (or lr in --config), and check the data and the model."
        )
    from kit.analysis.report import save_figure

    save_figure(learn.sched.plot(), run.lr_find_png, dpi=90)
    save_figure(learn.sched.plot_lr(), run.lr_schedule_png, dpi=90)
    return float(lr)


@dataclass
class Stage:
    """One `learn.fit` of the lesson's flow, and the switch made before it."""

    name: str  # "head" (on activations), "augment" (head on augmented images) or "unfreeze"
    lrs: float | np.ndarray
    n_cycle: int
    cycle_len: int | None
    cycle_mult: int = 1

    def prepare(self, learn: ConvLearner) -> None:
        if self.name == "augment":
            learn.precompute = False
        elif self.name == "unfreeze":
            learn.unfreeze()

    @property
    def epochs(self) -> int:
        return (
            self.n_cycle if self.cycle_len is None else sgdr_total_epochs(self.n_cycle, self.cycle_len, self.cycle_mult)
        )


def stages(cfg: TrainConfig, lr: float) -> list[Stage]:
    """The lesson's stages: head on activations, head on augmented images, then all layers."""
    out = [Stage("head", lr, cfg.epochs, cfg.cycle_len, cfg.cycle_mult)]
    if cfg.augment_epochs:
        out.append(Stage("augment", lr, cfg.augment_epochs, 1))
    if cfg.unfreeze_epochs:
        top = lr if cfg.unfreeze_lr is None else float(cfg.unfreeze_lr)
        out.append(Stage("unfreeze", np.array([top / cfg.lr_div**2, top / cfg.lr_div, top]), cfg.unfreeze_epochs, 1, 2))
    return out


def fit_stages(
    learn: ConvLearner,
    cfg: TrainConfig,
    lr: float,
    verbose: bool = True,
    checkpoint_dir: Path | None = None,
    resume: dict | None = None,
) -> list[float]:
    """Runs `stages(cfg, lr)`, with a checkpoint after every epoch into `checkpoint_dir`.

    `resume` (`read_checkpoint`'s state, model values and optimizer values) skips what was done and
    continues the interrupted stage from its next epoch, with the weights, optimizer state, seeds,
    schedule position and shuffling of the uninterrupted run.
    """
    result: list[float] = []
    for i, stage in enumerate(stages(cfg, lr)):
        stage.prepare(learn)
        start, restore = 0, None
        if resume is not None and i <= resume["state"]["stage"]:
            if i < resume["state"]["stage"]:
                continue
            state = resume["state"]
            assign_values(learn.model.variables, resume["model"], "model variables")
            learn.history, learn._epochs_done = list(state["history"]), int(state["epochs_done"])
            start = int(state["epoch"])
            if start >= stage.epochs:  # the checkpoint closed this stage: the next starts afresh
                learn._epochs_done += stage.epochs
                last = learn.history[-1]
                result = [last["val_loss"], last["accuracy"]]
                continue
            restore = (resume["model"], resume["opt"], state.get("rng", {}))
        cbs = []
        if checkpoint_dir is not None:
            cbs.append(
                EpochCheckpoint(
                    checkpoint_dir,
                    variables_of=learn.model,
                    start_epoch=learn._epochs_done,
                    history=learn.history,
                    state={"stage": i, "stage_name": stage.name, "lr": lr, "epochs_done": learn._epochs_done},
                    restore=restore,
                )
            )
        result = learn.fit(
            stage.lrs,
            stage.n_cycle,
            cycle_len=stage.cycle_len,
            cycle_mult=stage.cycle_mult,
            verbose=verbose,
            callbacks=cbs,
            initial_epoch=start,
        )
    return result


def predictions(learn: ConvLearner, cfg: TrainConfig, is_test: bool) -> np.ndarray:
    """Probabilities (N, c): averaged over TTA passes when configured."""
    if cfg.tta and cfg.n_aug > 0:
        log_preds, _ = learn.TTA(n_aug=cfg.n_aug, is_test=is_test)
        return np.mean(np.exp(log_preds), axis=0)
    return np.exp(learn.predict(is_test=is_test))


def save_predictions(learn: ConvLearner, cfg: TrainConfig, run: RunFolder) -> Path:
    data = learn.data
    preds = Predictions(
        list(data.classes), [str(f) for f in data.val_files], data.val_y, predictions(learn, cfg, is_test=False)
    )
    if data.test_ds is not None:
        preds.test_files = [str(f) for f in data.test_files]
        preds.test_probs = predictions(learn, cfg, is_test=True)
    return run.write_predictions(preds)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `kit train`: says where the last checkpoint is (`run`, `checkpoint`, `epoch`)."""

    def __init__(self, run: RunFolder, epoch: int | None):
        self.run, self.epoch = run, epoch
        self.checkpoint = checkpoint_file(run.checkpoint_dir) if epoch is not None else None
        where = (
            f"the checkpoint after epoch {epoch} is {self.checkpoint}"
            if epoch is not None
            else "no epoch had finished, so there is no checkpoint"
        )
        super().__init__(f"training interrupted; {where}")


def find_resume(root: Path, resume: str | Path | bool) -> tuple[RunFolder, dict]:
    """The run `kit train --resume [RUN]` continues, and its checkpoint (state, model and optimizer values).

    The run named, else the newest unfinished run whose checkpoint can be read: a run whose first
    checkpoint write was interrupted (an empty `checkpoint/`) or whose checkpoint is damaged is
    skipped with a warning naming it, and the next older one is taken.

    Raises:
        FileNotFoundError: no unfinished run under `root`.
        CheckpointError: the named run's checkpoint is missing or unreadable, or no run's is readable.
        ValueError: the named run finished.
    """
    if resume is True:
        runs = RunFolder.unfinished(root)
        if not runs:
            raise FileNotFoundError(
                f"No unfinished run with a checkpoint under {RunFolder.runs_dir(root)}: nothing to resume."
            )
    else:
        runs = [RunFolder.resolve(root, resume)]
        if runs[0].finished:
            raise ValueError(
                f"{runs[0].path} finished cleanly: there is nothing to resume. Start a new run without --resume."
            )
    skipped: list[str] = []
    for run in runs:
        try:
            state, model_values, opt_values = read_checkpoint(run.checkpoint_dir)
        except CheckpointError as e:
            if resume is not True:
                raise
            skipped.append(str(e))
            continue
        if skipped:
            warnings.warn(
                f"Resuming {run.name}, the newest run whose checkpoint can be read; skipped: " + " ".join(skipped),
                stacklevel=2,
            )
        return run, {"state": state, "model": model_values, "opt": opt_values}
    raise CheckpointError(
        f"No unfinished run under {RunFolder.runs_dir(root)} has a readable checkpoint: " + " ".join(skipped)
    )


def data_fingerprint(path: Path) -> dict:
    """What a run trained on, to recognise the same data later: the classes, and each train and valid
    file's path inside the folder and size (a copy of the folder elsewhere is the same data)."""
    h = hashlib.sha1()
    counts = {}
    for split in ("train", "valid"):
        with warnings.catch_warnings():  # `load_data` lists the same folders again and warns about them once
            warnings.simplefilter("ignore")
            files, _, classes = read_class_folders(path, split)
        counts[split] = len(files)
        h.update(json.dumps([split, classes]).encode())
        for f in files:
            h.update(f"{f.relative_to(path).as_posix()}|{f.stat().st_size if f.is_file() else -1}\n".encode())
    return {"folder": str(Path(path).resolve()), "key": h.hexdigest()[:16], **counts}


def check_same_data(run: RunFolder, saved: dict | None, now: dict) -> None:
    """Refuses to resume a run on other images than it trained on."""
    if saved and saved.get("key") != now["key"]:
        raise ValueError(
            f"{run.path} trained on {saved.get('folder')} ({saved.get('train')} train / {saved.get('valid')} valid images), but "
            f"{now['folder']} holds other files ({now['train']} train / {now['valid']} valid): resuming would train on other data. "
            f"Pass the run's own folder with --folder, or start a new run without --resume."
        )


def preflight(cfg: TrainConfig) -> None:
    """Everything that can be refused before any image is decoded or any run folder made: the arch,
    the weights file, the devices and the batch they split."""
    import keras

    from kit.models.archs import get_arch
    from kit.models.weights import resolve_weights

    arch = get_arch(cfg.arch)
    if cfg.weights not in ("imagenet", "none"):
        resolve_weights(arch, cfg.weights)  # an explicit file that is not there
    check_batch_size(cfg.bs, len(resolve_devices(cfg.devices, list_devices(), keras.backend.backend())))


def train(cfg: TrainConfig, data_dir: Path, verbose: bool = True, resume: str | Path | bool | None = None) -> Run:
    """Trains on `<data_dir>/<slug>/` as configured; see the module docstring for what it writes.

    Every finished epoch leaves a checkpoint in the run folder. `resume=True` (the newest unfinished
    run) or a run's name or path continues that run with its own config.json, from its last
    checkpoint, to the result an uninterrupted run would have reached. `cfg.folder`, when set, is
    where the data is now (a run started as `--folder c13` may be resumed from anywhere as
    `--folder /abs/c13`); the run's own folder otherwise. Either way the files must be the ones the
    run trained on.

    Raises:
        DivergedError: the loss became NaN or infinite (the run stays unfinished, LATEST unchanged).
        TrainingInterrupted: Ctrl-C; it names the checkpoint to resume from.
        ValueError: an argument that cannot work (checked before any image is decoded), or a resume on other data.
    """
    import keras

    t0 = time.perf_counter()
    run, ckpt, saved_data = None, None, None
    if resume:
        run, ckpt = find_resume(work_root(cfg, data_dir), resume)
        saved = run.read_config()
        given = cfg
        cfg = config_from_dict(saved)
        if given.folder:  # the command line says where the data is now
            cfg.folder, cfg.work_dir = given.folder, given.work_dir or cfg.work_dir
        saved_data = saved.get("data")
    preflight(cfg)
    keras.utils.set_random_seed(cfg.seed)
    root = competition_root(cfg, data_dir)
    fingerprint = data_fingerprint(root / "sample" if cfg.sample else root)
    if run is not None:
        check_same_data(run, saved_data, fingerprint)
    if cfg.folder:
        cfg.folder = str(
            Path(cfg.folder).resolve()
        )  # the run records where its data is, never relative to the shell's folder
        cfg.work_dir = str(Path(cfg.work_dir).resolve()) if cfg.work_dir else None
    data = load_data(cfg, root, progress=verbose)
    learn = ConvLearner.pretrained(
        cfg.arch,
        data,
        precompute=True,
        weights=None if cfg.weights == "none" else cfg.weights,
        mixed_precision=cfg.mixed_precision,
        opt=cfg.opt,
        devices=cfg.devices,
        compilation_cache=cfg.compilation_cache,
    )
    if run is None:  # made only now: a run refused or stopped while building leaves no folder behind
        run = RunFolder.create(work_root(cfg, data_dir), cfg.arch)
    # What the run really got (every device's name, the dtype policy, the data) beside what was asked for.
    run.write_config(
        {
            **cfg.to_dict(),
            "data": fingerprint,
            "resolved": {**learn.placement.to_dict(), "mixed_precision": learn.mixed_precision},
        }
    )
    try:
        lr = float(ckpt["state"]["lr"]) if ckpt else pick_lr(learn, cfg, run)
        val_loss, acc = fit_stages(learn, cfg, lr, verbose=verbose, checkpoint_dir=run.checkpoint_dir, resume=ckpt)
    except KeyboardInterrupt as e:
        try:
            epoch = read_checkpoint_state(run.checkpoint_dir)["history"][-1]["epoch"]
        except CheckpointError:
            epoch = None
        raise TrainingInterrupted(run, epoch) from e
    learn.save(run.weights_file)
    save_predictions(learn, cfg, run)
    run.write_history({"lr": lr, "history": learn.history, "val_loss": val_loss, "val_accuracy": acc})
    run.mark_finished()
    run.set_latest()
    return Run(run.path, cfg, learn.history, lr, acc, val_loss, time.perf_counter() - t0)
