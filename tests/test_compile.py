"""Each compiled step is built once: partial last batches, predict, TTA and test predictions reuse it.
Also: fixed-shape batches carry only real rows into training, and the opt-in compilation cache."""

import collections

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import Batches, ImageClassifierData, tfms_from_model, transforms_side_on
from kit.env import COMPILATION_CACHE_ENV
from kit.training import compilation_cache
from kit.training.learner import ConvLearner

pytestmark = pytest.mark.backends
STEPS = ("train_step", "test_step", "predict_step")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # 22 train, 10 valid, 3 test images with bs 8: every split ends in a partial batch.
    return make_folders(tmp_path_factory.mktemp("compile"), classes=("cats", "dogs"), n_train=11, n_valid=5, n_test=3)


@pytest.fixture
def traces(monkeypatch):
    """Counts (model name, step) each time Keras runs a step's Python code: once per trace when compiled."""
    counts: collections.Counter = collections.Counter()
    for step in STEPS:
        orig = getattr(keras.Model, step)

        def counted(self, *args, _orig=orig, _step=step, **kwargs):
            counts[(self.name, _step)] += 1
            return _orig(self, *args, **kwargs)

        monkeypatch.setattr(keras.Model, step, counted)
    return counts


def test_fixed_batches_one_shape_real_rows_only():
    x = np.arange(11)[:, None] * np.ones((1, 2), dtype=np.int64)
    b = Batches(x, np.arange(11), 4, shuffle=True, seed=0, fixed=True)
    got = [b[i] for i in range(len(b))]
    assert len(b) == 3 and b.n == 11 and all(len(xb) == 4 and len(yb) == 4 for xb, yb in got)
    rows = np.concatenate([yb for _, yb in got])
    assert set(rows.tolist()) == set(range(11))  # every row, and the top-up rows are real ones
    assert all(np.array_equal(xb[:, 0], yb) for xb, yb in got)
    p = Batches(x, None, 4, fixed=True)
    flat = np.concatenate([p[i][0] for i in range(len(p))])
    assert len(flat) == 12 and np.array_equal(flat[: p.n], x)
    tiny_split = Batches(x[:3], np.arange(3), 8, shuffle=True, fixed=True)  # fewer rows than a batch
    assert len(tiny_split[0][0]) == 8 and set(tiny_split[0][1].tolist()) == {0, 1, 2}


def test_partial_batches_predict_and_tta_compile_nothing_new(folder, traces):
    if keras.backend.backend() == "torch":
        pytest.skip("the kit runs torch eagerly: nothing is compiled")
    data = ImageClassifierData.from_paths(
        folder,
        tfms=tfms_from_model(tiny, 32, aug_tfms=transforms_side_on, max_zoom=1.1),
        bs=8,
        test_name="test",
        progress=False,
    )
    keras.utils.set_random_seed(0)
    learn = ConvLearner.pretrained(tiny, data, precompute=True, weights=None)
    learn.fit(0.01, 1, verbose=False)
    learn.predict(), learn.predict(is_test=True)
    learn.precompute = False
    learn.unfreeze()
    learn.fit(0.01, 1, verbose=False)
    first = dict(traces)
    # Another fit (other rate, more epochs), predictions, TTA and test predictions: all reuse them.
    learn.fit(0.005, 2, verbose=False)
    log_preds = learn.predict()
    learn.predict(is_test=True)
    learn.TTA(n_aug=2)
    learn.TTA(n_aug=1, is_test=True)
    learn.predict_array(data.val_ds.images[:3])
    assert dict(traces) == first
    # One function per model and step; TensorFlow traces a train step twice the first time (its
    # variable-creation pass), JAX once. Validation runs through predict: no test step at all.
    most = 1 if keras.backend.backend() == "jax" else 2
    assert first[("features", "predict_step")] == 1
    assert first[("head", "predict_step")] == 1 and 1 <= first[("head", "train_step")] <= most
    assert first[(learn.model.name, "predict_step")] == 1 and 1 <= first[(learn.model.name, "train_step")] <= most
    assert not [k for k in first if k[1] == "test_step"], first
    # The padded rows change nothing: the table's validation figures are those of the real images.
    y = data.val_y
    direct = keras.ops.convert_to_numpy(learn.model(data.val_ds.images[data.val_ds.rows], training=False))
    np.testing.assert_allclose(log_preds, direct, atol=1e-5)
    assert learn.history[-1]["val_loss"] == pytest.approx(-np.mean(direct[np.arange(len(y)), y]), abs=1e-5)
    assert learn.history[-1]["accuracy"] == pytest.approx(np.mean(direct.argmax(1) == y))


def test_compilation_cache_is_opt_in(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "user"))
    monkeypatch.delenv(COMPILATION_CACHE_ENV, raising=False)
    assert compilation_cache.compilation_cache_dir() is None
    assert compilation_cache.compilation_cache_dir(False) is None
    monkeypatch.setenv(COMPILATION_CACHE_ENV, "1")
    assert compilation_cache.compilation_cache_dir() == tmp_path / "user" / compilation_cache.SUBDIR
    monkeypatch.setenv(COMPILATION_CACHE_ENV, str(tmp_path / "xla"))
    assert compilation_cache.compilation_cache_dir() == tmp_path / "xla"
    assert compilation_cache.compilation_cache_dir(tmp_path / "other") == tmp_path / "other"
    if keras.backend.backend() != "jax":
        assert compilation_cache.enable_compilation_cache(True) is None  # only JAX has one through Keras
        return
    import jax

    before = jax.config.jax_compilation_cache_dir
    try:
        assert compilation_cache.enable_compilation_cache() == tmp_path / "xla"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "xla")
        jax.jit(lambda v: v * 3 + 1)(np.arange(5.0)).block_until_ready()
        assert any((tmp_path / "xla").iterdir())  # the program was written for the next run
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
        from jax.experimental.compilation_cache import compilation_cache as cc

        cc.reset_cache()
