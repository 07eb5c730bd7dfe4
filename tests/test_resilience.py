"""Nothing lost when training goes wrong (issue 11, training side): a full disk while saving weights,
a diverging loss, an interrupted `kit train` and its `--resume`, arguments checked where they enter."""

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.cli import main
from kit.data import ImageClassifierData, tfms_from_model
from kit.jobs import train as train_job
from kit.jobs.config import load_config
from kit.jobs.pipeline import submit
from kit.models.archs import ARCHS
from kit.run import LATEST, RunFolder, UnfinishedRunError
from kit.training.callbacks.checkpoint import EpochCheckpoint, read_checkpoint
from kit.training.callbacks.divergence import DivergedError, divergence_message, is_diverged
from kit.training.callbacks.lr_range_test import points_before_divergence
from kit.training.learner import ConvLearner
from kit.training.weights import NonFiniteWeightsError

ROOT = Path(__file__).resolve().parents[1]
SLUG = "dogs-vs-cats-redux-kernels-edition"
SZ = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("res"), n_train=12, n_valid=6, n_test=4)


@pytest.fixture
def data_dir(tmp_path_factory, monkeypatch):
    """`<data>/<SLUG>/` as `kit download` lays it out, with the tiny arch known to `kit train`."""
    monkeypatch.setitem(ARCHS, "tiny", tiny)
    data = tmp_path_factory.mktemp("data")
    make_folders(data / SLUG, n_train=12, n_valid=6, n_test=4)
    return data


def _learner(folder, seed=0):
    keras.utils.set_random_seed(seed)
    data = ImageClassifierData.from_paths(
        folder, tfms=tfms_from_model(tiny, SZ), bs=8, test_name="test", progress=False, num_workers=1
    )
    return ConvLearner.pretrained(tiny, data, precompute=True, weights=None)


def _values(model):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.weights]


# ------------------------------------------------------------------------------------ disk full

FULL_DISK = textwrap.dedent(
    """
    import gc, resource, signal, sys
    from pathlib import Path
    import keras, numpy as np
    from kit.training.callbacks.checkpoint import write_checkpoint
    from kit.training.weights import save_weights

    out = Path(sys.argv[1])
    model = keras.Sequential([keras.Input((200,)), keras.layers.Dense(500)])   # 400 KB of weights
    (out / "good.weights.h5").write_bytes(b"old weights")
    # The write itself fails (EFBIG) instead of killing the process with SIGXFSZ: a disk that fills.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))   # 1 KB: with HDF5 writing the file, a segfault
    for name, write in [("weights", lambda: save_weights(model, out / "good.weights.h5")),
                        ("checkpoint", lambda: write_checkpoint(out / "ckpt", {"epochs_done": 1, "model": (_v := [keras.ops.convert_to_numpy(w) for w in model.weights]), "optimizer": _v}))]:
        try:
            write()
        except OSError as e:
            print(name, "OSError:", e, flush=True)
    gc.collect()
    model.predict(np.zeros((2, 200)), verbose=0)   # the process is still healthy
    print("alive", flush=True)
    save_weights(model, out / "good.weights.h5")   # uncaught: an ordinary error exit, not a signal
    """
)


def test_full_disk_while_saving_weights_is_an_oserror_and_leaves_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr[-2000:])  # not -11 (SIGSEGV) / -7 (SIGBUS) / -25
    assert "weights OSError:" in r.stdout and str(tmp_path) in r.stdout and "good.weights.h5" in r.stdout
    assert "checkpoint OSError:" in r.stdout
    # An ordinary OSError exit: the disk-full kind, kit.io.NotEnoughSpaceError, for a write past the size limit.
    assert "alive" in r.stdout and "NotEnoughSpaceError: [Errno 28]" in r.stderr.splitlines()[-1]
    # No temporary file anywhere, the old file intact, no half checkpoint.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["good.weights.h5"]
    assert (tmp_path / "good.weights.h5").read_bytes() == b"old weights"


# ------------------------------------------------------------------------------------ divergence


def test_divergence_check_and_message_are_pure():
    assert is_diverged(float("nan")) and is_diverged(float("inf")) and not is_diverged(2.3)
    msg = divergence_message(2, 1e8, float("nan"))
    assert msg == (
        "training diverged at epoch 2 (lr 1e+08): the loss became nan; weights restored to the start "
        "of the epoch; try a rate 10x lower (1e+07) or run lr_find"
    )
    assert points_before_divergence([2.3, 2.2, float("nan")], "non-finite") == 2
    assert points_before_divergence([2.3, 2.2, 9.9], "diverged") == 2
    assert points_before_divergence([2.3, 2.2], "num_it") is None


@pytest.mark.backends
def test_fit_stops_at_nan_restores_the_epoch_and_raises(folder):
    learn = _learner(folder)
    learn.fit(0.01, 1, verbose=False)
    starts = {}  # the weights at the start of each epoch, by the table's epoch number
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: starts.update({1 + epoch: _values(learn.model)})
    )
    with pytest.raises(
        DivergedError,
        match=r"training diverged at epoch \d \(lr 1e\+08\): the loss became (nan|infinite); weights restored.*10x lower",
    ) as e:
        learn.fit(1e8, 4, verbose=False, callbacks=[record])
    bad = e.value.epoch
    assert isinstance(e.value, FloatingPointError) and bad in starts and e.value.lr == pytest.approx(1e8)
    assert max(starts) == bad  # it stopped in the epoch that diverged
    assert all(np.array_equal(a, b) for a, b in zip(starts[bad], _values(learn.model)))
    assert [r["epoch"] for r in learn.history] == list(range(bad)) and all(
        math.isfinite(r["trn_loss"]) for r in learn.history
    )
    learn.fit(0.01, 1, verbose=False)  # and the learner trains on
    assert learn.history[-1]["epoch"] == bad and math.isfinite(learn.history[-1]["trn_loss"])


@pytest.mark.backends
def test_save_refuses_non_finite_weights(folder):
    learn = _learner(folder)
    learn.fit(0.01, 1, best_save_name="best", verbose=False)  # the whole model's weights, though only the head trains
    learn.load("best")
    path = learn.save("fine")
    kernel = learn.head.weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    with pytest.raises(NonFiniteWeightsError, match="NaN or infinity"):
        learn.save("broken")
    assert not list(path.parent.glob("*broken*")) and path.is_file()


@pytest.mark.backends
def test_lr_find_warns_when_the_loss_diverges_at_once(folder):
    learn = _learner(folder)
    with pytest.warns(RuntimeWarning, match="start_lr="):
        learn.lr_find(start_lr=1e6, end_lr=1e9, num_it=20)
    assert learn.sched.stop_reason in ("diverged", "non-finite") and not learn.sched.reliable


class _FakeSched:
    def __init__(self, reliable):
        self.reliable = reliable

    def plot(self):
        from matplotlib.figure import Figure

        return Figure()

    plot_lr = plot


class _FakeLearner:
    """lr_find diverging at once until start_lr is at most `ok_below`."""

    def __init__(self, ok_below):
        self.ok_below, self.starts = ok_below, []

    def lr_find(self, start_lr):
        self.starts.append(start_lr)
        self.sched = _FakeSched(start_lr <= self.ok_below)
        return start_lr * 10


def test_kit_train_does_not_use_a_bad_lr_find_suggestion(tmp_path):
    cfg, run = load_config(None), RunFolder(tmp_path)
    learn = _FakeLearner(ok_below=2e-7)
    assert train_job.pick_lr(learn, cfg, run) == pytest.approx(1e-6) and learn.starts == pytest.approx([1e-5, 1e-7])
    with pytest.raises(ValueError, match="--lr"):
        train_job.pick_lr(_FakeLearner(ok_below=0), cfg, run)


# ------------------------------------------------------------------------------------ kit train


def _cfg(**kw):
    base = dict(
        competition=SLUG,
        arch="tiny",
        weights="none",
        size=SZ,
        bs=8,
        lr=0.005,
        epochs=2,
        cycle_len=1,
        aug="side_on",
        augment_epochs=1,
        unfreeze_epochs=2,
        unfreeze_lr=0.005,
        tta=False,
        num_workers=1,
        seed=3,
    )
    return load_config(None, **{**base, **kw})


class _StopAfter(EpochCheckpoint):
    """A checkpoint that presses Ctrl-C once the checkpoint of epoch `stop_at` is written."""

    stop_at = 0

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.last_epoch == type(self).stop_at:
            raise KeyboardInterrupt


@pytest.mark.backends
@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
def test_interrupted_run_resumes_to_the_uninterrupted_result(data_dir, monkeypatch, policy):
    if policy != "float32" and keras.backend.backend() != "tensorflow":
        pytest.skip("float16 resumes on JAX in tests/test_distribute.py's matrix; once here is enough")
    a = train_job.train(
        _cfg(mixed_precision=policy), data_dir, verbose=False
    )  # head 2 epochs, augmented 1, unfrozen 1 + 2 (SGDR)
    root = data_dir / SLUG
    monkeypatch.setattr(train_job, "EpochCheckpoint", _StopAfter)
    # Ctrl-C inside the head stage, then, resumed, inside the unfrozen stage's 2-epoch cosine cycle.
    for stop_at, resume in ((0, None), (4, True)):
        monkeypatch.setattr(_StopAfter, "stop_at", stop_at)
        with pytest.raises(train_job.TrainingInterrupted) as e:
            train_job.train(_cfg(mixed_precision=policy), data_dir, verbose=False, resume=resume)
        b = RunFolder(e.value.run.path)
        assert e.value.epoch == stop_at and e.value.checkpoint.is_file() and not b.finished
        assert read_checkpoint(b.checkpoint_dir)["history"][-1]["epoch"] == stop_at
        assert RunFolder.latest(root).path == a.dir  # LATEST never names the unfinished run
        assert RunFolder.unfinished(root)[0].path == b.path

    monkeypatch.setattr(train_job, "EpochCheckpoint", EpochCheckpoint)
    resumed = train_job.train(_cfg(mixed_precision=policy), data_dir, verbose=False, resume=True)
    assert resumed.dir == b.path and b.finished and RunFolder.latest(root).path == b.path
    assert [r["epoch"] for r in resumed.history] == [r["epoch"] for r in a.history] == list(range(6))
    for ra, rb in zip(a.history, resumed.history):
        for k in ("trn_loss", "val_loss", "accuracy"):
            assert rb[k] == pytest.approx(ra[k], rel=1e-4, abs=1e-5), (ra, rb)
    pa, pb = RunFolder(a.dir).read_predictions(), b.read_predictions()
    np.testing.assert_allclose(pb.val_probs, pa.val_probs, rtol=1e-4, atol=1e-5)
    assert json.loads(b.history_file.read_text())["history"] == resumed.history
    # The optimizer's state at the end, the step counter and loss scale of mixed_float16 included.
    opt_a, opt_b = (
        read_checkpoint(RunFolder(a.dir).checkpoint_dir)["optimizer"],
        read_checkpoint(b.checkpoint_dir)["optimizer"],
    )
    assert len(opt_a) == len(opt_b) > 0
    for va, vb in zip(opt_a, opt_b):
        np.testing.assert_allclose(vb, va, rtol=1e-4, atol=1e-6)


def test_unfinished_run_is_skipped_by_analyze_and_submit(data_dir, monkeypatch, capsys):
    monkeypatch.setattr(_StopAfter, "stop_at", 0)
    monkeypatch.setattr(train_job, "EpochCheckpoint", _StopAfter)
    args = ["-c", SLUG, "--data-dir", str(data_dir)]
    train_args = [
        "train",
        *args,
        "--arch",
        "tiny",
        "--weights",
        "none",
        "--size",
        "32",
        "--bs",
        "8",
        "--lr",
        "0.02",
        "--epochs",
        "2",
    ]
    assert main(train_args) == 130  # Ctrl-C
    err = capsys.readouterr().err
    (run,) = RunFolder.runs_dir(data_dir / SLUG).iterdir()
    assert str(run / "checkpoint") in err
    assert f"Resume with: kit train -c {SLUG} --data-dir {data_dir} --resume {run.name}" in err
    assert main(["analyze", *args, "--run", run.name]) == 1
    assert "unfinished run" in capsys.readouterr().err and not (run / "report.html").exists()
    assert main(["submit", *args, "--dry-run"]) == 1  # LATEST names no finished run
    assert "kit train" in capsys.readouterr().err
    with pytest.raises(UnfinishedRunError, match="unfinished run.*--resume"):
        submit(SLUG, data_dir, run=run.name, dry_run=True, out_dir=data_dir / "subs")
    assert not (data_dir / "subs").exists()
    monkeypatch.setattr(train_job, "EpochCheckpoint", EpochCheckpoint)
    assert main(["train", *args, "--resume"]) == 0
    assert "train: lr 0.02" in capsys.readouterr().out
    assert (run / "DONE").is_file() and (RunFolder.runs_dir(data_dir / SLUG) / LATEST).read_text().strip() == run.name
    assert main(["train", *args, "--resume"]) == 1  # nothing left to resume: a sentence
    assert "nothing to resume" in capsys.readouterr().err


def test_kit_train_diverging_exits_nonzero_and_keeps_latest(data_dir, capsys):
    config = data_dir / "lr.json"
    config.write_text('{"lr": 1e8, "tta": false}')
    args = [
        "train",
        "-c",
        SLUG,
        "--data-dir",
        str(data_dir),
        "--arch",
        "tiny",
        "--weights",
        "none",
        "--size",
        "32",
        "--bs",
        "8",
        "--epochs",
        "2",
        "--config",
        str(config),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert re.search(
        r"kit train: DivergedError: training diverged at epoch \d \(lr [0-9.e+]+\): the loss became nan; "
        r"weights restored to the start of the epoch; try a rate 10x lower",
        err,
    ), err
    runs = RunFolder.runs_dir(data_dir / SLUG)
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    assert not (runs / LATEST).exists() and not (run / "DONE").exists() and not (run / "model.weights.h5").exists()
    for f in run.rglob("*.json"):
        json.loads(f.read_text(), parse_constant=lambda c, f=f: pytest.fail(f"{f} holds {c}"))


# ------------------------------------------------------------------------------------ arguments


def test_every_command_refuses_a_slug_that_is_a_path(tmp_path, capsys):
    data = tmp_path / "a" / "b" / "data"
    data.mkdir(parents=True)
    for cmd in ("train", "download", "analyze", "submit"):
        assert main([cmd, "-c", "../../x", "--data-dir", str(data)]) == 1, cmd
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "../../x" in err, (cmd, err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b", "data"]  # nothing written anywhere
    assert main(["train", "-c", "../../x", "--data-dir", str(data)]) == 1
    assert "slug" in capsys.readouterr().err


def test_data_dir_that_is_a_file_gets_a_sentence(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("not a folder")
    for cmd, where in (("train", f), ("download", f), ("analyze", f), ("submit", f / "inside")):
        assert main([cmd, "-c", "digits", "--data-dir", str(where)]) == 1, cmd
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a file" in err and "--data-dir" in err, (cmd, err)
