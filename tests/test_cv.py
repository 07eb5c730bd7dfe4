"""`kit cv` (k folds over every labelled image, out-of-fold predictions, a fold ensemble), `kit train --all`
and `kit submit --runs`: tiny CVs (2 folds, 32 px, a few dozen images) and the maths as pure functions."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit import metrics
from kit.analysis.interpretation import Interpretation
from kit.cli import main
from kit.jobs import cv as cv_job
from kit.jobs import train as train_job
from kit.jobs.predict import load_learner
from kit.models.archs import ARCHS
from kit.run import RunFolder
from kit.training.callbacks.checkpoint import EpochCheckpoint

# A folder named by the competition's slug is that competition: its submission format, without a sample.
SLUG = "dogs-vs-cats-redux-kernels-edition"
TRAIN = ["--arch", "tiny", "--weights", "none", "--size", "32", "--bs", "8", "--lr", "0.01", "--epochs", "2"]


@pytest.fixture(autouse=True)
def _tiny_arch(monkeypatch):
    monkeypatch.setitem(ARCHS, "tiny", tiny)


@pytest.fixture
def folder(tmp_path) -> Path:
    """24 labelled images (train 8 + valid 4 a class) and 5 test images."""
    return make_folders(tmp_path / SLUG, n_train=8, n_valid=4, n_test=5)


def _config(tmp_path: Path, **values) -> str:
    path = tmp_path / "cfg.json"
    # One head a fold: the folds are the point here (a bag's heads are tests/test_head_bag.py's).
    path.write_text(
        json.dumps({"tta": True, "n_aug": 1, "num_workers": 1, "head_min_steps": 0, "head_bag": 1, **values})
    )
    return str(path)


def _cv(folder: Path, tmp_path: Path, *extra: str, **values) -> int:
    return main(
        ["cv", "--folder", str(folder), *TRAIN, "--folds", "2", "--config", _config(tmp_path, **values), *extra]
    )


# ----------------------------------------------------------------------------- the maths
def test_folds_partition_the_images_stratified_and_seeded():
    y = np.repeat(np.arange(3), [10, 7, 3])
    folds = cv_job.assign_folds(y, 5, seed=42)
    assert folds.shape == y.shape and set(folds.tolist()) == set(range(5))
    for c, n in ((0, 10), (1, 7)):  # every fold holds its share of each class
        counts = np.bincount(folds[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1 and counts.sum() == n
    np.testing.assert_array_equal(folds, cv_job.assign_folds(y, 5, seed=42))
    assert not np.array_equal(folds, cv_job.assign_folds(y, 5, seed=0))
    with pytest.raises(ValueError, match="k must be"):
        cv_job.assign_folds(y, 1, seed=0)
    with pytest.raises(ValueError, match="at least k=30 labelled images; received 20"):
        cv_job.assign_folds(y, 30, seed=0)


def test_fold_means():
    a = np.array([[0.9, 0.1], [0.2, 0.8]])
    b = np.array([[0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(cv_job.mean_probs([a, b]), (a + b) / 2)
    g = cv_job.mean_probs([a, b], "geometric")
    np.testing.assert_allclose(g.sum(axis=1), 1.0)
    expected = np.sqrt(a[0] * b[0]) / np.sqrt(a[0] * b[0]).sum()
    np.testing.assert_allclose(g[0], expected)
    assert g[1, 0] < 1e-6  # one model's 0 vetoes the class; the arithmetic mean keeps 0.1
    with pytest.raises(ValueError, match="harmonic"):
        cv_job.mean_probs([a], "harmonic")


def test_the_clip_is_the_one_that_minimises_the_log_loss():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.where(y == 1, 0.9999, 0.0001)
    p1[:4] = 1.0 - p1[:4]  # four confident mistakes, as a real model makes
    probs = np.stack([1 - p1, p1], axis=1)
    clip = cv_job.best_clip(y, probs, default_eps=0.005)
    losses = {e: metrics.log_loss(y, metrics.clip_rows(probs, e)) for e in cv_job.CLIP_GRID}
    assert clip["eps"] == min(losses, key=losses.get) and clip["log_loss"] == pytest.approx(min(losses.values()))
    default = metrics.log_loss(y, np.clip(probs, 0.005, 0.995))
    assert clip["log_loss"] <= clip["default_log_loss"] == pytest.approx(default)
    assert 0.001 < clip["eps"] < 0.1 and clip["log_loss"] < losses[cv_job.CLIP_GRID[0]]  # 4 of 200 wrong: a clip pays
    rows = metrics.clip_rows(np.array([[1.0, 0.0, 0.0]]), 0.01)
    np.testing.assert_allclose(rows.sum(), 1.0)
    assert rows.min() > 0.009


# ----------------------------------------------------------------------------- kit cv end to end
@pytest.mark.backends
def test_kit_cv_oof_ensemble_submit_predict_analyze(folder, tmp_path, capsys):
    assert _cv(folder, tmp_path) == 0
    out = capsys.readouterr().out
    assert "cv: fold 1/2: 12 train / 12 held out" in out and "cv: fold 2/2" in out and "OOF over 2 folds" in out
    cv_run = RunFolder.latest(folder)
    assert cv_run.is_cv and cv_run.finished and cv_run.name.endswith("-tiny-cv2")
    record = cv_run.read_cv()
    files = sorted(record["folds"])
    assert len(files) == 24 and {record["folds"][f] for f in files} == {0, 1}  # every image in one fold

    preds = cv_run.read_predictions()
    assert sorted(Path(f).relative_to(folder).as_posix() for f in preds.val_files) == files
    np.testing.assert_array_equal(
        preds.val_fold, [record["folds"][Path(f).relative_to(folder).as_posix()] for f in preds.val_files]
    )
    folds = cv_run.fold_runs()
    assert len(folds) == 2
    for i, fold in enumerate(folds):
        fp = fold.read_predictions()
        held = sorted(Path(f).relative_to(folder).as_posix() for f in fp.val_files)
        assert held == sorted(f for f in files if record["folds"][f] == i)
        assert fold.read_config()["data"]["train"] == 24 - len(held)  # trained on the other fold only
        # Each OOF row is the prediction of the model that held it out: the fold's own model, rebuilt.
        learn = load_learner(fold)
        log_probs, ok = learn.predict_files(fp.val_files)
        rows = [preds.val_files.index(f) for f in fp.val_files]
        np.testing.assert_allclose(np.exp(log_probs), preds.val_plain[rows], atol=1e-4)
        np.testing.assert_allclose(fp.val_probs, preds.val_probs[rows], atol=1e-6)
        assert ok.all()
    # The test predictions are the fold models' mean, with TTA and without.
    np.testing.assert_allclose(preds.test_probs, np.mean([f.read_predictions().test_probs for f in folds], 0))
    np.testing.assert_allclose(preds.test_plain, np.mean([f.read_predictions().test_plain for f in folds], 0))

    history = cv_run.read_history()["cv"]
    assert history["oof"]["tta"]["log_loss"] == pytest.approx(metrics.log_loss(preds.val_y, preds.val_probs))
    assert history["oof"]["plain"]["accuracy"] == pytest.approx(metrics.accuracy(preds.val_y, preds.val_plain))
    per_fold = [f["tta"]["log_loss"] for f in history["folds"]]
    assert history["spread"]["tta"]["log_loss"] == pytest.approx(np.std(per_fold))
    eps = history["clip"]["eps"]

    # kit submit: the fold ensemble, clipped at the chosen eps.
    out_dir = tmp_path / "subs"
    assert main(["submit", "--folder", str(folder), "--dry-run", "--out-dir", str(out_dir)]) == 0
    (sub,) = out_dir.glob("*.csv")
    with open(sub) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "label"] and len(rows) == 6
    got = {r[0]: float(r[1]) for r in rows[1:]}
    dogs = preds.classes.index("dogs")
    for name, p in zip(preds.test_files, preds.test_probs[:, dogs]):
        assert got[Path(name).stem] == pytest.approx(np.clip(p, eps, 1 - eps), abs=1e-5)

    # kit predict --run CVRUN: the fold models' mean on new images.
    capsys.readouterr()
    test = sorted((folder / "test").glob("*.jpg"))
    assert main(["predict", "--folder", str(folder), "--run", cv_run.name, *map(str, test)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    each = [np.exp(load_learner(f).predict_files(test)[0]) for f in folds]
    mean = np.mean(each, axis=0)
    assert [g[1] for g in lines] == [preds.classes[k] for k in mean.argmax(1)]
    np.testing.assert_allclose([float(g[2]) for g in lines], mean.max(1), atol=1e-3)

    # kit analyze: the report of the OOF predictions.
    assert main(["analyze", "--folder", str(folder), "--run", cv_run.name]) == 0
    assert "out-of-fold" in (cv_run.path / "report.html").read_text()
    interp = Interpretation.from_run(cv_run)
    assert len(interp) == 24 and interp.log_loss() == pytest.approx(history["oof"]["tta"]["log_loss"], rel=1e-4)
    assert Interpretation.from_run(cv_run, tta=False).accuracy() == pytest.approx(history["oof"]["plain"]["accuracy"])


def test_kit_submit_runs_averages_the_runs(folder, tmp_path, capsys):
    cfg = _config(tmp_path, tta=False)
    for seed in ("1", "2"):
        assert main(["train", "--folder", str(folder), *TRAIN, "--config", cfg, "--seed", seed]) == 0
    runs = sorted(p for p in RunFolder.runs_dir(folder).iterdir() if p.is_dir())
    out_dir = tmp_path / "subs"
    assert (
        main(["submit", "--folder", str(folder), "--dry-run", "--out-dir", str(out_dir), "--runs", *map(str, runs)])
        == 0
    )
    (sub,) = out_dir.glob("*ensemble2*.csv")
    probs = [RunFolder(r).read_predictions() for r in runs]
    dogs = probs[0].classes.index("dogs")
    mean = np.mean([p.test_probs[:, dogs] for p in probs], axis=0)
    with open(sub) as f:
        got = {r[0]: float(r[1]) for r in list(csv.reader(f))[1:]}
    for name, p in zip(probs[0].test_files, mean):
        assert got[Path(name).stem] == pytest.approx(np.clip(p, 0.005, 0.995), abs=1e-5)

    assert main(["submit", "--folder", str(folder), "--dry-run", "--runs", str(runs[0])]) == 1
    assert "at least 2 runs; received 1" in capsys.readouterr().err
    other = make_folders(tmp_path / "other" / SLUG, classes=("cats", "dogs", "owls"), n_train=4, n_valid=2, n_test=5)
    assert main(["train", "--folder", str(other), *TRAIN, "--config", cfg]) == 0
    owl = RunFolder.latest(other).path
    assert main(["submit", "--folder", str(folder), "--dry-run", "--runs", str(runs[0]), str(owl)]) == 1
    assert "an ensemble averages the same classes" in capsys.readouterr().err


def test_kit_cv_resumes_at_the_fold_it_was_in(folder, tmp_path, monkeypatch, capsys):
    """Ctrl-C in fold 2's first epoch; `kit cv --resume` keeps fold 1's run, resumes fold 2's from its
    checkpoint, and ends where an uninterrupted CV ends."""
    whole = tmp_path / "whole" / SLUG
    make_folders(whole, n_train=8, n_valid=4, n_test=5)  # the same images: make_folders is seeded
    assert _cv(whole, tmp_path) == 0
    expected = RunFolder.latest(whole).read_predictions()

    class StopInFold2(EpochCheckpoint):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if "fold-1" in str(self.directory):
                raise KeyboardInterrupt

    monkeypatch.setattr(train_job, "EpochCheckpoint", StopInFold2)
    assert _cv(folder, tmp_path) == 130
    monkeypatch.setattr(train_job, "EpochCheckpoint", EpochCheckpoint)
    (cv_run,) = RunFolder.unfinished_cv(folder)
    assert f"Resume the CV with: kit cv --folder {folder} --resume {cv_run.name}" in capsys.readouterr().err
    fold0 = RunFolder.latest(cv_run.fold_root(0))
    (fold1,) = RunFolder.unfinished(cv_run.fold_root(1))
    stamp = fold0.done_file.read_text()
    capsys.readouterr()

    assert main(["cv", "--folder", str(folder), "--resume"]) == 0
    assert "cv: fold 2/2" in capsys.readouterr().out
    assert cv_run.finished and RunFolder.latest(folder).path == cv_run.path
    assert fold0.done_file.read_text() == stamp  # kept, not trained again
    assert len([p for p in RunFolder.runs_dir(cv_run.fold_root(1)).iterdir() if p.is_dir()]) == 1
    assert fold1.finished  # its own run, resumed
    got = cv_run.read_predictions()
    assert [Path(f).name for f in got.val_files] == [Path(f).name for f in expected.val_files]
    np.testing.assert_allclose(got.val_probs, expected.val_probs, atol=1e-4)
    np.testing.assert_allclose(got.test_probs, expected.test_probs, atol=1e-4)
    assert main(["cv", "--folder", str(folder), "--resume"]) == 1
    assert "No unfinished CV run" in capsys.readouterr().err


def test_kit_train_all_fits_every_labelled_image(folder, tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["train", "--folder", str(folder), *TRAIN, "--config", cfg, "--all"]) == 0
    out = capsys.readouterr().out
    assert "trained on all 24 labelled images (--all): no validation figures" in out
    run = RunFolder.latest(folder)
    preds = run.read_predictions()
    assert len(preds.val_y) == 0 and preds.test_probs.shape == (5, 2)
    assert run.read_config()["data"]["train"] == 24 and run.read_history()["final"]["validated"] is False
    assert all(r["val_loss"] is None for r in run.read_history()["history"])
    assert main(["analyze", "--folder", str(folder)]) == 1
    assert "no validation predictions to analyze" in capsys.readouterr().err
    assert main(["submit", "--folder", str(folder), "--dry-run", "--out-dir", str(tmp_path / "s")]) == 0
    assert main(["train", "--folder", str(folder), *TRAIN, "--config", cfg, "--all", "--baseline"]) == 1
    assert "all_data" in capsys.readouterr().err
    assert main(["cv", "--folder", str(folder), *TRAIN, "--config", _config(tmp_path, all_data=True)]) == 1
    assert "no fold to hold out" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--folds", "1"], "cv_folds must be"),
        (["--folds", "40"], "at least k=40 labelled images; received 24"),
        (["--resume"], "No unfinished CV run"),
    ],
)
def test_kit_cv_refuses_bad_arguments(folder, tmp_path, capsys, flags, expected):
    args = ["cv", "--folder", str(folder), *TRAIN, "--config", _config(tmp_path)]
    assert main(args + flags) == 1
    assert expected in capsys.readouterr().err
    assert not RunFolder.runs_dir(folder).exists() or not any(RunFolder.runs_dir(folder).iterdir())
