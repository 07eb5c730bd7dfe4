"""`kit` command line: one library call per subcommand. The only place that prints and exits.

    kit download [-c SLUG] [--data-dir DIR] [--valid N] [--seed S] [--force]
    kit train    [-c SLUG] [--data-dir DIR] [--recipe NAME] [--config FILE] [--quick] [--arch NAME] [--size PX] [--seed N] ...
    kit cv       [-c SLUG | --folder PATH] [--recipe NAME] [--folds K] [--mean arithmetic|geometric] [--resume [RUN]] ...
    kit analyze  [-c SLUG] [--data-dir DIR]
    kit train|analyze --folder PATH [--work-dir DIR]   (any class-folder tree instead of a competition)
    kit predict  [--run RUN] [--folder PATH | -c SLUG] [-o CSV] FILE_OR_FOLDER...
    kit real     --folder PATH [--work-dir DIR] [--quick] [--seed N] [--size PX]   (`kit train --recipe real`: `make real`)
    kit submit   [-c SLUG] [--data-dir DIR] [-m MESSAGE] [--dry-run] [--run RUN | --runs RUN RUN...]
    kit demo     (the offline digits demo, end to end)
    kit list     (known competitions)

Exit status: 0, 1 (an error, in one line), 130 (Ctrl-C) or 143 (SIGTERM, 128 + 15), whatever the
command was doing when the signal came (`kit.signals`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kit.signals import StopSignals, stop_on_signals

if TYPE_CHECKING:  # annotations only: `kit --help` imports no job
    from kit.jobs.config import TrainConfig
    from kit.jobs.train import Run

DEFAULT_SLUG = "dogs-vs-cats-redux-kernels-edition"
RECIPE_FIRST = "the recipe's, else "  # kit train's -c: a recipe may name its competition


def _common(p: argparse.ArgumentParser, slug_default: str | None = DEFAULT_SLUG) -> None:
    p.add_argument(
        "-c",
        "--competition",
        default=slug_default,
        help=f"competition slug (default: {RECIPE_FIRST if slug_default is None else ''}{DEFAULT_SLUG}; "
        "`kit list` shows all)",
    )
    p.add_argument(
        "--data-dir", default=None, help="data folder (default: ./data, or /kaggle/working/data in a Kaggle notebook)"
    )


def _folder(p: argparse.ArgumentParser, labels: bool = True) -> None:
    p.add_argument(
        "--folder",
        default=None,
        help="any data folder instead of a competition, may be read-only: train/<class>/ + valid/<class>/, an image "
        "folder with a labels CSV beside it (Kaggle's layout), or train/<class>/ alone; an optional test folder",
    )
    if labels:
        p.add_argument(
            "--labels", default=None, metavar="FILE", help="--folder's labels CSV (id,label; default: found by looking)"
        )
        p.add_argument(
            "--images", default=None, metavar="DIR", help="the folder of images the CSV's ids name (default: found)"
        )
    p.add_argument(
        "--work-dir",
        default=None,
        help="caches and runs of --folder (default: the folder when writable, else a folder under the kit's user cache)",
    )


def _devices_arg(text: str) -> int | str:
    """--devices: "auto" or a number of devices."""
    return int(text) if text.isdigit() else text


def _resume_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN", help=help)


def _train_options(p: argparse.ArgumentParser) -> None:
    """The options of `kit train` and `kit cv`: what a TrainConfig takes from the command line."""
    _common(p, slug_default=None)  # None: the recipe's competition, else TrainConfig's
    _folder(p)
    p.add_argument(
        "--recipe",
        default=None,
        metavar="NAME",
        help="a recipe shipped with the kit (kit/recipes/NAME.toml): real (efficientnet_lite0 on photos), demo (digits)",
    )
    p.add_argument(
        "--arch",
        default=None,
        help="resnet50 (default), resnet101, resnet152, resnet50v2, efficientnet_lite0, or a keras.applications name",
    )
    p.add_argument("--weights", default=None, help="imagenet (default), none, or a weights file")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default 224)")
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="head epochs on precomputed activations (default 3; together at least head_min_steps=300 steps)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: lr_find's suggestion)")
    p.add_argument(
        "--head-bag",
        type=int,
        default=None,
        metavar="N",
        help="heads trained on the activations, their probabilities averaged (default 5 when the head is the last stage, else 1)",
    )
    p.add_argument(
        "--unfreeze-epochs",
        type=int,
        default=None,
        help="SGDR cycles with all layers and differential rates (default 0)",
    )
    p.add_argument("--bs", type=int, default=None, help="batch size (default 64)")
    p.add_argument("--sample", action="store_true", default=None, help="train on sample/ for a quick look")
    p.add_argument(
        "--devices",
        default=None,
        type=_devices_arg,
        help="auto (every GPU/TPU; default) or N (the first N): data-parallel on JAX and TensorFlow; --bs stays the global batch",
    )
    p.add_argument(
        "--mixed-precision",
        default=None,
        metavar="POLICY",
        help="auto (bf16 on A100/H100, fp16 on T4/V100/P100, float32 on CPUs; default), bf16, fp16 or float32",
    )
    p.add_argument(
        "--config", default=None, help="JSON or TOML file of TrainConfig fields, over the recipe; flags override it"
    )
    p.add_argument(
        "--quick", action="store_true", help="the recipe's (or config file's) [quick] slice: a smoke test in seconds"
    )
    p.add_argument("--seed", type=int, default=None, help="the random seed (default: the recipe's, else 42)")
    p.add_argument(
        "--baseline",
        action="store_true",
        default=None,
        help="also fit scikit-learn's LogisticRegression on the precomputed features and show it beside the run",
    )
    p.add_argument(
        "--metric",
        default=None,
        help="shown beside accuracy and log loss: log_loss, accuracy, roc_auc, f1_micro, quadratic_kappa "
        "(default: the competition's)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kit", description="fast.ai lesson 1 on Keras 3, for Kaggle image classification."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch the competition's files and lay them out as class folders")
    _common(p)
    p.add_argument(
        "--valid",
        type=int,
        default=None,
        help="validation images split from train (default: the competition's, 2,000 for Dogs vs. Cats)",
    )
    p.add_argument("--seed", type=int, default=42, help="seed of the stratified split")
    p.add_argument("--force", action="store_true", help="rebuild an existing layout with another seed or split size")

    p = sub.add_parser(
        "train",
        help="precompute, lr_find, fit (and optional unfrozen stages); saves the run",
        description="The configuration in layers: TrainConfig's defaults, then --recipe, then --config, then the "
        "flags. --quick lays each file's [quick] table over it.",
    )
    _train_options(p)
    p.add_argument(
        "--all",
        action="store_true",
        default=None,
        dest="all_data",
        help="one model on train + valid together (no validation figures): the final fit once a recipe is chosen",
    )
    _resume_option(
        p,
        "continue an interrupted run from its last epoch's checkpoint, with its own config (default: the newest unfinished run)",
    )

    p = sub.add_parser(
        "cv",
        help="k-fold cross-validation of a recipe over every labelled image: OOF figures, a fold ensemble",
        description="Folds (stratified, seeded by split_seed) over train and valid together; each fold is a kit train "
        "run of the same configuration (recipe, config file, flags as kit train takes them). Prints the out-of-fold "
        "accuracy and log loss with and without TTA, their spread over the folds and the clip that minimises the OOF "
        "log loss; `kit submit` then submits the fold ensemble, clipped so.",
    )
    _train_options(p)
    p.add_argument("--folds", type=int, default=None, dest="cv_folds", help="number of folds (default 5)")
    p.add_argument(
        "--mean",
        default=None,
        dest="cv_mean",
        metavar="arithmetic|geometric",
        help="how the fold models' test probabilities are averaged (default arithmetic)",
    )
    _resume_option(p, "continue an interrupted CV run at the fold it was in (default: the newest unfinished CV run)")

    p = sub.add_parser("analyze", help="plots and report.html of the latest run")
    _common(p)
    _folder(p, labels=False)
    p.add_argument(
        "--run", default=None, help="a run folder, or a run's name under runs/ (default: the latest finished run)"
    )

    p = sub.add_parser(
        "predict",
        help="classify image files with a finished run's model",
        description="Prints one line per image, `path<TAB>class<TAB>probability`, or writes a CSV "
        "(path,class,probability,<one column per class>) with -o. Files that cannot be read as images are "
        "named on stderr and skipped; the exit status is 0 if at least one image was predicted.",
    )
    _common(p)
    _folder(p, labels=False)
    p.add_argument(
        "--run", default=None, help="a run folder, or a run's name under runs/ (default: the latest finished run)"
    )
    p.add_argument("-o", "--out", default=None, help="write a CSV here (atomically) instead of printing")
    p.add_argument(
        "inputs", nargs="+", metavar="FILE_OR_FOLDER", help="image files, or folders (their images, recursively)"
    )

    p = sub.add_parser(
        "submit",
        help="write, validate and upload a submission CSV",
        description="Writes submissions/<slug>-<UTC time>-<arch>.csv atomically from the latest run's test "
        "predictions, validates it, then uploads it. For log-loss competitions probabilities are clipped to "
        "[eps, 1-eps] (default eps=0.005): Kaggle charges -log(p) for the true class, so one confident "
        "mistake at p=0 would cost infinity; clipped, it costs at most log(200)=5.3.",
    )
    _common(p)
    _folder(p, labels=False)
    p.add_argument(
        "--run", default=None, help="a run folder, or a run's name under runs/ (default: the latest finished run)"
    )
    p.add_argument(
        "--runs",
        nargs="+",
        default=None,
        metavar="RUN",
        help="submit the mean test probabilities of these finished runs or CV runs (same classes and test images)",
    )
    p.add_argument("-m", "--message", default=None, help="submission message shown on Kaggle")
    p.add_argument("--dry-run", action="store_true", help="write and validate, do not upload")
    p.add_argument(
        "--eps", type=float, default=None, help="clip probabilities to [eps, 1-eps] for log loss (default 0.005)"
    )
    p.add_argument("--out-dir", default="submissions", help="folder of the submission CSVs (default: submissions/)")

    p = sub.add_parser("demo", help="the offline end-to-end demo on real handwritten digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="a small slice, for smoke tests")

    p = sub.add_parser(
        "real",
        help="the lesson's recipe on a folder of real photos (efficientnet_lite0, offline): kit train --recipe real",
    )
    p.add_argument("--folder", default=None, help="the photos, train/<class>/ and valid/<class>/ (required)")
    p.add_argument(
        "--work-dir",
        default=None,
        help="caches and the run (default: the folder when writable, else the kit's user cache)",
    )
    p.add_argument(
        "--quick", action="store_true", help="the recipe's [quick] slice (20 photos per class at 64 px): a smoke test"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="the random seed (default: the recipe's, 42); README lists four"
    )
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the recipe's, 288)")

    sub.add_parser("list", help="known competitions")
    return parser


def _download(a: argparse.Namespace) -> None:
    from kit.jobs.pipeline import download

    r = download(a.competition, a.data_dir, valid=a.valid, seed=a.seed, force=a.force)
    counts = ", ".join(f"{k} {v}" for k, v in r.counts.items())
    print(f"download: {r.root} ({r.source}): {counts}")


def _config(a: argparse.Namespace, **extra) -> TrainConfig:
    """The TrainConfig of `kit train` / `kit cv`: defaults, recipe, config file, then the flags given."""
    from kit.jobs.config import load_config

    return load_config(
        a.config,
        recipe=a.recipe,
        quick=a.quick,
        competition=a.competition,
        arch=a.arch,
        weights=a.weights,
        size=a.size,
        epochs=a.epochs,
        lr=a.lr,
        head_bag=a.head_bag,
        unfreeze_epochs=a.unfreeze_epochs,
        bs=a.bs,
        sample=a.sample,
        seed=a.seed,
        devices=a.devices,
        folder=_source(a),
        work_dir=a.work_dir,
        labels=a.labels,
        images=a.images,
        metric=a.metric,
        baseline=a.baseline,
        data_dir=a.data_dir,
        mixed_precision=a.mixed_precision,
        **extra,
    )


def _train(a: argparse.Namespace) -> None:
    cfg = _config(a, all_data=a.all_data)
    run = _run_training(cfg, a)
    print(f"train: {run.details}")
    shown = (
        "no validation (--all)"
        if run.val_loss is None
        else f"val_loss {run.val_loss:.4f}, accuracy {run.val_accuracy:.4f}"
    )
    print(f"train: lr {run.lr:.3g}, {shown} in {run.seconds:.0f} s -> {run.dir}")


def _run_training(cfg: TrainConfig, a: argparse.Namespace) -> Run:
    """`kit.jobs.train.train` as `kit train` and `kit real` run it: stale temporaries removed first, and
    an interrupted run's exact resume command in its message."""
    from kit.jobs.pipeline import data_dir_or_default
    from kit.jobs.train import TrainingInterrupted, train, work_root

    resume = getattr(a, "resume", None)
    data_dir = data_dir_or_default(cfg.data_dir)
    roots = [work_root(cfg, data_dir)]
    if isinstance(resume, str) and Path(resume).is_dir():  # a run named by its path: <work>/runs/<run>
        roots.append(Path(resume).resolve().parent.parent)
    _remove_stale_temporaries(roots)
    try:
        return train(cfg, data_dir, resume=resume)
    except TrainingInterrupted as e:
        if e.epoch is not None:
            e.args = (f"{e}. Resume with: {_resume_command(a, cfg, e.run.name)}",)
        raise


def _cv(a: argparse.Namespace) -> None:
    from kit.jobs.cv import run_cv
    from kit.jobs.pipeline import data_dir_or_default
    from kit.jobs.train import TrainingInterrupted, work_root
    from kit.run import RunFolder

    cfg = _config(a, cv_folds=a.cv_folds, cv_mean=a.cv_mean)
    data_dir = data_dir_or_default(cfg.data_dir)
    root = work_root(cfg, data_dir)
    # The folds' runs are under each CV run: what a killed fold left there goes too.
    _remove_stale_temporaries([root, *(p for r in RunFolder.unfinished_cv(root) for p in r.path.glob("fold-*"))])
    try:
        r = run_cv(cfg, data_dir, resume=a.resume, progress=lambda line: print(line, flush=True))
    except TrainingInterrupted as e:  # inside a fold: the CV resumes, not the fold's run alone
        cv_run = e.run.path.parents[2]  # <cv run>/fold-<i>/runs/<run>
        e.args = (f"{e}. Resume the CV with: {_resume_command(a, cfg, cv_run.name, 'cv')}",)
        raise
    print(f"cv: {r.summary}")  # each fold's figures were its progress line


def _remove_stale_temporaries(roots: list[Path]) -> None:
    """Removes what killed runs left under each work folder (temporary caches and run files), in one line."""
    from kit.io import human_bytes, remove_stale_temporaries
    from kit.run import RunFolder

    folders: list[Path] = []
    for root in dict.fromkeys(roots):
        runs = RunFolder.runs_dir(root)
        # The image caches of the data and of its sample/ (kit.data's `tmp/`), saved models, the runs and their subfolders.
        folders += [root / "tmp", root / "sample" / "tmp", root / "models", runs]
        folders += [p for p in runs.glob("*") if p.is_dir()] + [p for p in runs.glob("*/*") if p.is_dir()]
    n, size = remove_stale_temporaries(folders)
    if n:
        where = ", ".join(str(r) for r in dict.fromkeys(roots))
        print(
            f"kit train: removed {n} temporary file{'s' if n > 1 else ''} ({human_bytes(size)}) that killed runs left in {where}",
            file=sys.stderr,
        )


def _resume_command(a: argparse.Namespace, cfg: TrainConfig, run_name: str, command: str = "train") -> str:
    """The exact `kit train --resume` line for the run this command (`kit train` or `kit real`) started
    (`command="cv"`: the `kit cv --resume` line of a CV run)."""
    import shlex

    words = ["kit", command]
    words += (
        ["--folder", a.folder] + (["--work-dir", a.work_dir] if a.work_dir else [])
        if a.folder
        else ["-c", cfg.competition]
    )
    if getattr(a, "data_dir", None) is not None:
        words += ["--data-dir", a.data_dir]
    return shlex.join(words + ["--resume", run_name])


def _analyze(a: argparse.Namespace) -> None:
    from kit.jobs.pipeline import analyze

    print(f"analyze: {analyze(a.competition, a.data_dir, run=a.run, folder=_source(a), work_dir=a.work_dir)}")


def _source(a: argparse.Namespace) -> str | None:
    """The --folder, refusing it together with an explicit competition."""
    if a.folder is not None and a.competition not in (None, DEFAULT_SLUG):
        raise ValueError(f"Give either a competition (-c {a.competition}) or --folder {a.folder}, not both.")
    return a.folder


def _predict(a: argparse.Namespace) -> None:
    import warnings

    from kit.jobs.pipeline import runs_root
    from kit.jobs.predict import predict_images
    from kit.run import RunFolder

    root = runs_root(a.competition, a.data_dir, folder=_source(a), work_dir=a.work_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = predict_images(a.inputs, RunFolder.resolve(root, a.run), out=a.out)
    for w in caught:  # the skipped files as one plain message; anything else as Python shows it
        if issubclass(w.category, UserWarning) and "could not be read" in str(w.message):
            print(f"kit predict: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    if a.out is None:
        for path, cls, p in r.rows():
            print(f"{path}\t{cls}\t{p:.4f}")
    else:
        print(f"predict: {len(r.files)} images -> {a.out}" + (f" ({len(r.skipped)} skipped)" if r.skipped else ""))
    if not r.files:
        raise ValueError(f"None of the {len(r.skipped)} files could be read as an image.")


def _real(a: argparse.Namespace) -> None:
    from kit.jobs.real import real_config

    if a.folder is None:
        raise ValueError(
            "kit real needs --folder PATH: a folder of photos with train/<class>/ and valid/<class>/ "
            "(`make real` passes one; `make real DATA=PATH` another)."
        )
    overrides = {k: v for k, v in (("seed", a.seed), ("size", a.size)) if v is not None}
    run = _run_training(real_config(a.folder, work_dir=a.work_dir, quick=a.quick, **overrides), a)
    print(f"real: {run.details}")
    print(f"real: {run.summary}")  # the last line, as `make real` promises


def _submit(a: argparse.Namespace) -> None:
    from kit.jobs.pipeline import submit

    r = submit(
        a.competition,
        a.data_dir,
        message=a.message,
        dry_run=a.dry_run,
        eps=a.eps,
        out_dir=a.out_dir,
        run=a.run,
        folder=_source(a),
        work_dir=a.work_dir,
        runs=a.runs,
    )
    line = f"submit: {r.path} ({r.n_rows} rows, valid)"
    if r.also is not None:
        line += f", also {r.also}"
    if r.local_score is not None:
        line += f", local {r.metric} {r.local_score:.4f}"
    if r.status is not None:
        s = r.status
        line += f", Kaggle: {getattr(s, 'status', s)}"
        if getattr(s, "public_score", None) is not None:
            line += f", public score {s.public_score}"
    elif a.dry_run:
        line += ", not uploaded (--dry-run)"
    print(line)


def _demo(a: argparse.Namespace) -> None:
    from kit.jobs.demo import run_demo

    print(run_demo(a.data_dir, quick=a.quick).summary)


def _list(a: argparse.Namespace) -> None:
    from kit.kaggle.competition import list_competitions

    for c in list_competitions():
        print(f"{c.slug:40s} {c.title} ({c.metric})")


COMMANDS = {
    "download": _download,
    "train": _train,
    "cv": _cv,
    "analyze": _analyze,
    "submit": _submit,
    "demo": _demo,
    "list": _list,
    "predict": _predict,
    "real": _real,
}


# TensorFlow's C++ start-up lines: they come before absl's logging is set up, so
# TF_CPP_MIN_LOG_LEVEL alone does not silence them.
_TF_NOISE = (
    "All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "cpu_feature_guard",
    "rebuild TensorFlow with the appropriate compiler flags",
    "Unable to register cu",
    "TF-TRT Warning",
    "computation placer already registered",
)


def quiet_backend_logs() -> None:
    """Imports Keras (and so its backend) with TensorFlow's start-up log lines filtered out.

    Only when the user has not set TF_CPP_MIN_LOG_LEVEL themselves; other stderr lines pass through.
    """
    import os
    import tempfile

    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "keras" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as buf:
        os.dup2(buf.fileno(), 2)
        try:
            import keras  # noqa: F401 - the import is the point
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            for line in buf.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(n in line for n in _TF_NOISE):
                    sys.stderr.write(line)


def _stopped(command: str, stop: StopSignals, detail: str) -> int:
    """Prints the one line of a command that a signal stopped; returns its exit status (130, 143)."""
    how = stop.describe()
    line = f"{how}: {detail}" if detail and how != "interrupted" else detail or how
    print(f"kit {command}: {line}", file=sys.stderr)
    return stop.exit_code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGINT and SIGTERM stop every command the same way, at any moment (kit.signals), until it returns.
    with stop_on_signals() as stop:
        try:
            if args.command not in ("list", "download", "submit"):
                quiet_backend_logs()
            COMMANDS[args.command](args)
        except KeyboardInterrupt as e:
            # `kit train` says where its checkpoint is and how to resume (kit.jobs.train.TrainingInterrupted).
            return _stopped(args.command, stop, str(e))
        except Exception as e:  # noqa: BLE001 -- the CLI's job: one line a person can act on
            if stop.signum is not None:  # the interrupt, turned into another error by C++ code it crossed (pybind11)
                return _stopped(
                    args.command, stop, f"interrupted inside a library, which raised {type(e).__name__} instead"
                )
            msg = " ".join(str(e).split()) or type(e).__name__
            print(f"kit {args.command}: {type(e).__name__}: {msg}", file=sys.stderr)
            return 1
        if stop.signum is not None:  # a library dropped the interrupt and the command ran to its end
            return _stopped(
                args.command, stop, "interrupted too late: a library ignored the signal, and the command ran to its end"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
