"""float16 where Kaggle's T4s put it: the optimizer reset, loss scaling's skipped steps, divergence,
checkpoints; devices and precision owned by the learner from its construction (issue 18).

The whole lesson under every policy on 1 and 2 devices is tests/test_distribute.py's matrix; these
are the single-device facts, on every backend.
"""

import contextlib

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model
from kit.models.archs import build_body, build_head
from kit.training.callbacks.divergence import DivergedError
from kit.training.device import precision
from kit.training.distribute import OnDevices, Placement
from kit.training.learner import ConvLearner
from kit.training.optimizers import inner_optimizer, set_momentum

pytestmark = pytest.mark.backends
SZ = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("fp16"), n_train=16, n_valid=8)


def _data(folder):
    return ImageClassifierData.from_paths(folder, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False, num_workers=1)


def _learner(folder, policy="mixed_float16"):
    keras.utils.set_random_seed(0)
    return ConvLearner.pretrained(tiny, _data(folder), precompute=True, weights=None, mixed_precision=policy)


def _value(v) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(v)))


class _LossScale(keras.callbacks.Callback):
    """Sets the loss scale as training begins (after the learner's optimizer reset)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def on_train_begin(self, logs=None):
        self.model.optimizer.dynamic_scale.assign(self.scale)


def test_the_lessons_second_cell_runs_under_float16(folder):
    """fit, fit again, lr_find, fit: the second fit once crashed assigning the inner optimizer's
    variables to the LossScaleOptimizer's (every value shifted by two)."""
    learn = _learner(folder)
    assert learn.mixed_precision == "mixed_float16"
    for _ in range(2):
        val_loss, acc = learn.fit(1e-2, 1, verbose=False)
        assert np.isfinite(val_loss)
    learn.lr_find(num_it=8)
    assert np.isfinite(learn.fit(1e-2, 1, verbose=False)[0])
    opt = learn.head.optimizer
    assert isinstance(opt, keras.optimizers.LossScaleOptimizer)


def test_a_second_fit_starts_from_a_fresh_optimizer_and_the_initial_loss_scale(folder):
    learn = _learner(folder)
    learn.fit(1e-2, 1, verbose=False, callbacks=[_LossScale(2.0**30)])  # every step skipped: the scale halves
    opt = learn.head.optimizer
    assert _value(opt.dynamic_scale) < 2.0**30
    fresh = []
    learn.fit(
        1e-2,
        1,
        verbose=False,
        callbacks=[
            keras.callbacks.LambdaCallback(
                on_train_begin=lambda logs: fresh.extend(
                    [_value(opt.dynamic_scale), _value(opt.step_counter), _value(inner_optimizer(opt).iterations)]
                )
            )
        ],
    )
    assert fresh == [opt.initial_scale, 0.0, 0.0]


def test_loss_scalings_skipped_steps_never_trip_the_divergence_guard(folder):
    learn = _learner(folder)
    w0 = [np.array(keras.ops.convert_to_numpy(v)) for v in learn.head.trainable_weights]
    # 2**22: the scaled gradients overflow float16 at first, so Keras skips steps and halves the scale.
    val_loss, _ = learn.fit(1e-2, 3, verbose=False, callbacks=[_LossScale(2.0**22)])
    opt = learn.head.optimizer
    assert _value(opt.dynamic_scale) < 2.0**22  # steps were skipped ...
    assert 0 < _value(inner_optimizer(opt).iterations) < 12  # ... and the others applied
    assert np.isfinite(val_loss) and all(np.isfinite(r["trn_loss"]) for r in learn.history)
    assert any(not np.array_equal(a, keras.ops.convert_to_numpy(b)) for a, b in zip(w0, learn.head.trainable_weights))


def test_a_truly_diverging_float16_run_still_stops(folder):
    learn = _learner(folder)
    learn.fit(1e-2, 1, verbose=False)
    before = [np.array(keras.ops.convert_to_numpy(v)) for v in learn.head.weights]
    with pytest.raises(DivergedError, match="diverged at epoch"):
        learn.fit(1e12, 4, verbose=False)
    after = [np.array(keras.ops.convert_to_numpy(v)) for v in learn.head.weights]
    assert all(np.all(np.isfinite(a)) for a in after)  # the weights of the diverged epoch's start
    assert len(before) == len(after)


def test_the_heads_output_layers_compute_in_float32(folder):
    learn = _learner(folder)
    dense = [l for l in learn.head.layers if isinstance(l, keras.layers.Dense)]
    assert dense[0].compute_dtype == "float16" and dense[-1].compute_dtype == "float32"
    assert learn.head.layers[-1].compute_dtype == "float32"  # the log-softmax
    assert keras.backend.standardize_dtype(learn.model.output.dtype) == "float32"


def test_momentum_is_set_through_the_loss_scale_optimizer():
    with precision("mixed_float16"):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    from kit.training.optimizers import make_optimizer

    model.compile(optimizer=make_optimizer("sgd", 0.1, momentum=0.9), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert set_momentum(model, 0.8)  # OneCycle's momentum cycling: silently off before
    assert _value(inner_optimizer(model.optimizer).momentum_variable) == pytest.approx(0.8)


# ----------------------------------------------------------------------------- devices and precision from construction
def test_placement_and_policy_are_the_learners_from_construction(folder):
    data = _data(folder)
    placement = Placement.create(1)
    with precision("mixed_bfloat16"), placement.scope():
        body = build_body(tiny, SZ, None)
        head = build_head(2 * int(body.output.shape[-1]), data.c)
    learn = ConvLearner(data, tiny, body, head, placement=placement)
    assert learn.placement is placement and learn.mixed_precision == "mixed_bfloat16"
    assert learn.device_line.endswith("mixed_bfloat16")
    assert learn.model.dtype_policy.name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the process-wide policy is left alone
    with pytest.raises(ValueError, match="mixed_precision='float32' does not match the body.*'mixed_bfloat16'"):
        ConvLearner(data, tiny, body, head, mixed_precision="float32")


class _CountingPlacement:
    """Counts how deep inside its scope the caller is."""

    def __init__(self):
        self.depth, self.seen = 0, []

    @contextlib.contextmanager
    def scope(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1


def test_every_public_method_and_setter_runs_inside_the_placement():
    class Thing(OnDevices):
        def __init__(self):
            self.placement = _CountingPlacement()

        def work(self):
            self.placement.seen.append(("work", self.placement.depth))
            self._helper()

        def _helper(self):
            self.placement.seen.append(("helper", self.placement.depth))

        @property
        def flag(self):
            return self.placement.depth

        @flag.setter
        def flag(self, value):
            self.placement.seen.append(("flag", self.placement.depth))

    class Child(Thing):
        def more(self):
            self.placement.seen.append(("more", self.placement.depth))

    t = Child()
    t.work()
    t.flag = True
    t.more()
    assert t.placement.seen == [("work", 1), ("helper", 1), ("flag", 1), ("more", 1)]
    assert t.placement.depth == 0
    # ConvLearner's own public methods, whichever are added later, get the same treatment.
    public = [n for n, v in vars(ConvLearner).items() if not n.startswith("_") and callable(v)]
    assert {"fit", "lr_find", "predict", "predict_files", "TTA", "save", "load", "interpret"} <= set(public)
    assert all(getattr(getattr(ConvLearner, n), "__on_devices__", False) for n in public)
    assert getattr(ConvLearner.precompute.fset, "__on_devices__", False)
