"""The one place the kit touches Keras', JAX's and TensorFlow's private APIs.

Keras has no public door for a few things the kit needs (the weights file written to a buffer, the
optimizer's map from a variable to its slots, every nested layer of a model), and JAX and TensorFlow
none for "has the runtime started?". Each such use is one small function here, and
`tests/test_compat.py` checks each for real, asserting the exact behaviour the kit relies on, so a
release that changes one fails a test that names the shim rather than the kit breaking quietly.

Checked with TensorFlow 2.21, JAX 0.10.2 and torch 2.13: `tests/test_compat.py` passes on Keras 3.10.0 and
3.15.1 on all three backends and on 3.12.0, 3.13.2, 3.14.1 on TensorFlow, the range `pyproject.toml` allows
(`>=3.10,<3.16`). It passes on 3.5.0 and 3.8.0 too (TensorFlow), but their JAX trainer calls
`jax.spmd_mode`, which JAX 0.10 no longer has, so those releases are outside the bound.

When a shim breaks: read the new release's source for the same name, adapt the shim here (branch on
`keras.__version__` only if both behaviours must be served), keep its test's assertions, and move the
Keras bound in `pyproject.toml` to the releases the tests then pass on. Nothing outside this module
may reach into those private names.

Besides calling private names, `kit.training.optimizers` overrides one private hook,
`BaseOptimizer._apply_weight_decay` (Keras calls it before each step); `tests/test_compat.py` checks
that Keras still calls it.

This module imports no framework at import time (`import kit` loads none): each function imports
what it needs.
"""

from __future__ import annotations

import io
import sys
from typing import Any


def save_weights_h5(model, buffer: io.BytesIO) -> None:
    """Writes `model`'s weights into `buffer` as the bytes of a `.weights.h5` file.

    The same two calls `model.save_weights` makes (`saving_lib.H5IOStore` and `saving_lib._save_state`),
    with a buffer instead of a path, so `kit.training.weights` can put the bytes on disk itself and a
    full disk is an ordinary `OSError`. The result loads with `model.load_weights`.

    Private API: `keras.src.saving.saving_lib.H5IOStore(io.BytesIO, mode="w")` and
    `saving_lib._save_state(saveable, weights_store, assets_store, inner_path, visited_saveables)`.
    Checked on Keras 3.5.0-3.15.1. If it breaks: look at what `saving_lib.save_weights_only` does in
    the new release and do the same here with the buffer.

    Args:
        model: A built `keras.Model`.
        buffer: `io.BytesIO`. Receives the file's bytes.
    """
    from keras.src.saving import saving_lib

    store = saving_lib.H5IOStore(buffer, mode="w")
    try:
        saving_lib._save_state(model, weights_store=store, assets_store=None, inner_path="", visited_saveables=set())
    finally:
        store.close()


def flatten_layers(model) -> list:
    """Every layer inside `model` at any depth (nested models' and custom layers' sublayers too), not `model`.

    `model.layers` lists only the top level; the kit needs every `BatchNormalization` of a backbone.

    Private API: `keras.Layer._flatten_layers(include_self=False, recursive=True)`.
    Checked on Keras 3.5.0-3.15.1. If it breaks: walk the layer tree the way the new release's
    `Layer._flatten_layers` (or a public replacement) does.
    """
    return list(model._flatten_layers(include_self=False, recursive=True))


def loss_tracker(model):
    """The compiled model's loss tracker (a `keras.metrics.Mean` named "loss"), or None.

    It holds `total` (the sum of loss * batch size so far this epoch) and `count` (the samples), so
    the difference between two batches gives the later batch's own mean loss.

    Public API: `model.metrics`, whose first entry is the loss tracker once the model is compiled.
    `Mean.total` / `Mean.count` are its (undocumented) variables. Checked on Keras 3.5.0-3.15.1.
    If it breaks: find where `Trainer.compute_loss` records the loss in the new release.
    """
    import keras

    if not getattr(model, "compiled", False):
        return None
    metrics = model.metrics
    first = metrics[0] if metrics else None
    if isinstance(first, keras.metrics.Mean) and first.name == "loss":
        return first
    return None


def variable_index(optimizer, variable) -> int:
    """The position of `variable` in the optimizer's variable list, and so of its slots (`momentums[i]`).

    Accepts a `keras.Variable` or, under TensorFlow, the `tf.Variable` that `update_step` receives.

    Private API: `BaseOptimizer._get_variable_index(variable)` (TensorFlow's optimizer maps a
    `tf.Variable` through its `_var_key`). Checked on Keras 3.5.0-3.15.1. If it breaks: match by
    `variable.path` against the optimizer's built variables.
    """
    return optimizer._get_variable_index(variable)


def trainable_variable(optimizer, variable):
    """The `keras.Variable` the optimizer was built with for `variable` (which may be a `tf.Variable`).

    Private API: `BaseOptimizer._trainable_variables` (the list `build(variables)` stored) indexed by
    `variable_index`. Checked on Keras 3.5.0-3.15.1. If it breaks: keep the list passed to
    `build` in the kit's optimizer subclass.
    """
    return optimizer._trainable_variables[variable_index(optimizer, variable)]


def sgd_momentum(optimizer, variable):
    """The momentum slot (a `keras.Variable`) of `variable` in a built `keras.optimizers.SGD`.

    Private API: `SGD.momentums`, one slot per trainable variable in build order, indexed by
    `variable_index`. Checked on Keras 3.5.0-3.15.1. If it breaks: see how the new release's
    `SGD.update_step` finds the momentum and do the same.
    """
    return optimizer.momentums[variable_index(optimizer, variable)]


def use_weight_decay(optimizer, variable) -> bool:
    """Whether the optimizer's weight decay applies to `variable` (not excluded by `exclude_from_weight_decay`).

    Private API: `BaseOptimizer._use_weight_decay(variable)`. Checked on Keras 3.5.0-3.15.1.
    If it breaks: read the exclusions the new release's `exclude_from_weight_decay` stores.
    """
    return optimizer._use_weight_decay(variable)


def learning_rate_source(optimizer) -> Any:
    """What the optimizer was given as its rate: a `keras.Variable` for a float, else the schedule or callable.

    `optimizer.learning_rate` evaluates a schedule instead of returning it, so it cannot tell them apart.

    Private API: `BaseOptimizer._learning_rate`. Checked on Keras 3.5.0-3.15.1. If it breaks:
    `optimizer.get_config()["learning_rate"]` is a float for a plain rate and a dict otherwise.
    """
    return getattr(optimizer, "_learning_rate", None)


def jax_runtime_started() -> bool:
    """Whether JAX has started a backend (its runtime and thread pools) in this process.

    Reads `sys.modules` only: never imports JAX, and importing JAX alone starts nothing.

    Private API: `jax._src.xla_bridge._backends`, the dict of started backends (empty until the
    first computation). Checked on JAX 0.10.2. If it breaks: look for where the new release's
    `jax.devices()` caches its backends.
    """
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(xla_bridge is not None and getattr(xla_bridge, "_backends", None))


def tensorflow_runtime_started() -> bool:
    """Whether TensorFlow has started its eager runtime (and thread pools) in this process.

    Reads `sys.modules` only: never imports TensorFlow, and importing TensorFlow alone starts nothing.

    Private API: `tensorflow.python.eager.context._context._context_handle`, set when the eager
    context initializes. Checked on TensorFlow 2.21. If it breaks: look at what the new release's
    `context.ensure_initialized()` sets.
    """
    tf_context = sys.modules.get("tensorflow.python.eager.context")
    ctx = getattr(tf_context, "_context", None)
    return ctx is not None and getattr(ctx, "_context_handle", None) is not None
