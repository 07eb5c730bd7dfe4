"""ConvLearner on a tiny body: precompute, fit, predict order, frozen BatchNorm, rates, TTA, save."""

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on
from kit.training.learner import ConvLearner

pytestmark = pytest.mark.backends
SZ = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(
        tmp_path_factory.mktemp("easy"), classes=("cats", "dogs", "frogs"), n_train=16, n_valid=8, n_test=6
    )


def _data(folder, aug=None, **kw):
    return ImageClassifierData.from_paths(
        folder, tfms=tfms_from_model(tiny, SZ, aug_tfms=aug), bs=8, test_name="test", progress=False, **kw
    )


def _learner(folder, precompute=True, aug=None, seed=0, **kw):
    keras.utils.set_random_seed(seed)
    return ConvLearner.pretrained(tiny, _data(folder, aug), precompute=precompute, weights=None, **kw)


def _bn_stats(learn):
    return [
        keras.ops.convert_to_numpy(v).copy()
        for l in learn.backbone.layers
        if isinstance(l, keras.layers.BatchNormalization)
        for v in l.non_trainable_weights
    ]


def test_precompute_fit_beats_chance_and_predict_follows_val_y(folder, capsys):
    learn = _learner(folder)
    val_loss, acc = learn.fit(0.02, 5, verbose=True)
    out = capsys.readouterr().out
    assert "epoch" in out and "trn_loss" in out and "val_loss" in out and "accuracy" in out
    assert len(learn.history) == 5
    log_preds = learn.predict()
    assert log_preds.shape == (24, 3) and log_preds.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_preds).sum(1), 1, rtol=1e-4)
    assert (log_preds.argmax(1) == learn.data.val_y).mean() >= 0.8  # chance is 1/3
    assert acc == pytest.approx((log_preds.argmax(1) == learn.data.val_y).mean(), abs=1e-6)
    # The same weights through the whole model on images give the same answers.
    learn.precompute = False
    np.testing.assert_allclose(learn.predict(), log_preds, atol=1e-4)
    assert learn.predict(is_test=True).shape == (6, 3)


def test_precompute_cache_reused_then_invalidated(folder, tmp_path, monkeypatch):
    calls = []
    orig = ConvLearner._features_step
    monkeypatch.setattr(ConvLearner, "_features_step", lambda self, xb: calls.append(len(xb)) or orig(self, xb))
    _learner(folder, seed=1)
    # Train, valid and test once each (6, 3 and 1 batches), every batch of one shape: the test's 6 rows padded.
    assert calls == [8] * (6 + 3 + 1)
    calls.clear()
    _learner(folder, seed=1)  # same body, same files: read from path/tmp
    assert calls == []
    _learner(folder, seed=2)  # other body weights: other activations
    assert calls == [8] * (6 + 3 + 1)
    # A changed file list invalidates the cache.
    other = make_folders(tmp_path / "more", classes=("cats", "dogs", "frogs"), n_train=16, n_valid=8, n_test=6)
    calls.clear()
    keras.utils.set_random_seed(1)
    ConvLearner.pretrained(tiny, _data(other), precompute=True, weights=None)
    assert sum(calls) > 0
    (other / "train" / "cats" / "cat.0.jpg").unlink()
    calls.clear()
    keras.utils.set_random_seed(1)
    ConvLearner.pretrained(tiny, _data(other), precompute=True, weights=None)
    assert calls == [8] * 6  # train changed (47 files, the last batch padded); valid and test reused


def test_frozen_batchnorm_stats_do_not_move(folder):
    learn = _learner(folder, precompute=False, aug=transforms_side_on)
    before = _bn_stats(learn)
    conv_before = keras.ops.convert_to_numpy(learn.backbone.get_layer("early_conv").kernel).copy()
    learn.fit(0.05, 1, verbose=False)
    for a, b in zip(before, _bn_stats(learn)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        conv_before, keras.ops.convert_to_numpy(learn.backbone.get_layer("early_conv").kernel)
    )
    learn.unfreeze()  # BatchNorm stays in inference mode; the convolutions train
    learn.fit(0.05, 1, verbose=False)
    for a, b in zip(before, _bn_stats(learn)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(conv_before, keras.ops.convert_to_numpy(learn.backbone.get_layer("early_conv").kernel))
    learn.unfreeze(train_bn=True)
    learn.fit(0.05, 1, verbose=False)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _bn_stats(learn)))


def test_differential_rates_zero_leaves_groups_untouched(folder):
    learn = _learner(folder, precompute=False)
    learn.unfreeze()
    snap = lambda name: keras.ops.convert_to_numpy(learn.backbone.get_layer(name).kernel).copy()
    early, late = snap("early_conv"), snap("late_conv")
    head_w = keras.ops.convert_to_numpy(learn.head.layers[-2].kernel).copy()
    learn.fit(np.array([0, 0, 0.05]), 1, verbose=False)
    np.testing.assert_array_equal(early, snap("early_conv"))
    np.testing.assert_array_equal(late, snap("late_conv"))
    assert not np.array_equal(head_w, keras.ops.convert_to_numpy(learn.head.layers[-2].kernel))
    learn.fit(np.array([0, 0.01, 0.05]), 1, verbose=False)
    np.testing.assert_array_equal(early, snap("early_conv"))
    assert not np.array_equal(late, snap("late_conv"))
    with pytest.raises(ValueError, match="one per layer group \\(3.*Received 2"):
        learn.fit(np.array([0.01, 0.1]), 1)


def test_sgdr_epochs_tta_save_load(folder, tmp_path):
    learn = _learner(folder)
    learn.fit(0.05, 2, cycle_len=1, cycle_mult=2, verbose=False)
    assert [r["epoch"] for r in learn.history] == [0, 1, 2]
    learn.precompute = False
    log_preds, y = learn.TTA(n_aug=2)
    assert log_preds.shape == (3, 24, 3) and np.array_equal(y, learn.data.val_y)
    np.testing.assert_allclose(log_preds[0], learn.predict(), atol=1e-4)
    probs = np.mean(np.exp(log_preds), 0)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-4)
    test_preds, none = learn.TTA(n_aug=1, is_test=True)
    assert test_preds.shape == (2, 6, 3) and none is None
    path = learn.save("tiny")
    assert path.name == "tiny.weights.h5" and path.parent == folder / "models"
    other = _learner(folder, precompute=False, seed=5)
    assert not np.allclose(other.predict(), learn.predict())
    other.load("tiny")
    np.testing.assert_allclose(other.predict(), learn.predict(), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="No saved weights.*nope.*tiny.weights.h5"):
        other.load("nope")


def test_lr_find_restores_and_suggests(folder):
    learn = _learner(folder)
    before = [keras.ops.convert_to_numpy(w).copy() for w in learn.head.weights]
    lr = learn.lr_find(start_lr=1e-4, end_lr=10, num_it=20)
    assert 1e-4 <= lr <= 10
    assert len(learn.sched.lrs) >= 2
    for a, b in zip(before, learn.head.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    assert learn.sched.plot().axes[0].get_xscale() == "log"


def test_bad_arguments(folder):
    learn = _learner(folder)
    with pytest.raises(ValueError, match="n_cycle must be an integer >= 1. Received n_cycle=0"):
        learn.fit(0.01, 0)
    with pytest.raises(ValueError, match="Learning rates must be non-negative"):
        learn.fit(-0.1, 1)
    with pytest.raises(ValueError, match="layer-group index"):
        learn.freeze_to(7)
    learn.unfreeze()
    with pytest.raises(ValueError, match="precompute=True needs a frozen body"):
        learn.precompute = True
