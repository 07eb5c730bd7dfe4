"""A bag of heads (`build_bag`, `ConvLearner.member`, TrainConfig.head_bag): heads trained one after another
on the precomputed activations, each its own weights, shuffling and rate, their probabilities averaged in
every prediction; `kit train` fits, checkpoints, resumes and reloads them."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.cli import main
from kit.data import ImageClassifierData, tfms_from_model
from kit.data.dataset import Batches
from kit.jobs import train as train_job
from kit.jobs.config import HEAD_BAG, head_bag, load_config
from kit.jobs.predict import load_learner
from kit.models.archs import ARCHS, build_bag, log_mean_exp
from kit.run import RunFolder
from kit.training.callbacks.checkpoint import EpochCheckpoint
from kit.training.learner import ConvLearner

SZ = 32
TRAIN = ["--arch", "tiny", "--weights", "none", "--size", "32", "--bs", "8", "--epochs", "2"]


@pytest.fixture(autouse=True)
def _tiny_arch(monkeypatch):
    monkeypatch.setitem(ARCHS, "tiny", tiny)


def _kernels(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights if "kernel" in w.path]


def _member_log_probs(learn: ConvLearner, split: str = "valid") -> np.ndarray:
    return np.stack(
        [learn._predict(m, Batches(learn._act[split], None, learn.data.bs, fixed=True)) for m in learn.members]
    )


# ----------------------------------------------------------------------------- the model
def test_the_bag_predicts_the_log_of_its_members_mean_probability():
    head, members = build_bag(6, 3, 1)
    assert members == [head] and head.name == "head"  # one head: the head itself, as before bags
    bag, members = build_bag(6, 3, 3, ps=0.0)
    assert [m.name for m in members] == ["head_0", "head_1", "head_2"] and bag.name == "head"
    assert not np.allclose(_kernels(members[0])[0], _kernels(members[1])[0])  # each its own initial weights
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    each = np.stack([keras.ops.convert_to_numpy(m(x)) for m in members])
    got = keras.ops.convert_to_numpy(bag(x))
    np.testing.assert_allclose(np.exp(got), np.exp(each).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=1e-5)
    big = np.array([[-1000.0, 0.0], [-1001.0, -2.0]], dtype="float32")  # stable far below exp's range
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(log_mean_exp(big)),
        [-1000.0 - np.log(2) + np.log1p(np.exp(-1.0)), np.log((1 + np.exp(-2.0)) / 2)],
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        build_bag(6, 3, 0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_folders(tmp_path_factory.mktemp("bag"), n_train=10, n_valid=4, size=SZ)
    return ImageClassifierData.from_paths(root, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False)


@pytest.mark.backends
def test_each_member_trains_alone_and_validates_the_bag_so_far(data):
    learn = ConvLearner.pretrained(tiny, data, precompute=True, weights=None, bag=3)
    assert learn.bag == 3 and "bag=3" in repr(learn)
    for i in range(3):
        before = [_kernels(m) for m in learn.members]
        with learn.member(i):
            learn.fit(0.01, 1, verbose=False)
            each = _member_log_probs(learn)
            so_far = np.log(np.exp(each[: i + 1]).mean(axis=0))
            np.testing.assert_allclose(learn.predict(), so_far, atol=1e-5)  # members after i are not in it yet
            assert learn.history[-1]["val_loss"] == pytest.approx(
                -np.mean(so_far[np.arange(len(data.val_y)), data.val_y]), rel=1e-4
            )
        after = [_kernels(m) for m in learn.members]
        changed = [not all(np.allclose(a, b) for a, b in zip(x, y)) for x, y in zip(before, after)]
        assert changed == [j == i for j in range(3)]  # only member i moved
    probs = np.exp(_member_log_probs(learn)).mean(axis=0)
    np.testing.assert_allclose(np.exp(learn.predict()), probs, atol=1e-5)  # outside: the whole bag
    learn.precompute = False
    np.testing.assert_allclose(np.exp(learn.predict()), probs, atol=1e-4)  # the image model holds the bag too


def test_member_refuses_what_cannot_work(data):
    learn = ConvLearner.pretrained(tiny, data, precompute=True, weights=None, bag=2)
    with pytest.raises(ValueError, match=r"a bag of 2 heads\): i must be an integer in \[0, 1\]"):
        with learn.member(2):
            pass
    with learn.member(0):
        with pytest.raises(ValueError, match="one member at a time"):
            with learn.member(1):
                pass
    learn.precompute = False
    with pytest.raises(ValueError, match="precompute = True first"):
        with learn.member(0):
            pass
    with pytest.raises(ValueError, match="bag must be an integer >= 1"):
        ConvLearner.pretrained(tiny, data, weights=None, bag=0)


# ----------------------------------------------------------------------------- the config
def test_the_bag_is_the_default_when_the_head_is_the_last_stage():
    assert head_bag(load_config(None)) == HEAD_BAG == 5
    assert head_bag(load_config(None, unfreeze_epochs=2)) == 1  # later stages fine-tune one head
    assert head_bag(load_config(None, augment_epochs=1)) == 1
    assert head_bag(load_config(None, head_bag=3)) == 3
    assert head_bag(load_config(recipe="real")) == 1 and head_bag(load_config(recipe="demo")) == 1
    (head,) = train_job.stages(load_config(None), 0.01)
    assert head.members == 5
    with pytest.raises(ValueError, match=r"head_bag=3 trains 3 heads .* unfreeze_epochs=2"):
        load_config(None, head_bag=3, unfreeze_epochs=2)
    with pytest.raises(ValueError, match="head_bag must be an integer >= 1"):
        load_config(None, head_bag=0)


# ----------------------------------------------------------------------------- kit train
def _config(tmp_path: Path, **values) -> str:
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"tta": False, "num_workers": 1, "head_min_steps": 0, **values}))
    return str(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folders(tmp_path / "photos", n_train=8, n_valid=4, n_test=3)


@pytest.mark.backends
def test_kit_train_fits_each_head_at_its_own_rate_and_reloads_the_bag(folder, tmp_path, capsys):
    assert main(["train", "--folder", str(folder), *TRAIN, "--config", _config(tmp_path), "--head-bag", "3"]) == 0
    out = capsys.readouterr().out
    assert "head 3 of 3, validated as the mean of heads 1-3" in out
    run = RunFolder.latest(folder)
    cfg, history = run.read_config(), run.read_history()
    assert cfg["head_bag"] == 3
    assert [r["epoch"] for r in history["history"]] == list(range(6))  # 3 heads of 2 epochs
    assert len(history["head_lrs"]) == 3 and history["head_lrs"][0] == history["lr"]  # each its own lr_find
    last = history["history"][-1]
    assert history["stages"]["head"] == {"accuracy": last["accuracy"], "log_loss": last["val_loss"]}  # the whole bag's
    preds = run.read_predictions()
    learn = load_learner(run)
    assert learn.bag == 3
    log_probs, ok = learn.predict_files([folder / f for f in preds.test_files])
    assert ok.all()
    np.testing.assert_allclose(np.exp(log_probs), preds.test_probs, atol=1e-4)


def test_the_default_bag_is_recorded_and_a_run_from_before_bags_reloads_with_one_head(folder, tmp_path):
    assert main(["train", "--folder", str(folder), *TRAIN, "--lr", "0.01", "--config", _config(tmp_path)]) == 0
    run = RunFolder.latest(folder)
    assert run.read_config()["head_bag"] == HEAD_BAG and load_learner(run).bag == HEAD_BAG
    one = tmp_path / "one"
    make_folders(one, n_train=8, n_valid=4)
    assert main(["train", "--folder", str(one), *TRAIN, "--lr", "0.01", "--config", _config(tmp_path, head_bag=1)]) == 0
    old = RunFolder.latest(one)
    cfg = old.read_config()
    del cfg["head_bag"]  # as a run written before bags: its weights hold one head
    old.config_file.write_text(json.dumps(cfg))
    assert load_learner(old).bag == 1
    assert train_job.resumed_config(cfg, load_config(None)).head_bag == 1


class _StopInHead2(EpochCheckpoint):
    """Ctrl-C once the second head's first epoch is checkpointed."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.facts.get("member") == 1:
            raise KeyboardInterrupt


@pytest.mark.backends
def test_a_resume_inside_the_second_head_ends_where_the_uninterrupted_run_ends(tmp_path, monkeypatch, capsys):
    whole, folder = tmp_path / "whole", tmp_path / "cut"
    for f in (whole, folder):
        make_folders(f, n_train=8, n_valid=4, n_test=3)  # the same images: make_folders is seeded
    args = [*TRAIN, "--config", _config(tmp_path), "--head-bag", "3"]
    assert main(["train", "--folder", str(whole), *args]) == 0
    expected = RunFolder.latest(whole)

    monkeypatch.setattr(train_job, "EpochCheckpoint", _StopInHead2)
    assert main(["train", "--folder", str(folder), *args]) == 130
    monkeypatch.setattr(train_job, "EpochCheckpoint", EpochCheckpoint)
    (run,) = RunFolder.unfinished(folder)
    assert main(["train", "--folder", str(folder), "--resume", run.name]) == 0
    assert run.finished
    got, want = run.read_history(), expected.read_history()
    assert [r["epoch"] for r in got["history"]] == list(range(6))
    assert got["head_lrs"] == pytest.approx(want["head_lrs"])
    np.testing.assert_allclose(
        [r["val_loss"] for r in got["history"]], [r["val_loss"] for r in want["history"]], rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(run.read_predictions().test_probs, expected.read_predictions().test_probs, atol=1e-4)
