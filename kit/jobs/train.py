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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import metrics
from kit.data import ImageClassifierData, tfms_from_model
from kit.data.layouts import Layout, Lists, detect_layout
from kit.data.transforms import AUGMENTATIONS
from kit.env import work_dir_for
from kit.jobs.config import TrainConfig, config_from_dict, head_bag
from kit.kaggle.competition import DEFAULT_EPS as SUBMISSION_EPS  # how a log-loss submission is clipped
from kit.models.archs import Arch, arch_label
from kit.run import Predictions, RunFolder
from kit.training.callbacks.checkpoint import (
    CheckpointError,
    EpochCheckpoint,
    checkpoint_file,
    read_checkpoint,
    read_checkpoint_state,
)
from kit.training.distribute import check_batch_size, list_devices, resolve_devices
from kit.training.learner import ConvLearner
from kit.training.schedules import sgdr_total_epochs
from kit.training.seeding import seed_everything

# lr_find's first rate (the learner's default), and how often to retry 100x lower when it diverges at once.
LR_FIND_START, LR_FIND_TRIES = 1e-5, 2


# How each stage is named in a run's figures.
STAGE_LABELS = {"head": "head only", "augment": "augmented", "unfreeze": "unfrozen"}


@dataclass
class Run:
    """What a training run left behind."""

    dir: Path
    config: TrainConfig
    history: list[dict]
    lr: float
    val_accuracy: float  # the last epoch's (before TTA)
    val_loss: float
    seconds: float
    stages: dict[str, dict[str, float]]  # stage name → accuracy and log loss at its end (`stage_figures`)
    final: dict[str, float | bool]  # the saved validation predictions' figures (`final_figures`)
    n_train: int
    n_valid: int
    baseline: dict[str, float] | None = None  # `feature_baseline`'s figures, when configured

    @property
    def details(self) -> str:
        """Each stage's accuracy / log loss, then the saved predictions' (with TTA when configured)."""
        if self.final.get("validated") is False:
            return f"trained on all {self.n_train} labelled images (--all): no validation figures; run {self.dir}"
        parts = [f"{STAGE_LABELS.get(k, k)} {v['accuracy']:.3f} / {v['log_loss']:.4f}" for k, v in self.stages.items()]
        f = self.final
        if f["tta"]:
            parts.append(f"with TTA {f['accuracy']:.3f} / {f['log_loss']:.4f}")
        m = f.get("metric")
        shown = f", {m} {f[m]:.4f}" if m and m not in ("accuracy", "log_loss") else ""
        if self.baseline:
            shown += f"; LogisticRegression on the features {self.baseline['accuracy']:.3f} / {self.baseline['log_loss']:.4f}"
        return f"{', '.join(parts)} (clipped as a submission: {f['clipped_log_loss']:.4f}){shown}; run {self.dir}"

    @property
    def summary(self) -> str:
        """The result in one line: the saved predictions' accuracy and log loss, beside the head's."""
        if self.final.get("validated") is False:
            return f"{self.n_train} train images (--all), no validation figures, {self.seconds:.0f} s"
        head = self.stages.get("head")
        beside = f" (head only {head['accuracy']:.3f})" if head else ""
        return (
            f"valid accuracy {self.final['accuracy']:.3f}{beside}, log loss {self.final['log_loss']:.3f}, "
            f"{self.n_train} train / {self.n_valid} valid, {self.seconds:.0f} s"
        )


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


def resolve_layout(cfg: TrainConfig, root: Path) -> Layout:
    """Where the data is and how it is labelled (`kit.data.layouts`): a `--folder` is looked at (its
    labels CSV found, or named by `cfg.labels` / `cfg.images`); a competition's folder says it in its
    layout.json (a CSV competition's images stay where they were extracted or mounted); `cfg.sample`
    is the sample/ tree of class folders."""
    if cfg.sample:
        sample = root / "sample"
        if not (sample / "train").is_dir():
            raise ValueError(
                f"--sample trains on {sample}/train/<class>/, which `kit download` makes for competitions whose "
                f"labels are in file names; {root} has none. Use max_per_class (e.g. 5) for a quick look instead."
            )
        # sample/ has no test folder of its own: a quick run still predicts the real test set.
        test = root / "test" if (root / "test").is_dir() else None
        return Layout("folders", sample, sample / "train", valid=sample / "valid", test=test)
    if cfg.folder:
        return detect_layout(root, cfg.labels, cfg.images)
    from kit.kaggle.layout import read_layout

    record = read_layout(root) if root.is_dir() else None
    if record and record.get("layout"):
        return Layout.from_dict(record["layout"])
    from kit.kaggle.competition import find_competition

    comp = find_competition(cfg.competition)  # None: a folder under data/ with a slug's name, class folders
    if comp is not None and comp.label_from_name is None:
        raise FileNotFoundError(
            f"{root} has no layout.json: run `kit download -c {cfg.competition}` first (it extracts the files and "
            "checks the labels), or train on a folder in the competition's layout with --folder DIR."
        )
    test = root / "test" if (root / "test").is_dir() else None
    return Layout("folders", root, root / "train", valid=root / "valid", test=test)


def data_work_dir(cfg: TrainConfig, root: Path) -> Path:
    """Where the data's caches (decoded images, activations, the recorded split) go."""
    if cfg.folder:
        return work_dir_for(cfg.folder, cfg.work_dir)
    return root / "sample" if cfg.sample else root


def run_metric(cfg: TrainConfig) -> str | None:
    """The metric shown beside accuracy and log loss: the config's, else the competition's, a folder's
    when it is named by a competition's slug (/kaggle/input/<slug>), else none."""
    if cfg.metric is not None:
        return cfg.metric
    from kit.kaggle.competition import find_competition

    comp = find_competition(Path(cfg.folder).resolve().name if cfg.folder else cfg.competition)
    return comp.metric if comp is not None else None


def load_data(
    cfg: TrainConfig, root: Path, progress: bool = True, layout: Layout | None = None, lists: Lists | None = None
) -> ImageClassifierData:
    layout = layout or resolve_layout(cfg, root)
    work = data_work_dir(cfg, root)
    lists = lists or layout.lists(work, cfg.val_pct, cfg.split_seed)
    tfms = make_tfms(cfg.arch, cfg.size, cfg.aug, cfg.max_zoom)
    return ImageClassifierData.from_lists(
        layout.root,
        lists.classes,
        lists.trn,
        lists.val,
        lists.test,
        tfms=tfms,
        bs=cfg.bs,
        names=("train", "valid", "test"),
        num_workers=cfg.num_workers,
        progress=progress,
        work_dir=work,
        max_per_class=cfg.max_per_class,
    )


def pick_lr(learn: ConvLearner, cfg: TrainConfig, run: RunFolder | None) -> float:
    """The configured rate, or lr_find's suggestion (its plots saved into `run` when given).

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
    if run is None:
        return float(lr)
    from kit.analysis.report import save_figure

    save_figure(learn.sched.plot(), run.lr_find_png, dpi=90)
    save_figure(learn.sched.plot_lr(), run.lr_schedule_png, dpi=90)
    return float(lr)


@dataclass
class Stage:
    """One `learn.fit` of the lesson's flow, and the switches made before it."""

    name: str  # "head" (on activations), "augment" (head on augmented images) or "unfreeze"
    lrs: float | np.ndarray
    n_cycle: int
    cycle_len: int | None
    cycle_mult: int = 1
    opt: str = "sgd"  # the optimizer this stage trains with (a new one: no state carries over from the last)
    train_bn: bool = False  # "unfreeze": train the body's BatchNorm statistics too
    stochastic_depth: bool = True  # "unfreeze": keep the body's drop-connect on while it trains
    # "head": passes over the activations in each epoch so that the stage makes this many steps at least.
    # Why: 633 dog photos of 120 breeds at bs 64 are 30 steps in 3 epochs (0.50 accuracy / 2.33 log loss on
    # valid) against 0.72 / 1.13 with 300 (5-fold CV on the train split chose it: README.md).
    min_steps: int = 0
    members: int = 1  # "head": the bag's heads, each fit in turn for this stage's epochs (`ConvLearner.member`)

    def prepare(self, learn: ConvLearner) -> None:
        learn.opt = self.opt  # read by the next fit's compile
        if self.name == "augment":
            learn.precompute = False
        elif self.name == "unfreeze":
            learn.unfreeze(train_bn=self.train_bn)
            if not self.stochastic_depth:
                _no_stochastic_depth(learn)

    @property
    def epochs(self) -> int:
        """Epochs of one fit (one member's, for a bag)."""
        return (
            self.n_cycle if self.cycle_len is None else sgdr_total_epochs(self.n_cycle, self.cycle_len, self.cycle_mult)
        )


def _no_stochastic_depth(learn: ConvLearner) -> None:
    """Turns EfficientNet-Lite's drop-connect off in the body (other archs have none)."""
    from kit.models.efficientnet_lite import DropPath

    for layer in learn.backbone.layers:
        if isinstance(layer, DropPath):
            layer.rate = 0.0  # read when the train step is traced, which unfreezing does anew


def stages(cfg: TrainConfig, lr: float) -> list[Stage]:
    """The lesson's stages: head on activations (at least `cfg.head_min_steps` optimizer steps, see
    `ConvLearner.fit(min_steps=)`), head on augmented images, then all layers."""
    out = [
        Stage(
            "head",
            lr,
            cfg.epochs,
            cfg.cycle_len or None,
            cfg.cycle_mult,
            opt=cfg.opt,
            min_steps=cfg.head_min_steps,
            members=head_bag(cfg),
        )
    ]
    if cfg.augment_epochs:
        out.append(Stage("augment", lr, cfg.augment_epochs, 1, opt=cfg.opt))
    if cfg.unfreeze_epochs:
        if cfg.unfreeze_lrs is not None:
            lrs = np.array(cfg.unfreeze_lrs, dtype=np.float64)
        else:
            top = lr if cfg.unfreeze_lr is None else float(cfg.unfreeze_lr)
            lrs = np.array([top / cfg.lr_div**2, top / cfg.lr_div, top])
        out.append(
            Stage(
                "unfreeze",
                lrs,
                cfg.unfreeze_epochs,
                cfg.unfreeze_cycle_len or None,  # 0: a constant rate
                cfg.unfreeze_cycle_mult,
                opt=cfg.unfreeze_opt or cfg.opt,
                train_bn=cfg.train_bn,
                stochastic_depth=cfg.stochastic_depth,
            )
        )
    return out


def stage_figures(history: list[dict], done: list[Stage]) -> dict[str, dict[str, float]]:
    """Each stage's validation accuracy and log loss at its last epoch (before any TTA), from the
    learner's history: a resumed run reads the figures of the stages it skipped from its checkpoint's."""
    rows = {r["epoch"]: r for r in history}
    out, end = {}, 0
    for stage in done:
        end += stage.epochs * stage.members  # a bag's last row validates all its heads
        row = rows.get(end - 1)
        if row is not None and row.get("val_loss") is not None:
            out[stage.name] = {"accuracy": row["accuracy"], "log_loss": row["val_loss"]}
    return out


def fit_stages(
    learn: ConvLearner,
    cfg: TrainConfig,
    lr: float,
    verbose: bool = True,
    checkpoint_dir: Path | None = None,
    resume: dict | None = None,
    find_lr: Callable[[], float] | None = None,
) -> tuple[list[float], list[float]]:
    """Runs `stages(cfg, lr)`, with a checkpoint after every epoch into `checkpoint_dir`; returns the
    last fit's [val_loss, accuracy] and the rate of each head of the bag.

    A bag's heads are fit one after another (`ConvLearner.member`): the first at `lr`, each other one at
    `find_lr()` (its own lr_find, on its own weights; None: at `lr` too).

    `resume` (what `read_checkpoint` read: the learner's state, the stage and head under "facts") skips
    the stages and heads before the checkpoint's and loads the state into the learner as that one
    begins: its fit continues from the next epoch (or returns at once if the checkpoint closed it),
    with the weights, optimizer state, seeds, schedule position and shuffling of the uninterrupted run.
    """
    result: list[float] = []
    then = {} if resume is None else resume["facts"]
    resume_at = None if resume is None else (int(then["stage"]), int(then.get("member", 0)))
    head_lrs = list(then.get("head_lrs", []))

    def fit(stage: Stage, lrs: float | np.ndarray, facts: dict) -> list[float]:
        cbs = [] if checkpoint_dir is None else [EpochCheckpoint(checkpoint_dir, learn, facts=facts)]
        return learn.fit(
            lrs,
            stage.n_cycle,
            cycle_len=stage.cycle_len,
            cycle_mult=stage.cycle_mult,
            verbose=verbose,
            callbacks=cbs,
            min_steps=stage.min_steps,
        )

    for i, stage in enumerate(stages(cfg, lr)):
        stage.prepare(learn)  # every stage's switch, a skipped one's too: the learner ends configured as then
        if resume_at is not None and i < resume_at[0]:
            continue
        facts = {"stage": i, "stage_name": stage.name, "lr": lr}
        if stage.members == 1:
            if resume_at == (i, 0):
                learn.load_state_dict(resume)
            result = fit(stage, stage.lrs, facts)
            continue
        for m in range(stage.members):  # a bag's heads, one after another
            if resume_at is not None and (i, m) < resume_at:
                continue  # a head the checkpoint's weights already hold
            with learn.member(m):
                if resume_at == (i, m):
                    learn.load_state_dict(resume)
                else:
                    head_lrs = head_lrs[:m] + [lr if m == 0 or find_lr is None else find_lr()]
                result = fit(stage, head_lrs[m], {**facts, "member": m, "head_lrs": head_lrs})
    return result, head_lrs


def predictions(learn: ConvLearner, cfg: TrainConfig, is_test: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (N, c): averaged over the plain pass and `n_aug` augmented ones when TTA is configured;
    and the plain pass's alone when it is (None without TTA)."""
    if cfg.tta and cfg.n_aug > 0:
        probs = np.exp(learn.TTA(n_aug=cfg.n_aug, is_test=is_test)[0])
        return np.mean(probs, axis=0), probs[0]
    return np.exp(learn.predict(is_test=is_test)), None


def save_predictions(learn: ConvLearner, cfg: TrainConfig, run: RunFolder) -> Predictions:
    """The validation (and test) predictions, written into the run; returned for the run's figures."""
    data = learn.data
    if len(data.val_y):
        probs, plain = predictions(learn, cfg, is_test=False)
    else:  # `--all`: no validation images
        probs, plain = np.zeros((0, data.c), dtype=np.float32), None
    preds = Predictions(list(data.classes), [str(f) for f in data.val_files], data.val_y, probs, val_plain=plain)
    if data.test_ds is not None:
        preds.test_files = [str(f) for f in data.test_files]
        preds.test_probs, preds.test_plain = predictions(learn, cfg, is_test=True)
    run.write_predictions(preds)
    return preds


def final_figures(
    y: np.ndarray, probs: np.ndarray, tta: bool, metric: str | None = None
) -> dict[str, float | bool | str]:
    """The saved validation predictions' accuracy and log loss, the log loss once clipped to
    [eps, 1 - eps] as a log-loss submission is (`kit submit`'s default eps), and the competition's
    metric under its name (with `"metric"` naming it)."""
    if len(y) == 0:  # `kit train --all`: every labelled image trained, none left to score
        return {"tta": tta, "validated": False}
    out: dict[str, float | bool | str] = {
        **metrics.figures(y, probs, metric),
        "clipped_log_loss": metrics.log_loss(y, np.clip(probs, SUBMISSION_EPS, 1 - SUBMISSION_EPS)),
        "tta": tta,
    }
    if metric is not None:
        out["metric"] = metric
    return out


def feature_baseline(learn: ConvLearner, metric: str | None = None) -> dict[str, float]:
    """A baseline that needs no fine-tuning: scikit-learn's LogisticRegression (its defaults: L2, C=1)
    on the frozen body's pooled features of train, scored on valid. What the kit's head must beat."""
    from sklearn.linear_model import LogisticRegression

    x, y = learn.activations("train"), learn.data.trn_y
    model = LogisticRegression(max_iter=2000).fit(x, y)
    probs = np.zeros((len(learn.data.val_y), learn.data.c))
    probs[:, model.classes_] = model.predict_proba(learn.activations("valid"))
    return metrics.figures(learn.data.val_y, probs, metric)


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
    """The run `kit train --resume [RUN]` continues, and its checkpoint (`read_checkpoint`'s: the learner's
    state, the job's facts under "facts").

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
            checkpoint = read_checkpoint(run.checkpoint_dir)
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
        return run, checkpoint
    raise CheckpointError(
        f"No unfinished run under {RunFolder.runs_dir(root)} has a readable checkpoint: " + " ".join(skipped)
    )


def data_fingerprint(layout: Layout, lists: Lists) -> dict:
    """What a run trained on, to recognise the same data later: the classes, and each train and valid
    file's path inside the data folder and size, and for a made split its label (a copy of the folder
    elsewhere is the same data)."""
    h = hashlib.sha1()
    counts = {}
    base = layout.root
    labelled_by_folder = layout.kind == "folders"
    for split, (files, y) in (("train", lists.trn), ("valid", lists.val)):
        counts[split] = len(files)
        h.update(json.dumps([split, lists.classes]).encode())
        for f, label in zip(files, y):
            rel = f.relative_to(base).as_posix() if f.is_relative_to(base) else str(f)
            size = f.stat().st_size if f.is_file() else -1
            # Class folders carry the label in the path; a CSV's label is in the row.
            h.update(f"{rel}|{size}{'' if labelled_by_folder else f'|{label}'}\n".encode())
    out = {"folder": str(Path(base).resolve()), "key": h.hexdigest()[:16], **counts, "layout": layout.kind}
    if lists.split_record is not None:
        out["split"] = str(lists.split_record)
    return out


def check_same_data(run: RunFolder, saved: dict | None, now: dict) -> None:
    """Refuses to resume a run on other images than it trained on."""
    if saved and saved.get("key") != now["key"]:
        raise ValueError(
            f"{run.path} trained on {saved.get('folder')} ({saved.get('train')} train / {saved.get('valid')} valid images), but "
            f"{now['folder']} holds other files ({now['train']} train / {now['valid']} valid): resuming would train on other data. "
            f"Pass the run's own folder with --folder, or start a new run without --resume."
        )


def resumed_config(saved: dict, given: TrainConfig) -> TrainConfig:
    """The configuration a run (or CV run) saved, to resume it with; `given.folder`, when set, is where
    the command line says the data is now."""
    # A run saved before bags of heads had one head, whatever the default is now.
    cfg = config_from_dict({"head_bag": 1, **saved})
    if given.folder:
        cfg.folder, cfg.work_dir = given.folder, given.work_dir or cfg.work_dir
    return cfg


def pin_folder(cfg: TrainConfig) -> None:
    """`cfg.folder` and `cfg.work_dir` made absolute: a run records where its data is, never relative to
    the shell's folder."""
    if cfg.folder:
        cfg.folder = str(Path(cfg.folder).resolve())
        cfg.work_dir = str(Path(cfg.work_dir).resolve()) if cfg.work_dir else None


def preflight(cfg: TrainConfig) -> Arch:
    """Everything that can be refused before any image is decoded or any run folder made: the arch,
    the weights file, the devices and the batch they split. Returns the arch, resolved once (a Keras Hub
    preset's folder is looked for here)."""
    import keras

    from kit.models.archs import get_arch
    from kit.models.weights import resolve_weights

    arch = get_arch(cfg.arch)
    if cfg.weights not in ("imagenet", "none"):
        resolve_weights(arch, cfg.weights)  # an explicit file that is not there
    check_batch_size(cfg.bs, len(resolve_devices(cfg.devices, list_devices(), keras.backend.backend())))
    return arch


def train(
    cfg: TrainConfig,
    data_dir: Path,
    verbose: bool = True,
    resume: str | Path | bool | None = None,
    *,
    split: Lists | None = None,
    runs_root: Path | None = None,
) -> Run:
    """Trains on `<data_dir>/<slug>/` as configured; see the module docstring for what it writes.

    Every finished epoch leaves a checkpoint in the run folder. `resume=True` (the newest unfinished
    run) or a run's name or path continues that run with its own config.json, from its last
    checkpoint, to the result an uninterrupted run would have reached. `cfg.folder`, when set, is
    where the data is now (a run started as `--folder c13` may be resumed from anywhere as
    `--folder /abs/c13`); the run's own folder otherwise. Either way the files must be the ones the
    run trained on.

    `split` replaces the layout's train and valid files (`kit cv`'s folds); `runs_root` is where the run's
    `runs/` is (default: the data's work folder).

    Raises:
        DivergedError: the loss became NaN or infinite (the run stays unfinished, LATEST unchanged).
        TrainingInterrupted: Ctrl-C; it names the checkpoint to resume from.
        ValueError: an argument that cannot work (checked before any image is decoded), or a resume on other data.
    """
    t0 = time.perf_counter()
    run, ckpt, saved_data = None, None, None
    if resume:
        run, ckpt = find_resume(runs_root or work_root(cfg, data_dir), resume)
        saved = run.read_config()
        cfg = resumed_config(saved, cfg)
        saved_data = saved.get("data")
    arch = preflight(cfg)
    seed_everything(cfg.seed)  # every seed, and the backend's deterministic ops (kit.training.seeding)
    root = competition_root(cfg, data_dir)
    layout = resolve_layout(cfg, root)
    # Listed once, warned once.
    lists = split if split is not None else layout.lists(data_work_dir(cfg, root), cfg.val_pct, cfg.split_seed)
    if cfg.all_data:
        lists = lists.all_train()
    fingerprint = data_fingerprint(layout, lists)
    if run is not None:
        check_same_data(run, saved_data, fingerprint)
    if cfg.folder:
        pin_folder(cfg)
        cfg.labels = str(layout.labels) if layout.labels is not None else None
        cfg.images = str(layout.images) if layout.kind == "csv" else cfg.images
    cfg.head_bag = head_bag(cfg)  # saved as resolved: the run's weights hold this many heads
    data = load_data(cfg, root, progress=verbose, layout=layout, lists=lists)
    learn = ConvLearner.pretrained(
        arch,
        data,
        precompute=True,
        weights=None if cfg.weights == "none" else cfg.weights,
        ps=list(cfg.head_ps),
        mixed_precision=cfg.mixed_precision,
        opt=cfg.opt,
        devices=cfg.devices,
        compilation_cache=cfg.compilation_cache,
        bag=cfg.head_bag,
    )
    learn.metric = run_metric(cfg)  # shown in the epoch table, beside accuracy and log loss
    if run is None:  # made only now: a run refused or stopped while building leaves no folder behind
        run = RunFolder.create(runs_root or work_root(cfg, data_dir), arch_label(cfg.arch))
    # What the run really got (every device's name, the dtype policy, the data) beside what was asked for.
    run.write_config(
        {
            **cfg.to_dict(),
            "data": fingerprint,
            "resolved": {**learn.placement.to_dict(), "mixed_precision": learn.mixed_precision},
        }
    )
    baseline = feature_baseline(learn, learn.metric) if cfg.baseline else None
    if baseline is not None and verbose:
        print(
            f"baseline: LogisticRegression on the {cfg.arch} features: accuracy {baseline['accuracy']:.3f}, "
            f"log loss {baseline['log_loss']:.4f}"
        )
    try:
        if ckpt:
            lr = float(ckpt["facts"]["lr"])
        else:
            with learn.member(0):  # the first head's rate; a bag's other heads find their own (fit_stages)
                lr = pick_lr(learn, cfg, run)
        (val_loss, acc), head_lrs = fit_stages(
            learn,
            cfg,
            lr,
            verbose=verbose,
            checkpoint_dir=run.checkpoint_dir,
            resume=ckpt,
            find_lr=lambda: pick_lr(learn, cfg, None),  # cfg.lr, when set, for every head
        )
    except KeyboardInterrupt as e:
        try:
            epoch = read_checkpoint_state(run.checkpoint_dir)["history"][-1]["epoch"]
        except CheckpointError:
            epoch = None
        raise TrainingInterrupted(run, epoch) from e
    learn.save(run.weights_file)
    preds = save_predictions(learn, cfg, run)
    figures = stage_figures(learn.history, stages(cfg, lr))
    final = final_figures(preds.val_y, preds.val_probs, tta=cfg.tta and cfg.n_aug > 0, metric=learn.metric)
    run.write_history(
        {
            "lr": lr,
            "history": learn.history,
            "val_loss": val_loss,
            "val_accuracy": acc,
            "stages": figures,
            **({"head_lrs": head_lrs} if head_lrs else {}),
            "final": final,
            **({"baseline": baseline} if baseline is not None else {}),
        }
    )
    run.mark_finished()
    run.set_latest()
    return Run(
        run.path,
        cfg,
        learn.history,
        lr,
        acc,
        val_loss,
        time.perf_counter() - t0,
        figures,
        final,
        len(data.trn_ds),
        len(data.val_ds),
        baseline,
    )
