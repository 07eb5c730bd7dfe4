"""Each shim of `kit._compat` run for real, asserting what the kit relies on.

A Keras (or JAX, TensorFlow) release that changes one of these private APIs fails here, with a message
naming the shim; `kit/_compat.py` says what to do then.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from kit import _compat
from kit.training.optimizers import DifferentialSGD, sync_model_state

ROOT = Path(__file__).resolve().parents[1]
RELEASE = f"Keras {keras.__version__} on {keras.backend.backend()}"


def small_model(name: str = "m") -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="dense"), keras.layers.BatchNormalization(name="bn")],
        name=name,
    )


def h5_datasets(path: Path) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None)
    return out


@pytest.mark.backends
def test_save_weights_h5_writes_the_file_save_weights_writes(tmp_path):
    model = small_model()
    for v in model.weights:
        v.assign(np.random.default_rng(1).normal(size=v.shape).astype(v.dtype))
    buf = io.BytesIO()
    _compat.save_weights_h5(model, buf)
    ours = tmp_path / "ours.weights.h5"
    ours.write_bytes(buf.getvalue())
    model.save_weights(tmp_path / "keras.weights.h5")

    expected = h5_datasets(tmp_path / "keras.weights.h5")
    assert expected, f"kit._compat.save_weights_h5: {RELEASE}'s save_weights wrote no datasets"
    assert h5_datasets(ours) == expected, (
        f"kit._compat.save_weights_h5: under {RELEASE} the buffer's datasets differ from save_weights' file"
    )
    fresh = small_model("m")
    fresh.load_weights(ours)
    for a, b in zip(model.weights, fresh.weights):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            err_msg=f"kit._compat.save_weights_h5: {a.path} did not round-trip through load_weights under {RELEASE}",
        )


class Block(keras.layers.Layer):
    """A custom layer holding a BatchNormalization as an attribute (as backbones' blocks do)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Dense(2, name="block_dense")
        self.norm = keras.layers.BatchNormalization(name="block_bn")

    def call(self, x):
        return self.norm(self.conv(x))


@pytest.mark.backends
def test_flatten_layers_reaches_nested_models_and_custom_layers():
    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, keras.layers.BatchNormalization(name="inner_bn")(inner_in), name="inner")
    model = keras.Sequential([keras.Input((3,)), inner, Block(name="block"), keras.layers.Dense(1, name="head")])
    names = [layer.name for layer in _compat.flatten_layers(model)]
    assert model.name not in names, f"kit._compat.flatten_layers: {RELEASE} includes the model itself"
    assert {"inner", "inner_bn", "block", "block_dense", "block_bn", "head"} <= set(names), (
        f"kit._compat.flatten_layers: under {RELEASE} the nested layers are not all listed: {names}"
    )
    bns = [layer.name for layer in _compat.flatten_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert sorted(bns) == ["block_bn", "inner_bn"], f"kit._compat.flatten_layers: {RELEASE} found BatchNorms {bns}"


@pytest.mark.backends
def test_loss_tracker_sums_loss_times_batch_size():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    assert _compat.loss_tracker(model) is None, f"kit._compat.loss_tracker: {RELEASE} has one before compile"
    # A rate of 0 keeps the weights, so each batch's loss can be computed afterwards.
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    y = np.random.default_rng(1).normal(size=(6, 1)).astype("float32")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            sync_model_state(self.model)
            tracker = _compat.loss_tracker(self.model)
            assert tracker is not None, f"kit._compat.loss_tracker: {RELEASE} gives no loss tracker during fit"
            seen.append(
                (float(keras.ops.convert_to_numpy(tracker.total)), float(keras.ops.convert_to_numpy(tracker.count)))
            )

    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    tracker = _compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss", (
        f"kit._compat.loss_tracker: {RELEASE}'s model.metrics[0] is not the loss tracker: {model.metrics}"
    )
    assert [c for _, c in seen] == [4.0, 6.0], (
        f"kit._compat.loss_tracker: under {RELEASE} the tracker's count is not the samples seen: {seen}"
    )
    pred = keras.ops.convert_to_numpy(model.predict(x, verbose=0))
    per_sample = ((pred - y) ** 2).mean(axis=1)
    (t1, c1), (t2, c2) = seen
    np.testing.assert_allclose(
        [t1 / c1, (t2 - t1) / (c2 - c1)],
        [per_sample[:4].mean(), per_sample[4:].mean()],
        rtol=1e-5,
        err_msg=f"kit._compat.loss_tracker: under {RELEASE} the total's differences are not each batch's mean loss",
    )


@pytest.mark.backends
def test_variable_index_maps_variables_to_their_slots():
    a = keras.Variable(np.ones((2, 3), "float32"), name="a")
    b = keras.Variable(np.ones((4,), "float32"), name="b")
    opt = keras.optimizers.SGD(0.1, momentum=0.9)
    opt.build([a, b])
    assert [_compat.variable_index(opt, v) for v in (a, b)] == [0, 1], (
        f"kit._compat.variable_index: {RELEASE} no longer indexes variables in build order"
    )
    natives = [a, b]
    if keras.backend.backend() == "tensorflow":
        # TensorFlow's update_step receives the tf.Variable; it must map to the same index.
        natives = [a.value, b.value]
    for v, native in zip((a, b), natives):
        assert _compat.trainable_variable(opt, native) is v, (
            f"kit._compat.trainable_variable: under {RELEASE} {native!r} does not map back to {v.path}"
        )
        slot = _compat.sgd_momentum(opt, native)
        assert tuple(slot.shape) == tuple(v.shape), f"kit._compat.sgd_momentum: {RELEASE} gave {slot.path} for {v.path}"

    grads = [np.full((2, 3), 2.0, "float32"), np.full((4,), 3.0, "float32")]
    opt.apply([keras.ops.convert_to_tensor(g) for g in grads], [a, b])
    # Keras' SGD: m = momentum * m - lr * g, starting from 0.
    for v, g in zip((a, b), grads):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(_compat.sgd_momentum(opt, v)),
            -0.1 * g,
            rtol=1e-6,
            err_msg=f"kit._compat.sgd_momentum: under {RELEASE} the slot found for {v.path} is not the one SGD updates",
        )


@pytest.mark.backends
def test_use_weight_decay_follows_exclusions():
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    bias = keras.Variable(np.ones((2,), "float32"), name="bias")
    opt = keras.optimizers.AdamW(0.1, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.build([kernel, bias])
    assert _compat.use_weight_decay(opt, kernel) is True and _compat.use_weight_decay(opt, bias) is False, (
        f"kit._compat.use_weight_decay: {RELEASE} no longer reports exclude_from_weight_decay's exclusions"
    )


@pytest.mark.backends
def test_keras_calls_the_apply_weight_decay_hook():
    # kit.training.optimizers overrides BaseOptimizer._apply_weight_decay so each variable decays at its own
    # rate; if Keras stopped calling the hook, Keras' decay at the base rate would run instead.
    kernel = keras.Variable(np.ones((2, 2), "float32"), name="kernel")
    opt = DifferentialSGD(0.1, weight_decay=0.5, lr_multipliers={kernel.path: 0.5})
    opt.apply([keras.ops.zeros((2, 2))], [kernel])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kernel),
        np.full((2, 2), 1 - 0.5 * 0.1 * 0.5),
        rtol=1e-6,
        err_msg=f"{RELEASE} no longer calls BaseOptimizer._apply_weight_decay (overridden by kit.training.optimizers)",
    )


@pytest.mark.backends
def test_learning_rate_source_tells_a_float_from_a_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)

    def rate():
        return 0.1

    plain = _compat.learning_rate_source(keras.optimizers.SGD(0.25))
    # What kit.training.optimizers.schedule_error tells apart: a float rate is kept as a variable, neither a
    # schedule nor a callable (Keras 3.5's optimizer variables are not instances of the exported keras.Variable).
    is_schedule = isinstance(plain, keras.optimizers.schedules.LearningRateSchedule)
    is_callable_rate = callable(plain) and not isinstance(plain, keras.Variable)
    assert not is_schedule and not is_callable_rate and float(keras.ops.convert_to_numpy(plain)) == 0.25, (
        f"kit._compat.learning_rate_source: {RELEASE} keeps a float rate as {plain!r}, not a variable holding it"
    )
    assert _compat.learning_rate_source(keras.optimizers.SGD(schedule)) is schedule, (
        f"kit._compat.learning_rate_source: {RELEASE} does not keep the schedule object"
    )
    assert _compat.learning_rate_source(keras.optimizers.SGD(rate)) is rate, (
        f"kit._compat.learning_rate_source: {RELEASE} does not keep the callable rate"
    )


def run_python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-2:]


def test_jax_runtime_started_after_the_first_computation_only():
    pytest.importorskip("jax")
    code = (
        "import jax\nfrom kit import _compat\nbefore = _compat.jax_runtime_started()\n"
        "jax.numpy.ones(2).block_until_ready()\nprint(before, _compat.jax_runtime_started())"
    )
    assert run_python(code) == ["False", "True"], (
        "kit._compat.jax_runtime_started: jax._src.xla_bridge._backends no longer tells whether JAX has started"
    )


def test_tensorflow_runtime_started_after_the_first_computation_only():
    pytest.importorskip("tensorflow")
    code = (
        "import tensorflow as tf\nfrom kit import _compat\nbefore = _compat.tensorflow_runtime_started()\n"
        "tf.constant(1.0) + 1\nprint(before, _compat.tensorflow_runtime_started())"
    )
    assert run_python(code) == ["False", "True"], (
        "kit._compat.tensorflow_runtime_started: tensorflow.python.eager.context._context no longer tells "
        "whether TensorFlow has started"
    )


def test_compat_imports_no_framework():
    code = (
        "import sys\nimport kit._compat\n"
        "print('LOADED', sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax', 'torch'}))"
    )
    assert run_python(code) == ["LOADED", "[]"], "kit._compat imports a framework at import time"
