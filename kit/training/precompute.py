"""The activation cache: a frozen body run once over each split, its outputs kept on disk.

`ConvLearner.precompute = True` trains the head on these activations instead of running the body every
epoch. They are saved beside the image caches, one file per split:

    act_<arch>_<body>_<split>_<pixels>.npy

`body` digests the arch, its preprocessing, the image size and the body's weights (`body_digest`);
`pixels` is the split's `Split.key`, its image cache's key (16 hex digits) followed by a digest of the
rows it keeps. Any change gives another file, and the image cache's pruning removes the activations
read from a cache it removes (`remove_activations`).

The body runs on a split's chunks as the decoding workers deliver them (`DecodeJob.ready_batches`); a
split decoded already is a job whose chunks have all landed, so there is one pass either way (`run_body`).

Example:
    feats = split_activations(data.trn_ds, "train", folder=data.tmp_dir, arch="resnet50", body=digest,
                              step=features, bs=64, width=4096)
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from kit.data.decode_job import DecodeJob
from kit.io import atomic_path

if TYPE_CHECKING:  # kit.data.dataset loads Keras; kit.data.cache imports this module
    from kit.data.dataset import Split

PREFIX = "act_"
# The arch may hold underscores; the digests are hex of fixed lengths, so the name still splits one way.
NAME = re.compile(
    rf"^{PREFIX}(?P<arch>.+)_(?P<body>[0-9a-f]{{12}})_(?P<split>[^_]+)_(?P<pixels>[0-9a-f]{{16}}(?:[0-9a-f]{{4}})?)\.npy$"
)

Step = Callable[[np.ndarray], np.ndarray]


class ActivationFile(NamedTuple):
    """What names one split's activations: the arch, the body's digest, the split and its pixels' key."""

    arch: str
    body: str
    split: str
    pixels: str

    @property
    def filename(self) -> str:
        return f"{PREFIX}{self.arch}_{self.body}_{self.split}_{self.pixels}.npy"

    @classmethod
    def parse(cls, filename: str) -> ActivationFile | None:
        """The fields of an activation file's name, or None for any other file."""
        m = NAME.match(filename)
        return None if m is None else cls(**m.groupdict())


def body_digest(arch: str, preprocess: str, sz: int, weights: Iterable[np.ndarray]) -> str:
    """Twelve hex digits naming a body: its arch, preprocessing, image size and every weight's bytes.

    Args:
        arch: str. The arch's name.
        preprocess: str. Its preprocessing mode.
        sz: int. The side of the images it reads.
        weights: numpy arrays, in the body's order (an iterator: one weight in memory at a time).
    """
    h = hashlib.sha1(f"{arch}|{preprocess}|{sz}".encode())
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()[:12]


def activation_path(folder: Path, arch: str, body: str, split: str, pixels: str) -> Path:
    """Where the activations of `split` (pixels key `pixels`) through the body `body` are cached in `folder`."""
    return Path(folder) / ActivationFile(arch, body, split, pixels).filename


def remove_activations(folder: Path, image_key: str) -> None:
    """Removes the activations in `folder` computed from the image cache of key `image_key`."""
    for p in Path(folder).glob(f"{PREFIX}*.npy"):
        name = ActivationFile.parse(p.name)
        if name is not None and name.pixels.startswith(image_key):
            with contextlib.suppress(FileNotFoundError):  # a concurrent run removed it first
                p.unlink()


def run_body(job: DecodeJob, step: Step, bs: int, width: int, desc: str = "precompute") -> np.ndarray:
    """Runs `step` on every decoded row of `job`'s cache as its chunks land: a (job.n, width) float32 array.

    Batches have `bs` rows: a short last one is padded by repeating its last row, so a compiled step meets
    one shape and compiles once. The rows of files that failed to decode stay zeros. Ctrl-C stops the
    decoding workers too; any other error leaves them decoding, so the data stays usable.

    Args:
        job: DecodeJob. The split's decode, running or finished.
        step: maps a (bs, sz, sz, 3) uint8 batch to its (bs, width) activations.
        bs: int. Rows per batch.
        width: int. Activations per row.
        desc: str. The progress bar's label.
    """
    feats = np.zeros((job.n, width), dtype=np.float32)
    batches = tqdm(job.ready_batches(bs), total=math.ceil(job.n / bs), desc=desc, unit="batch", leave=False)
    try:
        for rows, xb in batches:
            n = len(xb)
            if n < bs:
                xb = np.concatenate([xb, np.repeat(xb[-1:], bs - n, axis=0)])
            feats[rows] = np.asarray(step(xb), dtype=np.float32)[:n]
    except KeyboardInterrupt:
        job.cancel()
        raise
    finally:
        batches.close()
    return feats


def split_activations(
    split: Split, label: str, *, folder: Path, arch: str, body: str, step: Step, bs: int, width: int
) -> np.ndarray:
    """A split's activations, one row per kept file: read from `folder` if cached, else computed and saved.

    A split still decoding is run on as its chunks land; its file is named, and written, once the decode
    has ended, holding only the rows the split keeps. An error of the decode is raised then, and nothing
    is saved.

    Args:
        split: Split. The images.
        label: str. The split's name in the file ("train", "valid" or "test").
        folder: Path. Where the activations are kept (the image caches' folder).
        arch, body: str. The arch's name and the body's digest (`body_digest`).
        step, bs, width: as for `run_body`.
    """
    job = split.decoding
    if job is None:
        path = activation_path(folder, arch, body, label, split.key)
        if path.exists():
            return np.load(path)
        job = split.job or _finished_job(split)
    feats = run_body(job, step, bs, width, f"precompute {label}")
    keep = split.rows  # waits for the decode, and raises its error
    if len(keep) != job.n:
        feats = feats[keep]
    path = activation_path(folder, arch, body, label, split.key)
    with atomic_path(path, need=feats.nbytes, what=f"the activations {path.name}") as tmp:
        np.save(tmp, feats)
    return feats


def _finished_job(split: Split) -> DecodeJob:
    """A split made from arrays (no decode of its own) as a finished job: its kept rows are its ok ones."""
    ok = np.zeros(len(split.images), dtype=bool)
    ok[split.rows] = True
    return DecodeJob.finished(split.name, split.images, ok)
