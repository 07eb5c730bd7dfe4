"""The stages apply what a recipe says (an optimizer per stage, BatchNorm trained, stochastic depth off),
and `kit train --recipe real --quick` runs end to end on tiny images, recording each stage's figures."""

import json

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from kit.cli import main
from kit.data import ImageClassifierData
from kit.jobs import train as train_job
from kit.jobs.config import load_config
from kit.models.archs import ARCHS, Arch
from kit.models.efficientnet_lite import DropPath
from kit.run import RunFolder
from kit.training.learner import ConvLearner

SZ = 32
DROP = 0.2


def tiny_drop_cnn(include_top: bool = False, weights=None, input_shape=(SZ, SZ, 3), **kwargs) -> keras.Model:
    """helpers.tiny's body with EfficientNet-Lite's drop-connect layer in its late half."""
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="early_conv")(inp)
    x = keras.layers.BatchNormalization(name="early_bn")(x)
    x = keras.layers.ReLU(name="early_relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="late_conv")(x)
    x = keras.layers.BatchNormalization(name="late_bn")(x)
    x = DropPath(DROP, name="late_drop")(x)
    x = keras.layers.ReLU(name="late_relu")(x)
    return keras.Model(inp, x, name="tiny_drop")


tiny_drop = Arch("tiny_drop", tiny_drop_cnn, preprocess="tf", split_at="late")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("recipes"), n_train=12, n_valid=6)


@pytest.fixture
def arch(monkeypatch):
    monkeypatch.setitem(ARCHS, "tiny_drop", tiny_drop)
    return "tiny_drop"


def _cfg(folder, arch, **kw):
    """The real recipe's quick slice on tiny images: its switches, at a tiny arch's size."""
    return load_config(
        recipe="real", quick=True, folder=str(folder), arch=arch, weights="none", size=SZ, bs=8, num_workers=1, **kw
    )


def _learner(cfg, folder):
    keras.utils.set_random_seed(cfg.seed)
    data = train_job.load_data(cfg, folder, progress=False)
    return ConvLearner.pretrained(cfg.arch, data, precompute=True, weights=None, opt=cfg.opt)


def _body_bn(learn):
    return [l for l in learn.backbone.layers if isinstance(l, keras.layers.BatchNormalization)]


def _drop_rates(learn):
    return [l.rate for l in learn.backbone.layers if isinstance(l, DropPath)]


def test_stages_apply_the_recipe_switches(folder, arch, tmp_path):
    cfg = _cfg(folder, arch, work_dir=str(tmp_path / "work"))
    learn = _learner(cfg, folder)
    assert _drop_rates(learn) == [DROP]
    train_job.fit_stages(learn, cfg, cfg.lr, verbose=False)
    # The head trained with SGD on activations; the unfrozen net with a new Adam, BatchNorm and all.
    assert type(learn.head.optimizer).__name__ == "DifferentialSGD"
    assert learn.opt == "adam" and type(learn.model.optimizer).__name__ == "DifferentialAdam"
    assert learn.train_bn and all(l.trainable for l in _body_bn(learn))
    assert _drop_rates(learn) == [0.0]
    assert isinstance(learn.data, ImageClassifierData) and len(learn.data.val_y) == 12  # max_per_class=20 keeps all 6


def test_default_stages_keep_one_optimizer_frozen_bn_and_stochastic_depth(folder, arch, tmp_path):
    cfg = load_config(
        folder=str(folder),
        work_dir=str(tmp_path / "work"),
        arch=arch,
        weights="none",
        size=SZ,
        bs=8,
        lr=0.01,
        epochs=1,
        unfreeze_epochs=1,
        tta=False,
        num_workers=1,
    )
    learn = _learner(cfg, folder)
    train_job.fit_stages(learn, cfg, cfg.lr, verbose=False)
    assert learn.opt == "sgd" and type(learn.model.optimizer).__name__ == "DifferentialSGD"
    assert not learn.train_bn and not any(l.trainable for l in _body_bn(learn))
    assert _drop_rates(learn) == [DROP]


def test_stage_figures_are_each_stage_last_epoch():
    cfg = load_config(None, epochs=2, cycle_len=None, unfreeze_epochs=2, unfreeze_cycle_mult=1)
    history = [{"epoch": e, "accuracy": e / 10, "val_loss": 1 - e / 10} for e in range(4)]
    figures = train_job.stage_figures(history, train_job.stages(cfg, 0.01))
    assert figures == {"head": {"accuracy": 0.1, "log_loss": 0.9}, "unfreeze": {"accuracy": 0.3, "log_loss": 0.7}}


def test_kit_train_recipe_real_quick_end_to_end(folder, arch, tmp_path, capsys):
    work = tmp_path / "work"
    args = ["train", "--recipe", "real", "--quick", "--folder", str(folder), "--work-dir", str(work)]
    assert main([*args, "--arch", arch, "--weights", "none", "--size", str(SZ)]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out.splitlines()
    run = RunFolder.latest(work)
    assert out[-2].startswith("train: head only ") and ", unfrozen " in out[-2] and ", with TTA " in out[-2]
    assert "(clipped as a submission: " in out[-2] and out[-2].endswith(f"run {run.path}")
    assert out[-1].startswith("train: lr 0.01, ")
    history = json.loads(run.history_file.read_text())
    assert set(history["stages"]) == {"head", "unfreeze"} and history["final"]["tta"] is True
    # The stages' figures are the learner's own at each stage's last epoch: 1 head epoch, then 1 unfrozen.
    rows = history["history"]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert history["stages"]["head"] == {"accuracy": rows[0]["accuracy"], "log_loss": rows[0]["val_loss"]}
    assert history["stages"]["unfreeze"] == {"accuracy": rows[1]["accuracy"], "log_loss": rows[1]["val_loss"]}
    # The final figures are those of the saved (TTA) predictions.
    preds = run.read_predictions()
    final = history["final"]
    assert final["accuracy"] == pytest.approx(np.mean(preds.val_probs.argmax(1) == preds.val_y))
    p_true = preds.val_probs[np.arange(len(preds.val_y)), preds.val_y]
    assert final["log_loss"] == pytest.approx(-np.mean(np.log(p_true)), rel=1e-6)
    assert final["clipped_log_loss"] == pytest.approx(-np.mean(np.log(np.clip(p_true, 0.005, 0.995))), rel=1e-6)
    saved = run.read_config()
    assert (saved["unfreeze_opt"], saved["unfreeze_lrs"], saved["train_bn"], saved["stochastic_depth"]) == (
        "adam",
        [1e-5, 5e-5, 2e-4],
        True,
        False,
    )
