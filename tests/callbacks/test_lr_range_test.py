"""LRRangeTest on tiny models, under every backend."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from kit.training.callbacks.lr_range_test import LRRangeTest, epochs_needed
from kit.training.optimizers import make_optimizer
from kit.training.schedules import smooth_losses

N_FEATURES = 4


def regression(n: int = 64, seed: int = 0, noise: float = 0.0):
    """Standardised inputs and a linear target: SGD is stable below lr ~ 1, diverges above."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES)).astype("float32")
    w = rng.normal(size=(N_FEATURES, 1)).astype("float32")
    y = (x @ w + noise * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def linear_model(optimizer=None, batchnorm: bool = False) -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((N_FEATURES,))]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization())
    layers.append(keras.layers.Dense(1, kernel_initializer="zeros"))
    model = keras.Sequential(layers)
    model.compile(optimizer or keras.optimizers.SGD(0.01), "mse")
    return model


class LRProbe(keras.callbacks.Callback):
    """Reads the optimizer's rate after each batch, as the step used it."""

    def __init__(self):
        super().__init__()
        self.lrs, self.running = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.lrs.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))
        self.running.append(float(logs["loss"]))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="start_lr"):
        LRRangeTest(start_lr=1.0, end_lr=1.0)
    with pytest.raises(ValueError, match="start_lr=-1"):
        LRRangeTest(start_lr=-1)
    with pytest.raises(ValueError, match="end_lr=0"):
        LRRangeTest(end_lr=0)
    with pytest.raises(ValueError, match="num_it=1"):
        LRRangeTest(num_it=1)
    with pytest.raises(ValueError, match="beta=1"):
        LRRangeTest(beta=1.0)


def test_epochs_needed():
    assert epochs_needed(100, 30) == 4
    assert epochs_needed(100, 100) == 1
    assert epochs_needed(5, 100) == 1
    with pytest.raises(ValueError, match="steps_per_epoch=0"):
        epochs_needed(5, 0)


@pytest.mark.backends
def test_ramp_hits_both_ends_and_the_optimizer_uses_it():
    x, y = regression(40)
    model = linear_model()
    finder, probe = LRRangeTest(1e-4, 1e-1, num_it=5, stop_div=False), LRProbe()
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[finder, probe], verbose=0)
    assert finder.lrs[0] == 1e-4 and finder.lrs[-1] == 1e-1
    np.testing.assert_allclose(finder.lrs, np.geomspace(1e-4, 1e-1, 5), rtol=1e-12)
    np.testing.assert_allclose(probe.lrs, finder.lrs, rtol=1e-6)  # float32 in the optimizer
    assert finder.iterations == [0, 1, 2, 3, 4]
    assert finder.stop_reason == "num_it"
    # The rate is restored afterwards.
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == np.float32(0.01)


@pytest.mark.backends
def test_recorded_loss_is_per_batch_not_the_running_mean():
    # Batches of very different difficulty, the last one short (4, 4, 4, 2 samples);
    # rates so small that the weights do not move: the batch losses are known in advance.
    x, y = regression(14)
    y[4:8] *= 10.0
    y[12:] *= 30.0
    model = linear_model(keras.optimizers.SGD(0.0))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # builds everything
    expected = [float(model.evaluate(x[i : i + 4], y[i : i + 4], verbose=0)) for i in range(0, 14, 4)]
    finder, probe = LRRangeTest(1e-12, 1e-11, num_it=4, stop_div=False), LRProbe()
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, callbacks=[finder, probe], verbose=0)
    np.testing.assert_allclose(finder.losses, expected, rtol=1e-4)
    # Keras' logs are the running sample-weighted mean, which differs a lot here.
    sizes = np.array([4, 4, 4, 2])
    running = np.cumsum(np.array(expected) * sizes) / np.cumsum(sizes)
    np.testing.assert_allclose(probe.running, running, rtol=1e-4)
    assert not np.allclose(finder.losses, probe.running, rtol=0.1)


@pytest.mark.backends
def test_divergence_stops_a_wild_range():
    x, y = regression(64)
    model = linear_model()
    finder = LRRangeTest(1e-3, 1e6, num_it=60)
    model.fit(x, y, batch_size=4, epochs=4, callbacks=[finder], verbose=0)
    assert finder.stop_reason in ("diverged", "non-finite")
    assert len(finder.lrs) < 60
    # The stop came after the rate passed the stability limit (~1 for this problem).
    assert finder.lrs[-1] > 0.5


@pytest.mark.backends
def test_weights_optimizer_state_and_rate_restored_bit_for_bit():
    x, y = regression(32)
    model = linear_model(keras.optimizers.Adam(3e-3), batchnorm=True)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # non-zero Adam slots, moved BN stats
    weights = [np.array(v) for v in model.weights]
    opt_vars = [np.array(v) for v in model.optimizer.variables]
    finder = LRRangeTest(1e-3, 10.0, num_it=8, stop_div=False)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[finder], verbose=0)
    assert len(finder.lrs) == 8
    for before, var in zip(weights, model.weights):
        np.testing.assert_array_equal(np.array(var), before, err_msg=var.path)
    for before, var in zip(opt_vars, model.optimizer.variables):
        np.testing.assert_array_equal(np.array(var), before, err_msg=var.path)
    # And training still works afterwards on the restored state.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


@pytest.mark.backends
def test_restore_false_keeps_the_trained_weights():
    x, y = regression(32)
    model = linear_model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    before = np.array(model.weights[0])
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[LRRangeTest(1e-3, 1e-1, num_it=4, restore=False)], verbose=0)
    assert not np.array_equal(np.array(model.weights[0]), before)


@pytest.mark.backends
def test_suggestion_lands_in_the_known_good_range():
    # Noisy linear regression with standardised inputs: plain SGD learns well for
    # rates in about [0.01, 1] and diverges beyond ~1.
    x, y = regression(2000, noise=0.1)
    model = linear_model()
    finder = LRRangeTest(1e-5, 100.0, num_it=100)
    model.fit(x, y, batch_size=16, epochs=epochs_needed(100, 125), callbacks=[finder], verbose=0)
    assert finder.stop_reason in ("diverged", "non-finite")
    # "steepest" reads the slope of a curve whose start is mostly batch noise; it
    # is tested with numbers in test_schedules.py.
    for method in ("valley", "min_div10"):
        assert 1e-2 <= finder.suggestion(method) <= 1.0, (method, finder.suggestion(method))


@pytest.mark.backends
def test_one_instance_resets_across_fits():
    x, y = regression(24)
    model = linear_model()
    finder = LRRangeTest(1e-4, 1e-2, num_it=3, stop_div=False)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[finder], verbose=0)
    first = list(finder.lrs)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[finder], verbose=0)
    assert finder.lrs == first and len(finder.losses) == 3 and finder.iterations == [0, 1, 2]


@pytest.mark.backends
def test_short_data_spans_epochs_and_warns_when_it_runs_out():
    x, y = regression(16)
    model = linear_model()
    finder = LRRangeTest(1e-4, 1e-2, num_it=6, stop_div=False)
    # 2 batches per epoch: 3 epochs are enough, and the running-mean reset between epochs is handled.
    model.fit(x, y, batch_size=8, epochs=epochs_needed(6, 2), callbacks=[finder], verbose=0)
    assert len(finder.lrs) == 6 and finder.lrs[-1] == 1e-2
    assert all(math.isfinite(v) and v > 0 for v in finder.losses)
    with pytest.warns(RuntimeWarning, match="data ended after 2 of num_it=6"):
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[finder], verbose=0)


@pytest.mark.backends
def test_nan_at_the_first_step_stops_restores_and_warns():
    x, y = regression(16)
    model = linear_model()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    before = [np.array(v) for v in model.weights]
    x_bad = x.copy()
    x_bad[0, 0] = np.nan
    finder = LRRangeTest(1e-4, 1e-2, num_it=6)
    with pytest.warns(RuntimeWarning, match="very first batch"):
        model.fit(x_bad, y, batch_size=8, epochs=3, shuffle=False, callbacks=[finder], verbose=0)
    assert len(finder.lrs) == 1 and finder.stop_reason == "non-finite"
    for b, v in zip(before, model.weights):
        np.testing.assert_array_equal(np.array(v), b)
    with pytest.raises(ValueError, match="at least 2"):
        finder.suggestion()


@pytest.mark.backends
def test_refuses_a_schedule_learning_rate():
    x, y = regression(16)
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)
    model = linear_model(keras.optimizers.SGD(sched))
    with pytest.raises(ValueError, match="float `learning_rate`"):
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[LRRangeTest(num_it=2)], verbose=0)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]


def _generator(x, y, batch_size):
    while True:
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]


@pytest.mark.backends
@pytest.mark.parametrize("source", ["pydataset", "generator", "tf.data"])
def test_works_with_every_kind_of_data(source):
    x, y = regression(32)
    model = linear_model(make_optimizer("sgd", 0.01))
    finder = LRRangeTest(1e-4, 1e-1, num_it=6, stop_div=False)
    if source == "pydataset":
        data, kw = Batches(x, y, 8), {}
    elif source == "generator":
        data, kw = _generator(x, y, 8), {"steps_per_epoch": 4}
    else:
        if keras.backend.backend() != "tensorflow":
            pytest.skip("tf.data is the TensorFlow backend's pipeline")
        import tensorflow as tf

        data, kw = tf.data.Dataset.from_tensor_slices((x, y)).batch(8), {}
    model.fit(data, epochs=2, shuffle=False, callbacks=[finder], verbose=0, **kw)
    assert len(finder.lrs) == 6 and finder.lrs[-1] == 1e-1
    assert all(math.isfinite(v) for v in finder.losses)


def test_plots_return_figures_and_save(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    finder = LRRangeTest(1e-5, 1.0, num_it=40)
    # A synthetic curve: fill the record as fit would.
    finder.lrs = list(finder.schedule)
    finder.iterations = list(range(40))
    finder.losses = list(1.0 - 0.5 * np.tanh(np.linspace(-2, 2, 40)) + np.linspace(0, 2, 40) ** 4 / 4)
    finder.smoothed = list(smooth_losses(finder.losses, finder.beta))
    fig = finder.plot_lr()
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_xlabel() == "iteration"
    fig = finder.plot(n_skip=2, n_skip_end=2)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert len(ax.lines) == 2 and ax.get_legend() is not None  # curve + suggestion mark
    fig.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 0
