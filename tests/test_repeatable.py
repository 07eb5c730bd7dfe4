"""Figures that repeat (issue 20): a recipe run twice with one seed gives the same history and predictions."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers.images import make_folders
from helpers.tiny import tiny
from kit.jobs import train as train_job
from kit.jobs.config import load_config
from kit.models.archs import ARCHS
from kit.run import RunFolder
from kit.training.seeding import seed_everything

SLUG = "dogs-vs-cats-redux-kernels-edition"


def _cfg(**kw):
    # Every stage that draws: lr_find (no lr), dropout in the head, augmentation, the unfrozen body, TTA.
    base = dict(
        competition=SLUG,
        arch="tiny",
        weights="none",
        size=32,
        bs=8,
        epochs=2,
        cycle_len=1,
        aug="side_on",
        augment_epochs=1,
        unfreeze_epochs=1,
        unfreeze_lr=0.005,
        tta=True,
        n_aug=2,
        num_workers=2,
        seed=7,
    )
    return load_config(None, **{**base, **kw})


def _train(tmp_path_factory, **kw):
    data = tmp_path_factory.mktemp("data")
    make_folders(data / SLUG, n_train=12, n_valid=6, n_test=4)
    run = train_job.train(_cfg(**kw), data, verbose=False)
    return run, RunFolder(run.dir).read_predictions()


@pytest.mark.backends
def test_same_seed_gives_the_same_figures(tmp_path_factory, monkeypatch):
    monkeypatch.setitem(ARCHS, "tiny", tiny)
    (a, pa), (b, pb) = _train(tmp_path_factory), _train(tmp_path_factory)
    assert a.lr == b.lr  # lr_find's suggestion
    assert json.dumps(a.history) == json.dumps(b.history)  # every epoch's figures, to the last bit
    np.testing.assert_array_equal(pa.val_probs, pb.val_probs)  # TTA's draws included
    np.testing.assert_array_equal(pa.test_probs, pb.test_probs)
    c, pc = _train(tmp_path_factory, seed=8)
    assert not np.array_equal(pc.val_probs, pa.val_probs)  # the seed is what repeats them, not a constant


def test_seed_everything_repeats_draws():
    seed_everything(3)
    a = keras.ops.convert_to_numpy(keras.random.uniform((4,))), np.random.rand(2)
    seed_everything(3)
    b = keras.ops.convert_to_numpy(keras.random.uniform((4,))), np.random.rand(2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_seeding_module_imports_no_framework():
    code = "import sys, kit.training.seeding; print(sorted({'keras', 'tensorflow', 'torch', 'jax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
