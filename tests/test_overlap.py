"""Precompute overlapped with decoding (issue 10): from_paths returns while workers decode, the body runs
on each chunk as it lands, and every failure still ends as it did when decoding came first."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import keras
import numpy as np
import pytest

import kit.data.decode_job as decode_job
from helpers import gate
from helpers.images import make_folders
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model
from kit.data.decode_job import DecodeJob
from kit.training.learner import ConvLearner

pytestmark = pytest.mark.backends
SZ, BS = 32, 8
N_TRAIN = 40  # per class: 80 files, enough for the worker pool; 10 chunks of 8 on 2 workers
ROOT = Path(__file__).resolve().parents[1]


def _data(path, **kw):
    return ImageClassifierData.from_paths(
        path, tfms=tfms_from_model(tiny, SZ), bs=BS, progress=False, num_workers=2, **kw
    )


def _learner(data):
    keras.utils.set_random_seed(0)
    return ConvLearner.pretrained(tiny, data, precompute=True, weights=None)


def _decode_threads() -> list[threading.Thread]:
    """The decoding threads still alive after 30 s: a job is done (and its error raised) just before its
    thread closes the pool and ends, so each is given time to end first."""
    for t in [t for t in threading.enumerate() if t.name == "kit-decode"]:
        t.join(timeout=30)
    return [t for t in threading.enumerate() if t.name == "kit-decode"]


def _leftovers(cache: Path) -> list[str]:
    """Temporary files, and caches of the train split or its activations."""
    return sorted(p.name for p in cache.iterdir() if p.name.startswith((".", "train_", "act_")))


@pytest.fixture
def folder(tmp_path):
    return make_folders(tmp_path, n_train=N_TRAIN, n_valid=3)


@pytest.fixture
def gated(monkeypatch, folder):
    """Chunks after the first wait until the body's first batch opens the gate; records what had landed then."""
    monkeypatch.setattr(decode_job, "decode_into", gate.decode_after_gate)
    seen: list[int] = []
    real = ConvLearner._features_step

    def step(self, xb):
        if not seen:
            job = self.data.trn_ds.job
            seen.append(job.landed)
            gate.open_gate(folder / "tmp")
        return real(self, xb)

    monkeypatch.setattr(ConvLearner, "_features_step", step)
    return seen


def test_body_runs_on_chunks_before_the_split_is_decoded(folder, gated):
    data = _data(folder)
    job = data.trn_ds.decoding
    assert job is not None and job.landed < len(job.plan) == 10  # from_paths returned while the workers decode
    assert data.val_ds.decoding is None  # a split of 6 files is decoded in from_paths, as before
    learn = _learner(data)
    # Only a gate the body's first batch opens lets the later chunks land: a learner that waited for
    # the whole split would wait out the gate's timeout, and then see every chunk landed.
    assert gated[0] < len(job.plan)
    assert job.done and learn._act["train"].shape == (2 * N_TRAIN, 32) and len(data.trn_ds) == 2 * N_TRAIN
    assert not _decode_threads()


def test_overlapped_activations_equal_those_from_the_finished_cache(folder, gated):
    (folder / "train" / "dogs" / "broken.jpg").write_bytes(
        b"not an image" * 10
    )  # a row of zeros (in chunk 5), left out
    data = _data(folder)
    assert data.trn_ds.decoding is not None
    with pytest.warns(UserWarning) as record:
        overlapped = _learner(data)
    skipped = [str(w.message) for w in record if "could not be decoded" in str(w.message)]
    assert len(skipped) == 1 and "Skipped 1 of 81" in skipped[0] and "broken.jpg" in skipped[0]
    assert gated[0] < 10 and len(overlapped._act["train"]) == 2 * N_TRAIN
    for f in (folder / "tmp").glob("act_*.npy"):
        f.unlink()
    again = _data(folder)  # the image cache is on disk now: no workers, the plain pass
    assert again.trn_ds.decoding is None and again.trn_ds.job.plan == []
    plain = _learner(again)
    for split in ("train", "valid"):
        np.testing.assert_allclose(overlapped._act[split], plain._act[split], rtol=1e-5, atol=1e-6)
    assert overlapped.activation_path("train") == plain.activation_path("train")


def test_ready_batches_are_full_and_skip_failed_rows():
    images = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), dtype=np.uint8)
    ok = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1], dtype=bool)
    job = DecodeJob.finished("train", images, ok)
    batches = list(job.ready_batches(3))
    assert [r.tolist() for r, _ in batches] == [[0, 1, 3], [4, 5, 8], [9]]
    for rows, xb in batches:
        assert xb[:, 0, 0, 0].tolist() == rows.tolist()


def test_ctrl_c_in_the_body_stops_the_workers_and_leaves_nothing(folder, monkeypatch):
    monkeypatch.setattr(decode_job, "decode_into", gate.decode_after_gate)

    def interrupt(self, xb):
        gate.open_gate(folder / "tmp")  # the chunks in flight may finish
        raise KeyboardInterrupt

    monkeypatch.setattr(ConvLearner, "_features_step", interrupt)
    data = _data(folder)
    job = data.trn_ds.decoding
    with pytest.raises(KeyboardInterrupt):
        _learner(data)
    assert job.done and not _decode_threads()
    assert _leftovers(folder / "tmp") == []  # no temporary file, no cache, no activations
    with pytest.raises(RuntimeError, match="'train' images was cancelled.*from_paths again"):
        len(data.trn_ds)


def test_an_error_in_the_body_leaves_the_decode_running_and_the_data_usable(folder, monkeypatch):
    monkeypatch.setattr(decode_job, "decode_into", gate.decode_after_gate)

    def fail(self, xb):
        raise ValueError("the body failed")

    monkeypatch.setattr(ConvLearner, "_features_step", fail)
    data = _data(folder)
    with pytest.raises(ValueError, match="the body failed"):
        _learner(data)
    gate.open_gate(folder / "tmp")
    assert len(data.trn_ds) == 2 * N_TRAIN and data.trn_ds.images.shape == (2 * N_TRAIN, SZ, SZ, 3)
    assert not _decode_threads()
    assert not list((folder / "tmp").glob("act_*.npy"))


def test_dead_worker_is_one_runtime_error_and_leaves_nothing(folder, monkeypatch):
    monkeypatch.setattr(decode_job, "decode_into", gate.die_after_first)
    with pytest.raises(RuntimeError, match="A decoding worker died while writing the image cache in .*num_workers=1"):
        _learner(_data(folder))  # raised by from_paths when the pool broke before it returned
    assert not _decode_threads() and _leftovers(folder / "tmp") == []


DISK_FULL = r"""
import json, resource, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
import kit.data.cache as cache
from helpers.tiny import tiny
from kit.data import ImageClassifierData, tfms_from_model
from kit.training.learner import ConvLearner

# A real limit: every write past it fails with EFBIG (SIGXFSZ ignored, so it is an error, not a kill).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.RLIM_INFINITY))
cache.PREALLOCATE = False  # as on a file system without fallocate: the workers' writes fail, after from_paths
folder = Path(sys.argv[1])
out = {}
for how in ("len", "precompute"):
    try:
        data = ImageClassifierData.from_paths(folder, tfms=tfms_from_model(tiny, 32), bs=8, progress=False, num_workers=2)
        if how == "len":
            len(data.trn_ds)
        else:
            ConvLearner.pretrained(tiny, data, precompute=True, weights=None)
        out[how] = "no error"
    except Exception as e:
        out[how] = [type(e).__name__, str(e), sorted(p.name for p in (folder / "tmp").iterdir())]
print(json.dumps(out))
"""


def test_disk_full_while_workers_write_is_raised_where_the_images_are_read(folder):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    r = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(folder), str(ROOT / "tests")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    need = 128 + 2 * N_TRAIN * SZ * SZ * 3 + 128 + 2 * N_TRAIN
    for how, (kind, msg, left) in json.loads(r.stdout.strip().splitlines()[-1]).items():
        assert kind == "NotEnoughSpaceError", (how, kind, msg)
        assert (
            f"{folder / 'tmp'} for the 'train' image cache" in msg
            and f"({need} bytes)" in msg
            and "(65536 bytes) free" in msg
        ), msg
        assert not [n for n in left if n.startswith((".", "train_", "act_"))], (how, left)  # only the valid cache


EXIT = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import kit.data.decode_job as decode_job
from helpers import gate
from kit.data.cache import start_decoding

decode_job.decode_into = gate.decode_slowly  # 10 chunks at 0.1 s each on 2 workers
files = sorted(Path(sys.argv[1]).rglob("*.jpg"))
(job,) = start_decoding([("train", files)], 32, Path(sys.argv[2]), num_workers=2, progress=False)
assert not job.done
if sys.argv[4] == "ctrl-c":
    raise KeyboardInterrupt
"""


@pytest.mark.parametrize("how", ["exit", "ctrl-c"])
def test_interpreter_exit_stops_the_workers_and_leaves_nothing(folder, tmp_path, how):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [sys.executable, "-c", EXIT, str(folder / "train"), str(cache), str(ROOT / "tests"), how],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == (0 if how == "exit" else -2), r.stderr[-3000:]  # Ctrl-C ends as Ctrl-C does
    assert sorted(p.name for p in cache.iterdir()) == []  # not waited for: no cache, no temporary file
