"""The activation cache (kit.training.precompute): its file names, its pruning, and the one pass over a
decode's chunks, which gives the same activations whether the split is decoded already or still decoding."""

from pathlib import Path

import numpy as np
import pytest

import kit.data.decode_job as decode_job
from helpers import gate
from helpers.images import make_folders
from kit.data.cache import start_decoding
from kit.data.dataset import Split
from kit.training.precompute import (
    ActivationFile,
    activation_path,
    body_digest,
    remove_activations,
    run_body,
    split_activations,
)

SZ, BS = 16, 7  # 7 does not divide the 81 files: the last batch is padded
IMAGE_KEY, OTHER_KEY = "0123456789abcdef", "fedcba9876543210"


def _mean_colour(xb: np.ndarray) -> np.ndarray:
    """A body in numpy: each image's mean colour."""
    return xb.reshape(len(xb), -1, 3).mean(1)


# ----------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    "name",
    [
        ActivationFile("resnet50", "0123456789ab", "train", IMAGE_KEY + "beef"),
        ActivationFile("efficientnet_lite0", "ba9876543210", "test", IMAGE_KEY),  # underscores in the arch
    ],
)
def test_names_round_trip(name):
    assert name.filename.startswith("act_") and name.filename.endswith(".npy")
    assert ActivationFile.parse(name.filename) == name
    assert activation_path(Path("tmp"), *name) == Path("tmp") / name.filename


@pytest.mark.parametrize(
    "filename",
    [
        f"train_32px_{IMAGE_KEY}.npy",  # an image cache
        f".act_resnet50_0123456789ab_train_{IMAGE_KEY}.123-host-abcd1234.tmp.npy",  # a write in progress
        f"act_resnet50_0123456789ab_train_{IMAGE_KEY}.npz",
        "act_resnet50_train.npy",
    ],
)
def test_other_files_are_not_activations(filename):
    assert ActivationFile.parse(filename) is None


def test_body_digest_is_the_one_existing_caches_are_named_by():
    weights = [np.arange(6, dtype=np.float32), np.ones((2, 2), dtype=np.float16).T]  # one not C-contiguous
    assert body_digest("tiny", "torch", 32, iter(weights)) == "e719d9b4ee94"
    assert body_digest("tiny", "torch", 64, iter(weights)) != "e719d9b4ee94"


def test_pruning_an_image_cache_removes_only_its_activations(tmp_path):
    old = [ActivationFile(a, "0123456789ab", s, IMAGE_KEY + "beef") for a, s in (("tiny", "train"), ("r_50", "valid"))]
    current = [
        ActivationFile("tiny", "0123456789ab", "train", OTHER_KEY + "beef"),
        ActivationFile("tiny", "0123456789ab", "test", OTHER_KEY),
    ]
    others = [f"train_32px_{IMAGE_KEY}.npy", f"notes_{IMAGE_KEY}.npy"]  # the image cache is the caller's to remove
    for name in [*(f.filename for f in old + current), *others]:
        (tmp_path / name).write_bytes(b"")
    remove_activations(tmp_path, IMAGE_KEY)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(f.filename for f in current), *others])


# ----------------------------------------------------------------------------- the one pass
@pytest.fixture
def files(tmp_path):
    folder = make_folders(tmp_path, n_train=40, n_valid=0)  # 80 files: the worker pool decodes them
    (folder / "train" / "dogs" / "broken.jpg").write_bytes(b"not an image" * 10)
    return sorted((folder / "train").rglob("*.jpg"))


def test_one_pass_gives_the_same_activations_decoded_or_decoding(tmp_path, files, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(decode_job, "decode_into", gate.decode_after_gate)
    (job,) = start_decoding([("train", files)], SZ, cache, num_workers=2, progress=False)
    shapes, landed = [], []

    def step(xb):
        if not landed:
            landed.append(job.landed)
            gate.open_gate(cache)  # the other chunks land only once the body has run on the first
        shapes.append(xb.shape)
        return _mean_colour(xb)

    overlapped = run_body(job, step, BS, 3)
    assert landed[0] < len(job.plan)  # the body ran before the split was decoded
    with pytest.warns(UserWarning, match="Skipped 1 of 81"):
        images, ok = job.result()
    assert ok.sum() == 80 and set(shapes) == {(BS, SZ, SZ, 3)}  # one shape: the short last batch padded

    (finished,) = start_decoding([("train", files)], SZ, cache, num_workers=2, progress=False)
    assert finished.done and finished.plan == []  # read from disk: every chunk there at once
    plain = run_body(finished, _mean_colour, BS, 3)
    np.testing.assert_array_equal(overlapped, plain)
    np.testing.assert_array_equal(plain[ok], _mean_colour(np.asarray(images[ok])))
    assert not plain[~ok].any()  # the broken file's row is left at zero


def test_ctrl_c_in_the_body_cancels_the_decode(tmp_path, files, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setattr(decode_job, "decode_into", gate.decode_after_gate)
    (job,) = start_decoding([("train", files)], SZ, cache, num_workers=2, progress=False)

    def interrupt(xb):
        gate.open_gate(cache)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_body(job, interrupt, BS, 3)
    assert job.done
    with pytest.raises(RuntimeError, match="cancelled"):
        job.result()


def test_split_activations_saves_the_kept_rows_once(tmp_path, files):
    cache = tmp_path / "cache"
    (job,) = start_decoding([("train", files)], SZ, cache, num_workers=1, progress=False)
    split = Split.from_job(job, files, None, tmp_path, None)
    calls = []
    kw = dict(folder=cache, arch="tiny", body="0123456789ab", bs=BS, width=3)

    def step(xb):
        calls.append(len(xb))
        return _mean_colour(xb)

    with pytest.warns(UserWarning, match="Skipped 1 of 81"):
        feats = split_activations(split, "train", step=step, **kw)
    assert feats.shape == (80, 3) and len(calls) == -(-80 // BS)
    np.testing.assert_array_equal(feats, _mean_colour(np.asarray(split.images[split.rows])))
    (saved,) = cache.glob("act_*.npy")
    assert ActivationFile.parse(saved.name) == ActivationFile("tiny", "0123456789ab", "train", split.key)
    np.testing.assert_array_equal(np.load(saved), feats)
    calls.clear()
    np.testing.assert_array_equal(split_activations(split, "train", step=step, **kw), feats)
    assert calls == []  # read back, not computed again


def test_a_split_made_of_arrays_is_one_finished_job(tmp_path):
    images = np.arange(5, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.uint8)
    split = Split("valid", [Path(f"{i}.jpg") for i in (0, 2, 3)], None, images, np.array([0, 2, 3]))
    feats = split_activations(
        split, "valid", folder=tmp_path, arch="tiny", body="0123456789ab", step=_mean_colour, bs=2, width=3
    )
    np.testing.assert_array_equal(feats[:, 0], [0, 2, 3])
