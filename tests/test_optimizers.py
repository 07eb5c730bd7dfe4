"""Differential learning rates on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from kit.training.optimizers import DifferentialSGD, group_multipliers, make_optimizer


def three_groups():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, name="early"),
            keras.layers.Dense(5, name="late"),
            keras.layers.Dense(2, name="head"),
        ],
        name="sequential",  # fixed, so variable paths do not depend on how many models came before
    )
    return model, [[model.layers[0]], [model.layers[1]], [model.layers[2]]]


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")


def test_group_multipliers():
    model, groups = three_groups()
    base, mult = group_multipliers(groups, np.array([1e-4, 1e-3, 1e-2]))
    assert base == 1e-2
    assert mult["sequential/early/kernel"] == pytest.approx(0.01)
    assert mult["sequential/late/bias"] == pytest.approx(0.1)
    assert mult["sequential/head/kernel"] == 1.0
    assert group_multipliers(groups, 0.1) == (0.1, {v.path: 1.0 for v in model.weights})
    assert group_multipliers(groups, [0, 0, 0])[0] == 0.0
    with pytest.raises(ValueError, match=r"len\(lrs\)=2 for len\(groups\)=3"):
        group_multipliers(groups, [1e-3, 1e-2])
    with pytest.raises(ValueError, match="lrs"):
        group_multipliers(groups, [1e-3, -1, 1e-2])
    with pytest.raises(ValueError, match="two layer groups"):
        group_multipliers([[model.layers[0]], [model.layers[0]]], [1e-3, 1e-2])


def test_make_optimizer_bad_input():
    with pytest.raises(ValueError, match=r"\['sgd', 'adam', 'adamw'\]. Received name='rmsprop'"):
        make_optimizer("rmsprop")
    with pytest.raises(ValueError, match="lr_multipliers"):
        make_optimizer("sgd", lr_multipliers={"a/kernel": -1})
    with pytest.raises(ValueError, match="momentum=1.5"):
        make_optimizer("sgd", momentum=1.5)


@pytest.mark.backends
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_zero_rate_groups_stay_untouched(name):
    model, groups = three_groups()
    base, mult = group_multipliers(groups, [0.0, 0.0, 0.05])
    opt = make_optimizer(name, base, mult)
    model.compile(opt, "mse")
    before = {v.path: np.array(v) for v in model.weights}
    x, y = data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # one step
    for v in model.weights:
        same = np.array_equal(np.array(v), before[v.path])
        assert same == ("head" not in v.path), v.path


@pytest.mark.backends
def test_multiplier_scales_the_step_exactly():
    # Plain SGD without momentum: the step of a variable is lr * factor * grad.
    x, y = data()
    steps = {}
    for factor in (1.0, 0.25):
        model, _ = three_groups()
        mult = {v.path: factor for v in model.layers[0].weights}
        model.compile(make_optimizer("sgd", 0.1, mult, momentum=0.0), "mse")
        before = np.array(model.layers[0].kernel)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        steps[factor] = np.array(model.layers[0].kernel) - before
    np.testing.assert_allclose(steps[0.25], 0.25 * steps[1.0], rtol=1e-4, atol=1e-7)


@pytest.mark.backends
@pytest.mark.parametrize("name, keras_cls", [("sgd", "SGD"), ("adam", "Adam")])
def test_without_multipliers_it_trains_like_keras(name, keras_cls):
    x, y = data()
    results = []
    for opt in (
        make_optimizer(name, 0.05, momentum=0.9),
        getattr(keras.optimizers, keras_cls)(0.05, **({"momentum": 0.9} if name == "sgd" else {"beta_1": 0.9})),
    ):
        model, _ = three_groups()
        model.compile(opt, "mse")
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
        results.append([np.array(v) for v in model.weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.backends
def test_config_round_trip_and_saving(tmp_path):
    model, groups = three_groups()
    base, mult = group_multipliers(groups, [1e-3, 1e-2, 1e-1])
    model.compile(make_optimizer("adamw", base, mult, weight_decay=0.01), "mse")
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer).__name__ == "DifferentialAdamW"
    assert loaded.optimizer.lr_multipliers == mult
    cfg = DifferentialSGD(0.1, momentum=0.5, lr_multipliers={"a": 0.5}).get_config()
    assert cfg["momentum"] == 0.5 and cfg["lr_multipliers"] == {"a": 0.5}
