"""Any class-folder tree as a data set: the work-folder choice, read-only folders, `kit train|predict|analyze --folder`."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit import env
from kit.cli import main
from kit.data import ImageClassifierData, tfms_from_model
from kit.models import archs
from kit.run import RunFolder
from kit.training.learner import ConvLearner

SZ = 32


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under root (and root itself): name → (kind, size, mtime): what 'nothing written' compares."""
    out = {".": ("dir", 0, os.stat(root).st_mtime_ns)}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        out[str(p.relative_to(root))] = (
            "dir" if p.is_dir() else "file",
            0 if p.is_dir() else st.st_size,
            st.st_mtime_ns,
        )
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The kit's user cache in a temporary folder (and not in a Kaggle notebook)."""
    monkeypatch.setenv(env.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def read_only(tmp_path):
    """A tiny class-folder tree, mode 0o555 from top to bottom while the test runs; its listing before."""
    root = make_folders(tmp_path / "photos", n_train=8, n_valid=4)
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir())]
    for d in dirs:
        d.chmod(0o555)
    before = listing(root)
    yield root, before
    for d in dirs:
        d.chmod(0o755)


def test_work_dir_choice(tmp_path, cache, monkeypatch):
    writable = make_folders(tmp_path / "a" / "photos", n_train=1, n_valid=1)
    assert env.is_writable(writable) and env.work_dir_for(writable) == writable
    assert env.work_dir_for(writable, tmp_path / "w") == tmp_path / "w"  # an explicit work folder wins

    # chmod a-w: read-only by intent, even for root (whom the OS lets write anyway).
    locked = make_folders(tmp_path / "b" / "photos", n_train=1, n_valid=1)
    locked.chmod(0o555)
    try:
        assert not env.is_writable(locked)
        work = env.work_dir_for(locked)
        assert (
            work.parent == cache / "work" and work.name.startswith("photos-") and len(work.name) == len("photos-") + 8
        )
        assert env.work_dir_for(locked) == work  # stable: the same folder finds its caches and runs again
    finally:
        locked.chmod(0o755)

    # A folder the writability check refuses (a read-only mount, another user's folder): same rule;
    # two folders of the same name get different work folders.
    monkeypatch.setattr(env, "is_writable", lambda p: False)
    w1, w2 = env.work_dir_for(writable), env.work_dir_for(tmp_path / "b" / "photos")
    assert w1.parent == w2.parent == cache / "work" and w1 != w2 and w1.name.startswith("photos-")
    assert env.work_dir_for(writable, tmp_path / "w") == tmp_path / "w"
    # In a Kaggle notebook (/kaggle/input is read-only), runs go where the notebook's output is kept.
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv(env.KAGGLE_WORKING_ENV, str(tmp_path / "working"))
    assert env.work_dir_for(writable).parent == tmp_path / "working" / "kit-work"
    monkeypatch.undo()
    assert not env.is_writable(tmp_path / "no-such-folder")


def test_from_paths_read_only_folder(read_only, cache, tmp_path):
    root, before = read_only
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False)
    work = env.work_dir_for(root)
    assert data.work_dir == work and data.tmp_dir == work / "tmp" and data.models_dir == work / "models"
    assert any(data.tmp_dir.glob("train_*.npy"))
    learn = ConvLearner.pretrained(tiny, data, precompute=True, weights=None)  # activations cached too
    learn.fit(0.01, 1, verbose=False)
    assert learn.save("m") == work / "models" / "m.weights.h5"
    explicit = ImageClassifierData.from_paths(
        root, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False, tmp_dir=tmp_path / "t", max_per_class=3
    )
    assert (
        explicit.tmp_dir == tmp_path / "t"
        and len(explicit.trn_ds) == 6
        and sorted(np.bincount(explicit.val_y)) == [3, 3]
    )
    assert listing(root) == before


def test_from_paths_writable_folder_keeps_the_lessons_layout(tmp_path, cache):
    root = make_folders(tmp_path / "photos", n_train=2, n_valid=2)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False)
    assert data.tmp_dir == root / "tmp" and data.models_dir == root / "models" and not cache.exists()


@pytest.mark.backends
def test_predict_files_order_and_bad_files(tmp_path):
    root = make_folders(tmp_path / "photos", n_train=4, n_valid=3)
    data = ImageClassifierData.from_paths(root, tfms=tfms_from_model(tiny, SZ), bs=4, progress=False)
    learn = ConvLearner.pretrained(tiny, data, weights=None)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    files = list(data.val_files)
    paths = files[:2] + [str(bad)] + files[2:] + [str(tmp_path / "missing.png")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_probs, ok = learn.predict_files(paths)
    msgs = [str(w.message) for w in caught if "could not be read" in str(w.message)]
    assert len(msgs) == 1 and "bad.jpg" in msgs[0] and "missing.png" in msgs[0] and "Skipped 2 of 8" in msgs[0]
    assert log_probs.shape == (8, 2) and ok.tolist() == [True, True, False] + [True] * 4 + [False]
    assert np.isnan(log_probs[~ok]).all()
    # The same decoding as training: the good files' predictions are those of the validation set.
    np.testing.assert_allclose(log_probs[ok], learn.predict(), atol=1e-5)


def test_train_predict_analyze_a_read_only_folder(read_only, cache, tmp_path, monkeypatch, capsys):
    """`kit train|predict|analyze --folder` end to end on a read-only tree without test/: nothing written into it."""
    root, before = read_only
    monkeypatch.setitem(archs.ARCHS, "tiny", tiny)
    config = tmp_path / "train.json"
    config.write_text('{"tta": false, "lr": 0.01, "epochs": 1, "bs": 8}')
    assert (
        main(
            [
                "train",
                "--folder",
                str(root),
                "--arch",
                "tiny",
                "--weights",
                "none",
                "--size",
                str(SZ),
                "--config",
                str(config),
            ]
        )
        == 0
    )
    assert "train: lr 0.01" in capsys.readouterr().out
    work = env.work_dir_for(root)
    run = RunFolder.latest(work)
    assert run.path.parent == work / "runs" and run.finished and run.weights_file.is_file()
    preds = run.read_predictions()
    assert preds.test_probs is None and preds.classes == ["cats", "dogs"]  # no test/: no test predictions
    assert run.read_config()["folder"] == str(root)

    # predict: one line per good image, in order; the corrupt one named on stderr and skipped.
    bad = tmp_path / "new" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"GIF89a truncated")
    assert main(["predict", "--folder", str(root), str(root / "valid"), str(bad)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 8 and "broken.jpg" not in out
    assert "broken.jpg" in err and "Skipped 1 of 9" in err
    got = [line.split("\t") for line in lines]
    assert [g[0] for g in got] == preds.val_files  # the folder's images, sorted, as training listed them
    expected = preds.val_probs.max(axis=1)
    np.testing.assert_allclose([float(g[2]) for g in got], expected, atol=1e-3)
    assert [g[1] for g in got] == [preds.classes[k] for k in preds.val_probs.argmax(axis=1)]

    csv = tmp_path / "out" / "p.csv"
    assert (
        main(["predict", "--folder", str(root), "--run", run.name, "-o", str(csv), str(bad), *preds.val_files[:3]]) == 0
    )
    rows = csv.read_text().splitlines()
    assert (
        rows[0] == "path,class,probability,cats,dogs"
        and len(rows) == 4
        and rows[1].startswith(preds.val_files[0] + ",")
    )
    assert "3 images" in capsys.readouterr().out

    assert main(["analyze", "--folder", str(root)]) == 0
    assert (run.path / "report.html").is_file()
    assert main(["predict", "--folder", str(root), str(bad)]) == 1  # nothing readable: an error, not silence
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["train", "-c", "digits", "--folder", str(root)]) == 1  # a competition or a folder, not both
    assert "either" in capsys.readouterr().err
    assert listing(root) == before
