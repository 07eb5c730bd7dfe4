"""Faults a long run meets (issue 19, the run's side): a resume that trains the right data, checkpoints
that are empty or damaged, arguments refused before any work, damaged run folders named.

Signals, orphan workers and leftover temporary files are tests/test_signals.py's.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.cli import main
from kit.jobs import train as train_job
from kit.models.archs import ARCHS
from kit.run import RunFolder
from kit.training.callbacks.checkpoint import EpochCheckpoint

TRAIN = ["--arch", "tiny", "--weights", "none", "--size", "32", "--bs", "8", "--lr", "0.01", "--epochs", "3"]


class _StopAfterFirst(EpochCheckpoint):
    """Ctrl-C once the first epoch's checkpoint is written."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.last_epoch == 0:
            raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def _tiny_arch(monkeypatch):
    monkeypatch.setitem(ARCHS, "tiny", tiny)


def _config(tmp_path: Path, **values) -> str:
    path = tmp_path / "cfg.json"
    # One head: these runs are about where a resume trains (a bag's heads resume in tests/test_head_bag.py).
    path.write_text(json.dumps({"tta": False, "num_workers": 1, "head_bag": 1, **values}))
    return str(path)


def _interrupted(monkeypatch, tmp_path, folder: str, *extra: str) -> RunFolder:
    """`kit train --folder FOLDER` stopped by Ctrl-C after its first epoch."""
    monkeypatch.setattr(train_job, "EpochCheckpoint", _StopAfterFirst)
    assert main(["train", "--folder", folder, *TRAIN, "--config", _config(tmp_path), *extra]) == 130
    monkeypatch.setattr(train_job, "EpochCheckpoint", EpochCheckpoint)
    (run,) = RunFolder.unfinished(Path(folder).resolve())
    return run


# ----------------------------------------------------------------------------- a resume trains what it trained before
def test_resume_from_another_folder_trains_the_runs_own_data(tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    make_folders(a / "c13", n_train=8, n_valid=4, seed=0)
    make_folders(b / "c13", classes=("cats", "dogs", "owls"), n_train=6, n_valid=3, seed=1)  # another ./c13
    monkeypatch.chdir(a)
    run = _interrupted(monkeypatch, tmp_path, "c13")  # relative, as a user types it
    saved = run.read_config()
    assert (
        saved["folder"] == str((a / "c13").resolve()) and saved["data"]["train"] == 16 and saved["data"]["valid"] == 8
    )

    monkeypatch.chdir(b)  # where ./c13 is another data set
    capsys.readouterr()
    # The run named by its path, no --folder: its own (absolute) folder, not ./c13.
    assert main(["train", "--resume", str(run.path)]) == 0, capsys.readouterr().err
    assert run.finished and len(run.read_history()["history"]) == 3
    assert run.read_predictions().classes == ["cats", "dogs"]


def test_resume_on_other_files_is_refused_with_a_sentence(tmp_path, monkeypatch, capsys):
    a = make_folders(tmp_path / "a" / "c13", n_train=8, n_valid=4, seed=0)
    other = make_folders(tmp_path / "b" / "c13", n_train=7, n_valid=4, seed=1)
    run = _interrupted(monkeypatch, tmp_path, str(a))
    capsys.readouterr()
    assert main(["train", "--folder", str(other), "--resume", str(run.path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert (
        f"trained on {a.resolve()} (16 train / 8 valid images)" in err
        and f"{other.resolve()} holds other files (14 train" in err
    )
    assert not run.finished and not (other / "runs").exists()

    # An old run's relative folder that now names other images: the saved key refuses it too.
    cfg = run.read_config()
    run.write_config({**cfg, "folder": "c13"})
    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", str(run.path)]) == 1
    assert "holds other files" in capsys.readouterr().err

    # The same run, its folder given as an absolute path from anywhere: resumed and finished.
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--folder", str(a.resolve()), "--resume"]) == 0, capsys.readouterr().err
    assert run.finished


# ----------------------------------------------------------------------------- checkpoints: none trusted blindly
def test_an_empty_checkpoint_folder_falls_back_to_the_newest_readable_run(tmp_path, monkeypatch, capsys):
    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4)
    good = _interrupted(monkeypatch, tmp_path, str(folder))
    # A newer run whose first checkpoint write was interrupted: an empty checkpoint/.
    empty = RunFolder(good.path.parent / (good.name[:-4] + "zzzz"))
    empty.checkpoint_dir.mkdir(parents=True)
    empty.write_config(good.read_config())
    assert RunFolder.unfinished(folder)[0].path == empty.path
    capsys.readouterr()
    with pytest.warns(
        UserWarning,
        match=rf"Resuming {good.name}, the newest run whose checkpoint can be read; skipped: No checkpoint {empty.checkpoint_dir}",
    ):
        assert main(["train", "--folder", str(folder), "--resume"]) == 0
    assert good.finished and not empty.finished


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "garbage", "pickled"])
def test_a_damaged_checkpoint_is_named_and_never_unpickled(tmp_path, monkeypatch, capsys, damage):
    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4)
    run = _interrupted(monkeypatch, tmp_path, str(folder))
    ckpt = run.checkpoint_dir / "last.npz"
    data = ckpt.read_bytes()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 2])
    elif damage == "zeroed":
        ckpt.write_bytes(bytes(len(data)))
    elif damage == "garbage":
        ckpt.write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        np.savez(ckpt, state=np.array([{"epoch": 1}], dtype=object))  # an object array: loading it means unpickling
    capsys.readouterr()
    assert main(["train", "--folder", str(folder), "--resume", run.name]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"The checkpoint {ckpt} cannot be read" in err, err
    assert "unsafely" not in err and "allow_pickle" not in err
    # Plain --resume: the only run is unreadable, said in one sentence.
    assert main(["train", "--folder", str(folder), "--resume"]) == 1
    assert "has a readable checkpoint" in capsys.readouterr().err


# ----------------------------------------------------------------------------- every argument checked before any work
@pytest.mark.parametrize(
    "values, flags, expected",
    [
        ({"tta": "no"}, [], "Config tta must be true or false. Received tta='no'"),
        ({"lr_div": "10"}, [], "Config lr_div must be a number. Received lr_div='10'"),
        ({"bs": 100000000}, [], "Config bs=100000000 at size=32 cannot fit in memory"),
        ({"arch": "nope"}, [], "Unknown arch 'nope'"),
        ({"weights": "/nowhere/w.h5"}, [], "weights file not found: /nowhere/w.h5"),
        ({}, ["--mixed-precision", "half"], "Config mixed_precision must be one of"),
        ([1, 2, 3], [], "must hold an object of TrainConfig fields"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, values, flags, expected):
    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4)
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(values))
    args = [
        "train",
        "--folder",
        str(folder),
        "--weights",
        "none",
        "--size",
        "32",
        "--lr",
        "0.01",
        "--config",
        str(cfg),
        *flags,
    ]
    if not isinstance(values, dict) or "arch" not in values:
        args += ["--arch", "tiny"]
    if isinstance(values, dict) and "weights" in values:
        args.remove("--weights"), args.remove("none")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (folder / "runs").exists() and not (folder / "tmp").exists()  # no run folder, nothing decoded


# ----------------------------------------------------------------------------- a damaged run folder is named
@pytest.fixture
def finished(tmp_path, capsys):
    folder = make_folders(tmp_path / "f", n_train=8, n_valid=4, n_test=2)
    assert main(["train", "--folder", str(folder), *TRAIN[:-1], "1", "--config", _config(tmp_path)]) == 0
    capsys.readouterr()
    return folder, RunFolder.latest(folder)


@pytest.mark.parametrize("command", ["analyze", "predict"])
@pytest.mark.parametrize(
    "damage, expected",
    [
        ("empty config", "config.json is not valid JSON"),
        ("list config", "config.json holds a JSON list, not the object the run wrote"),
        ("no predictions", "predictions.npz is missing although the run finished"),
    ],
)
def test_a_damaged_run_folder_says_which_file(finished, capsys, command, damage, expected):
    folder, run = finished
    if damage == "empty config":
        run.config_file.write_text("")
    elif damage == "list config":
        run.config_file.write_text("[1, 2, 3]")
    else:
        run.predictions_file.unlink()
    args = (
        ["analyze", "--folder", str(folder)]
        if command == "analyze"
        else ["predict", "--run", str(run.path), str(folder / "test")]
    )
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "is damaged" in err, err
