"""SGDR and OneCycle callbacks on a tiny model, under every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kit.training.callbacks.one_cycle import OneCycle
from kit.training.callbacks.sgdr import SGDR
from kit.training.optimizers import make_optimizer
from kit.training.schedules import one_cycle_lr, one_cycle_momentum, sgdr_lr, sgdr_total_epochs


def data(n=12):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype("float32"), rng.normal(size=(n, 1)).astype("float32")


def model_with(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer, "mse")
    return model


class Probe(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.lrs, self.moms, self.epoch_lrs = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        opt = self.model.optimizer
        self.lrs.append(float(keras.ops.convert_to_numpy(opt.learning_rate)))
        var = getattr(opt, "momentum_variable", None)
        if var is not None:
            self.moms.append(float(keras.ops.convert_to_numpy(var)))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_lrs.append(logs["learning_rate"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="cycle_mult=0"):
        SGDR(0.1, cycle_mult=0)
    with pytest.raises(ValueError, match="cycle_save_name='x.h5'"):
        SGDR(0.1, cycle_save_name="x.h5")
    with pytest.raises(ValueError, match="base_lr=-1"):
        SGDR(-1)
    with pytest.raises(ValueError, match="pct_start=0"):
        OneCycle(0.1, pct_start=0)


@pytest.mark.backends
def test_sgdr_sets_the_closed_form_every_batch_and_saves_each_cycle(tmp_path):
    x, y = data(12)  # 3 batches of 4 per epoch
    ended = []
    sgdr = SGDR(
        0.1,
        cycle_len=1,
        cycle_mult=2,
        min_lr=0.001,
        cycle_save_name=str(tmp_path / "cyc_{cycle}.weights.h5"),
        on_cycle_end=ended.append,
    )
    probe = Probe()
    model = model_with(keras.optimizers.SGD(0.5))
    epochs = sgdr_total_epochs(3, 1, 2)
    model.fit(x, y, batch_size=4, epochs=epochs, callbacks=[sgdr, probe], verbose=0, shuffle=False)
    expected = [sgdr_lr(s, 0.1, 3, 1, 2, 0.001) for s in range(epochs * 3)]
    assert sgdr.history == expected
    np.testing.assert_allclose(probe.lrs, expected, rtol=1e-6)
    assert probe.epoch_lrs[0] == expected[2]
    assert ended == [0, 1, 2]
    assert sgdr.saved == [str(tmp_path / f"cyc_{i}.weights.h5") for i in range(3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cyc_0.weights.h5", "cyc_1.weights.h5", "cyc_2.weights.h5"]
    # The last cycle's file holds the final weights.
    other = model_with(keras.optimizers.SGD(0.5))
    other.load_weights(sgdr.saved[-1])
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    # State resets: a second fit starts the schedule again from the optimizer's current rate.
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[SGDR()], verbose=0)
    sgdr2 = SGDR(cycle_len=1)
    model.optimizer.learning_rate = 0.2
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[sgdr2], verbose=0)
    assert sgdr2.history[0] == pytest.approx(0.2)
    model.fit(x, y, batch_size=4, epochs=1, callbacks=[sgdr], verbose=0)
    assert len(sgdr.history) == 3 and ended == [0, 1, 2, 0]


@pytest.mark.backends
def test_one_cycle_sets_rate_and_momentum():
    x, y = data(12)
    cycle, probe = OneCycle(0.1), Probe()
    model = model_with(make_optimizer("sgd", 0.01, momentum=0.9))
    model.fit(x, y, batch_size=4, epochs=2, callbacks=[cycle, probe], verbose=0)
    np.testing.assert_allclose(cycle.lrs, [one_cycle_lr(s, 6, 0.1) for s in range(6)])
    np.testing.assert_allclose(probe.lrs, cycle.lrs, rtol=1e-6)
    np.testing.assert_allclose(probe.moms, [one_cycle_momentum(s, 6) for s in range(6)], rtol=1e-6)


@pytest.mark.backends
def test_one_cycle_warns_when_momentum_cannot_cycle():
    x, y = data(8)
    model = model_with(keras.optimizers.SGD(0.01, momentum=0.9))
    with pytest.warns(RuntimeWarning, match="only the learning rate cycles"):
        model.fit(x, y, batch_size=4, epochs=1, callbacks=[OneCycle(0.1)], verbose=0)
