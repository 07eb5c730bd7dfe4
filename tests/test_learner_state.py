"""`learn.state_dict()` / `learn.load_state_dict()`: one door for what survives a restart (issue 20).

A state taken inside a fit, written as a checkpoint and loaded into a fresh learner continues that fit
to the uninterrupted result; another model's state is refused; mixed_float16's loss scale goes on.
"""

import json

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model, transforms_side_on
from kit.models.archs import Arch
from kit.training.callbacks.checkpoint import (
    CheckpointError,
    EpochCheckpoint,
    checkpoint_file,
    read_checkpoint,
    write_checkpoint,
)
from kit.training.learner import STATE_KEYS, ConvLearner

SZ = 32
UNFROZEN = np.array([1e-3, 3e-3, 1e-2])  # differential rates, SGDR 1 + 2 epochs


def _wide_cnn(include_top: bool = False, weights=None, input_shape=(32, 32, 3), **kwargs) -> keras.Model:
    inp = keras.Input(input_shape)
    x = keras.layers.Conv2D(12, 3, strides=2, padding="same", name="early_conv")(inp)
    x = keras.layers.BatchNormalization(name="early_bn")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="late_conv")(x)
    return keras.Model(inp, x, name="wide_cnn")


WIDE = Arch("wide", _wide_cnn, preprocess="tf", split_at="late")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folders(tmp_path_factory.mktemp("state"), n_train=12, n_valid=6)


def _learner(folder, seed=0, arch=tiny, policy=None, **kw):
    keras.utils.set_random_seed(seed)
    # Side-on augmentation: the augmentation layer's seed state must travel with the weights.
    data = ImageClassifierData.from_paths(
        folder, tfms=tfms_from_model(arch, SZ, aug_tfms=transforms_side_on), bs=8, progress=False, num_workers=1
    )
    if policy is not None:
        kw["mixed_precision"] = policy
    return ConvLearner.pretrained(arch, data, precompute=True, weights=None, **kw)


def _unfreeze(learn):
    learn.precompute = False
    learn.unfreeze()


class _StateAt(keras.callbacks.Callback):
    """Keeps `learn.state_dict()` at the end of the fit's epoch `at` (after the learner recorded it)."""

    def __init__(self, learn, at):
        super().__init__()
        self.learn, self.at, self.state = learn, at, None

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.at:
            self.state = self.learn.state_dict()


def _variables(learn):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in learn.model.variables]


@pytest.mark.backends
def test_a_state_saved_inside_a_fit_continues_it_bit_for_bit(folder, tmp_path):
    a = _learner(folder)
    a.fit(0.01, 1, verbose=False)
    _unfreeze(a)
    at = _StateAt(a, 0)
    a.fit(UNFROZEN, 2, cycle_len=1, cycle_mult=2, verbose=False, callbacks=[at])
    state = at.state
    assert set(STATE_KEYS) <= set(state) and state["epochs_done"] == 2 and len(state["history"]) == 2
    assert state["position"]["epoch"] == 1 and state["position"]["epochs"] == 3 and state["optimizer"]
    write_checkpoint(tmp_path, {**state, "facts": {"stage": 1}})

    # Another seed: whatever it built or drew, the state puts back everything training depends on.
    b = _learner(folder, seed=7)
    b.fit(0.01, 1, verbose=False)  # a first fit of its own, as `kit train` runs the stages before
    _unfreeze(b)
    b.load_state_dict(read_checkpoint(tmp_path))
    assert b.epochs_done == 2 and b.history == state["history"]
    b.fit(UNFROZEN, 2, cycle_len=1, cycle_mult=2, verbose=False)
    assert b.history == a.history and b.epochs_done == a.epochs_done == 4
    for va, vb in zip(_variables(a), _variables(b), strict=True):
        np.testing.assert_array_equal(vb, va)


def test_between_fits_the_state_has_no_optimizer_and_a_closed_fit_returns_at_once(folder):
    a = _learner(folder)
    at = _StateAt(a, 1)
    result = a.fit(0.01, 2, verbose=False, callbacks=[at])
    between = a.state_dict()
    assert between["optimizer"] is None and between["position"] is None and between["epochs_done"] == 2
    assert at.state["position"]["epoch"] == at.state["position"]["epochs"] == 2

    b = _learner(folder, seed=1)
    b.load_state_dict(at.state)
    weights = _variables(b)
    assert b.fit(0.01, 2, verbose=False) == result  # the state closed that fit: nothing left to train
    assert all(np.array_equal(x, y) for x, y in zip(weights, _variables(b))) and b.epochs_done == 2
    b.load_state_dict(at.state)
    b.fit(0.02, 1, verbose=False)  # a closed fit's state before another fit: that one starts afresh
    assert [r["epoch"] for r in b.history] == [0, 1, 2]


def test_a_fit_that_is_not_the_saved_one_is_refused_until_called_right(folder):
    a = _learner(folder)
    at = _StateAt(a, 0)
    a.fit(0.01, 2, verbose=False, callbacks=[at])
    b = _learner(folder)
    b.load_state_dict(at.state)
    with pytest.raises(ValueError, match=r"after epoch 1 of 2 of another fit: lrs=\[0\.01\] then, \[0\.02\] now"):
        b.fit(0.02, 2, verbose=False)
    assert b.state_dict()["position"] == at.state["position"]  # still waiting for the right call
    b.fit(0.01, 2, verbose=False)
    assert b.history == a.history


def test_a_state_of_another_model_is_refused_and_changes_nothing(folder):
    a = _learner(folder)
    state = a.state_dict()
    for other in (_learner(folder, arch=WIDE), _learner(folder, xtra_fc=[16])):
        before = _variables(other)
        with pytest.raises(
            ValueError, match="The state's model variables do not match this learner.*another architecture"
        ):
            other.load_state_dict(state)
        assert all(np.array_equal(x, y) for x, y in zip(before, _variables(other))) and other.epochs_done == 0
    with pytest.raises(ValueError, match=r"this state lacks \['position'\]"):
        a.load_state_dict({k: v for k, v in state.items() if k != "position"})


def test_mixed_float16_carries_the_loss_scale(folder):
    if keras.backend.backend() != "tensorflow":
        pytest.skip("mixed_float16 trains on TensorFlow's CPU here; tests/test_distribute.py covers JAX")
    a = _learner(folder, policy="mixed_float16")
    at = _StateAt(a, 0)

    class Scale(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.model.optimizer.dynamic_scale.assign(1024.0)  # not the initial scale: it must be carried

    a.fit(0.01, 2, verbose=False, callbacks=[Scale(), at])
    names = [v.path.split("/")[-1] for v in a.head.optimizer.variables]
    saved = float(at.state["optimizer"][names.index("dynamic_scale")])
    assert saved < 2.0**15  # not a fresh LossScaleOptimizer's: carrying it is visible

    b = _learner(folder, policy="mixed_float16")
    b.load_state_dict(at.state)
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.update(scale=float(keras.ops.convert_to_numpy(self.model.optimizer.dynamic_scale)))

    b.fit(0.01, 2, verbose=False, callbacks=[Probe()])
    assert seen["scale"] == saved
    assert b.history == a.history


def test_the_checkpoint_callback_writes_the_learners_state(folder, tmp_path):
    learn = _learner(folder)
    ckpt = EpochCheckpoint(tmp_path, learn, facts={"stage": 0, "lr": 0.01})
    learn.fit(0.01, 2, verbose=False, callbacks=[ckpt])
    back = read_checkpoint(tmp_path)
    assert ckpt.last_epoch == 1 and back["facts"] == {"stage": 0, "lr": 0.01}
    assert back["history"] == learn.history and back["epochs_done"] == 2 and back["position"]["epoch"] == 2
    assert len(back["model"]) == len(learn.model.variables) and len(back["optimizer"]) == len(
        learn.head.optimizer.variables
    )


def test_a_checkpoint_of_the_first_format_is_refused_with_a_sentence(tmp_path):
    path = checkpoint_file(tmp_path)
    np.savez(path, state=np.array(json.dumps({"stage": 0, "epoch": 1, "history": []})), model_0=np.zeros(2))
    with pytest.raises(
        CheckpointError, match=rf"The checkpoint {path} was written by an older kit \(format 1;.*without --resume"
    ):
        read_checkpoint(tmp_path)
