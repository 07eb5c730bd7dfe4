"""Differential learning rates: one rate per layer group, on every Keras backend.

fast.ai's `learn.fit(np.array([lr/100, lr/10, lr]), ...)` trains the early body,
the late body and the head at different rates. Here the optimizer keeps one
base rate (which any schedule or callback may drive) and multiplies it, per
variable, by a factor looked up by the variable's `.path`.

The classes subclass Keras' SGD/Adam/AdamW and override `update_step`. A
subclass matters on the torch backend: Keras swaps the exact classes
`keras.optimizers.SGD`/`Adam`/`AdamW` for fused `torch._foreach_*` versions
that never call `update_step`, while any subclass keeps the per-variable path.
TensorFlow (through `tf.distribute`) and JAX (statelessly) call `update_step`
for every variable.

The momentum (SGD) and `beta_1` (Adam, AdamW) live in a tracked Keras variable
rather than a Python float, so `OneCycle` can change them between compiled
steps; a float would be frozen into the traced train step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import keras
from keras import ops

from kit._compat import learning_rate_source, sgd_momentum, trainable_variable, use_weight_decay
from kit.checks import check_choice, check_number

OPTIMIZER_NAMES = ("sgd", "adam", "adamw")


def _check_multipliers(lr_multipliers: Mapping[str, float] | None) -> dict[str, float]:
    if lr_multipliers is None:
        return {}
    if not isinstance(lr_multipliers, Mapping):
        raise ValueError(
            "`lr_multipliers` must be a dict mapping variable paths to factors. "
            f"Received lr_multipliers={lr_multipliers!r}"
        )
    out = {}
    for path, factor in lr_multipliers.items():
        try:
            f = float(factor)
        except (TypeError, ValueError):
            f = float("nan")
        if not isinstance(path, str) or not (math.isfinite(f) and f >= 0):
            raise ValueError(
                f"`lr_multipliers` maps variable paths (str) to finite factors >= 0. Received {path!r}: {factor!r}"
            )
        out[path] = f
    return out


def _momentum_var(optimizer: keras.optimizers.Optimizer, name: str, value: float) -> keras.Variable:
    with keras.name_scope(optimizer.name, caller=optimizer):
        var = keras.Variable(
            value,
            name=name,
            dtype=keras.config.floatx(),
            trainable=False,
            aggregation="only_first_replica",
        )
    # The caller assigns it to an attribute, which tracks it: it becomes part of
    # `optimizer.variables`, so the JAX trainer threads it through the stateless
    # step and saving/restoring the optimizer includes it.
    return var


class _LRMultipliers:
    """Mixin: scales the rate of each variable by `lr_multipliers[variable.path]`."""

    def multiplier(self, variable) -> float:
        """The factor applied to `variable`'s rate (1.0 when its path is not listed)."""
        path = getattr(variable, "path", None)
        if path is None or path not in self.lr_multipliers:
            # Under TensorFlow `update_step` receives the tf.Variable; map it back.
            variable = trainable_variable(self, variable)
            path = variable.path
        return self.lr_multipliers.get(path, 1.0)

    def _scaled_rate(self, variable, learning_rate):
        factor = self.multiplier(variable)
        if factor == 1.0:
            # Untouched, so a factor of 1 is bit-for-bit the plain optimizer.
            return learning_rate
        return ops.multiply(ops.cast(learning_rate, variable.dtype), ops.cast(factor, variable.dtype))

    def update_step(self, gradient, variable, learning_rate):
        # A factor of 0 freezes the variable: no step and no slot update, so even
        # momentum built up earlier cannot move it.
        if self.multiplier(variable) == 0.0:
            return
        super().update_step(gradient, variable, self._scaled_rate(variable, learning_rate))

    def _apply_weight_decay(self, variables):
        # Decoupled weight decay scales with each variable's own rate (Keras'
        # version uses the base rate for all).
        if self.weight_decay is None:
            return
        for variable in variables:
            if not use_weight_decay(self, variable) or self.multiplier(variable) == 0.0:
                continue
            lr = self._scaled_rate(variable, ops.cast(self.learning_rate, variable.dtype))
            wd = ops.cast(self.weight_decay, variable.dtype)
            variable.assign(variable - variable * wd * lr)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


@keras.saving.register_keras_serializable(package="kit")
class DifferentialSGD(_LRMultipliers, keras.optimizers.SGD):
    """SGD with a per-variable rate factor and a settable momentum.

    Example:
    >>> opt = DifferentialSGD(0.1, momentum=0.9, lr_multipliers={"dense/kernel": 0.1})

    Args:
        learning_rate: Float or schedule. Base rate.
        momentum: Float in [0, 1]. Keras-style momentum; kept in `momentum_variable`.
        lr_multipliers: Dict or None. Variable `.path` -> factor >= 0 (default 1).
        **kwargs: Passed to `keras.optimizers.SGD`.
    """

    def __init__(self, learning_rate=0.01, momentum: float = 0.0, lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), **kwargs)
        self.lr_multipliers = _check_multipliers(lr_multipliers)
        self.momentum_variable = _momentum_var(self, "momentum", self.momentum) if self.momentum else None

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum_variable is None or self.multiplier(variable) == 0.0:
            return super().update_step(gradient, variable, learning_rate)
        # Keras' SGD momentum update, reading momentum from the variable.
        learning_rate = ops.cast(self._scaled_rate(variable, learning_rate), variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        momentum = ops.cast(self.momentum_variable, variable.dtype)
        m = sgd_momentum(self, variable)
        self.assign(m, ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)))
        if self.nesterov:
            self.assign_add(
                variable,
                ops.subtract(ops.multiply(m, momentum), ops.multiply(gradient, learning_rate)),
            )
        else:
            self.assign_add(variable, m)


class _AdamMomentum:
    """Mixin: `beta_1` held in a variable (Adam's update reads it through ops)."""

    def _make_beta_1_variable(self):
        self._beta_1_value = float(self.beta_1)
        self.momentum_variable = _momentum_var(self, "beta_1", self._beta_1_value)
        # Keras' Adam.update_step computes with `self.beta_1` through ops and
        # `1 - beta_1`, both of which accept a variable.
        self.beta_1 = self.momentum_variable

    def get_config(self):
        config = super().get_config()
        config["beta_1"] = float(ops.convert_to_numpy(self.momentum_variable))
        return config


@keras.saving.register_keras_serializable(package="kit")
class DifferentialAdam(_AdamMomentum, _LRMultipliers, keras.optimizers.Adam):
    """Adam with a per-variable rate factor and a settable `beta_1`.

    Args:
        learning_rate: Float or schedule. Base rate.
        lr_multipliers: Dict or None. Variable `.path` -> factor >= 0 (default 1).
        **kwargs: Passed to `keras.optimizers.Adam`.
    """

    def __init__(self, learning_rate=0.001, lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.lr_multipliers = _check_multipliers(lr_multipliers)
        self._make_beta_1_variable()


@keras.saving.register_keras_serializable(package="kit")
class DifferentialAdamW(_AdamMomentum, _LRMultipliers, keras.optimizers.AdamW):
    """AdamW with a per-variable rate factor (weight decay scaled too) and a settable `beta_1`.

    Args:
        learning_rate: Float or schedule. Base rate.
        lr_multipliers: Dict or None. Variable `.path` -> factor >= 0 (default 1).
        **kwargs: Passed to `keras.optimizers.AdamW`.
    """

    def __init__(self, learning_rate=0.001, lr_multipliers=None, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.lr_multipliers = _check_multipliers(lr_multipliers)
        self._make_beta_1_variable()


def make_optimizer(
    name: str = "sgd",
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.01,
    lr_multipliers: dict[str, float] | None = None,
    momentum: float = 0.9,
    **kwargs,
) -> keras.optimizers.Optimizer:
    """An SGD/Adam/AdamW optimizer with optional differential learning rates.

    Each trainable variable's step uses `learning_rate * lr_multipliers.get(
    variable.path, 1.0)`; a factor of 0 leaves the variable untouched. The base
    rate stays an ordinary (schedulable) optimizer rate, so `SGDR`, `OneCycle`
    and `LRRangeTest` drive all groups together. Paths that match no trainable
    variable are ignored (a frozen group has no trainable variables).

    Example:
    >>> base, mult = group_multipliers([body.weights, head.weights], [1e-3, 1e-2])
    >>> model.compile(make_optimizer("sgd", base, mult), "sparse_categorical_crossentropy")

    Args:
        name: String. One of "sgd", "adam", "adamw".
        learning_rate: Float or `LearningRateSchedule`. Base rate.
        lr_multipliers: Dict or None. Variable `.path` -> factor >= 0.
        momentum: Float in [0, 1]. SGD momentum, or `beta_1` for Adam/AdamW.
        **kwargs: Passed to the Keras optimizer (e.g. `nesterov`, `weight_decay`).
    """
    key = check_choice("name", str(name).lower(), OPTIMIZER_NAMES)
    momentum = check_number("momentum", momentum, min=0, max=1)
    if key == "sgd":
        return DifferentialSGD(learning_rate, momentum=momentum, lr_multipliers=lr_multipliers, **kwargs)
    if "beta_1" in kwargs:
        raise ValueError(f"Pass Adam's beta_1 as `momentum`, not `beta_1`. Received beta_1={kwargs['beta_1']!r}")
    cls = DifferentialAdam if key == "adam" else DifferentialAdamW
    return cls(learning_rate, lr_multipliers=lr_multipliers, beta_1=float(momentum), **kwargs)


def _group_variables(group) -> list:
    """A group as variables: accepts variables and layers (expanded to their weights)."""
    out = []
    for item in group:
        if isinstance(item, keras.layers.Layer):
            out.extend(item.weights)
        elif hasattr(item, "path"):
            out.append(item)
        else:
            raise ValueError(f"A layer group holds keras.Variable or keras.layers.Layer items. Received {item!r}")
    return out


def group_multipliers(
    groups: Sequence[Sequence[keras.Variable | keras.layers.Layer]],
    lrs: float | Sequence[float],
) -> tuple[float, dict[str, float]]:
    """Per-group rates as a base rate and per-variable factors for `make_optimizer`.

    The base rate is the largest of `lrs` (the head's in the lesson), so every
    factor lies in [0, 1]; when all rates are 0 the base is 0 and every factor 1.
    A single number gives every group that rate.

    Example:
    >>> base, mult = group_multipliers([[w_early], [w_late], [w_head]], [1e-4, 1e-3, 1e-2])
    >>> base, mult[w_early.path]
    (0.01, 0.01)

    Args:
        groups: List of layer groups, each a list of `keras.Variable` or layers.
        lrs: Float, or a sequence with one rate >= 0 per group.
    """
    groups = list(groups)
    if isinstance(lrs, (int, float)) or getattr(lrs, "ndim", None) == 0:
        lrs = [float(lrs)] * len(groups)
    lrs = [float(x) for x in lrs]
    if len(lrs) != len(groups):
        raise ValueError(
            f"`lrs` needs one rate per layer group. Received len(lrs)={len(lrs)} for "
            f"len(groups)={len(groups)}: lrs={lrs}"
        )
    if not all(math.isfinite(x) and x >= 0 for x in lrs):
        raise ValueError(f"`lrs` must all be finite and >= 0. Received lrs={lrs}")
    base = max(lrs) if lrs else 0.0
    multipliers: dict[str, float] = {}
    for group, lr in zip(groups, lrs):
        factor = lr / base if base > 0 else 1.0
        for var in _group_variables(group):
            if multipliers.get(var.path, factor) != factor:
                raise ValueError(
                    f"Variable {var.path!r} is in two layer groups with different rates "
                    f"({multipliers[var.path] * base} and {lr})."
                )
            multipliers[var.path] = factor
    return base, multipliers


def sync_model_state(model: keras.Model) -> None:
    """Makes the model's Keras variables current in the middle of `fit`.

    The JAX trainer keeps weights, optimizer and metric state outside the
    variables between batches and only writes them back at the end of an
    epoch; a callback that reads or assigns a variable mid-epoch must sync
    first. Syncing also makes the next step read the variables again, so a
    rate assigned now is used. On TensorFlow and torch this is a no-op.
    """
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        sync()


def inner_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """The optimizer that does the update: the one inside a `LossScaleOptimizer`.

    Under the mixed_float16 policy `compile` wraps the optimizer in Keras' LossScaleOptimizer,
    which forwards the learning rate but not the kit's `momentum_variable` or the rate's schedule.
    """
    return getattr(optimizer, "inner_optimizer", optimizer)


def schedule_error(optimizer) -> ValueError | None:
    optimizer = inner_optimizer(optimizer)
    lr = learning_rate_source(optimizer)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(lr) and not isinstance(lr, keras.Variable)
    ):
        return ValueError(
            f"This callback sets the learning rate of {type(optimizer).__name__} every batch, but "
            f"the optimizer was created with a schedule ({type(lr).__name__}). Create it with a "
            "float `learning_rate` and let the callback do the scheduling."
        )
    return None


def set_learning_rate(model: keras.Model, lr: float) -> None:
    """Sets `model.optimizer`'s base rate between batches, on every backend.

    Args:
        model: A compiled `keras.Model` whose optimizer has a float learning rate.
        lr: Float. The new base rate.

    Raises:
        ValueError: the optimizer's rate is a `LearningRateSchedule`.
    """
    error = schedule_error(model.optimizer)
    if error is not None:
        raise error
    sync_model_state(model)
    model.optimizer.learning_rate = float(lr)


def get_learning_rate(model: keras.Model) -> float:
    """The optimizer's current base rate as a Python float."""
    sync_model_state(model)
    return float(ops.convert_to_numpy(model.optimizer.learning_rate))


def set_momentum(model: keras.Model, momentum: float) -> bool:
    """Sets the momentum (SGD) or `beta_1` (Adam) of a kit optimizer between batches.

    Only optimizers with a `momentum_variable` (those of `make_optimizer` with a
    non-zero momentum) can change momentum inside a compiled train step; for
    others this returns False and changes nothing.

    Args:
        model: A compiled `keras.Model`.
        momentum: Float in [0, 1].
    """
    var = getattr(inner_optimizer(model.optimizer), "momentum_variable", None)
    if var is None:
        return False
    sync_model_state(model)
    var.assign(float(momentum))
    return True
