"""A head fit on precomputed activations makes at least `min_steps` optimizer steps: each epoch is several
shuffled passes over them (`Batches(passes=)`, `ConvLearner.fit(min_steps=)`, TrainConfig.head_min_steps)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model
from kit.data.dataset import Batches
from kit.jobs.config import load_config
from kit.jobs.train import stages
from kit.training.learner import ConvLearner

SZ = 32


def test_passes_visit_every_row_once_per_pass():
    x = np.arange(10)[:, None]
    b = Batches(x, np.arange(10), bs=4, shuffle=True, seed=3, passes=3)
    assert len(b) == math.ceil(30 / 4)
    seen = np.concatenate([b[i][0][:, 0] for i in range(len(b))])
    assert sorted(seen.tolist()) == sorted(list(range(10)) * 3)
    first = seen.copy()
    b.on_epoch_end()
    assert not np.array_equal(np.concatenate([b[i][0][:, 0] for i in range(len(b))]), first)  # reshuffled
    with pytest.raises(ValueError, match="needs shuffle=True"):
        Batches(x, None, bs=4, passes=2)


def test_one_pass_keeps_a_seeds_order():
    """passes=1 draws exactly as before, so every figure measured before the option is unchanged."""
    order = np.arange(10)
    rng = np.random.default_rng(7)
    rng.shuffle(order)
    b = Batches(np.arange(10)[:, None], None, bs=10, shuffle=True, seed=7)
    assert np.array_equal(np.sort(order), b[0][0][:, 0]) and np.array_equal(b._order, order)


class _Steps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.epochs = 0, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_folders(tmp_path_factory.mktemp("steps"), n_train=10, n_valid=4, size=SZ)
    return ImageClassifierData.from_paths(root, tfms=tfms_from_model(tiny, SZ), bs=8, progress=False)


def test_min_steps_makes_the_steps_in_the_same_epochs(data):
    learn = ConvLearner.pretrained(tiny, data, precompute=True, weights=None)
    count = _Steps()
    learn.fit(0.01, 2, cycle_len=1, min_steps=30, callbacks=[count], verbose=False)
    # 20 images at bs 8: 3 steps a pass; 2 epochs of 5 passes (15 steps each) reach the 30 steps.
    assert count.epochs == 2 and count.steps == 30 and len(learn.history) == 2
    count = _Steps()
    learn.fit(0.01, 2, callbacks=[count], verbose=False)
    assert count.steps == 6  # without it, one pass an epoch
    learn.precompute = False
    count = _Steps()
    learn.fit(0.01, 1, min_steps=30, callbacks=[count], verbose=False)
    assert count.steps == 3  # on images a pass costs the body: min_steps applies to activations only


def test_the_head_stage_carries_the_floor():
    head, unfreeze = stages(load_config(None, unfreeze_epochs=1), 0.01)
    assert head.min_steps == 300 and unfreeze.min_steps == 0
    (head,) = stages(load_config(None, head_min_steps=0), 0.01)
    assert head.min_steps == 0


def test_head_dropout_default_and_the_recipes_keep_theirs():
    assert load_config(None).head_ps == [0.5, 0.5]
    assert load_config(recipe="real").head_ps == [0.25, 0.5] and load_config(recipe="real").head_min_steps == 0
    with pytest.raises(ValueError, match=r"head_ps must be 2 dropout rates in \[0, 1\).*Received head_ps=\[0.5, 1.0\]"):
        load_config(None, head_ps=[0.5, 1.0])
