"""digits: an offline demo competition of real handwritten digits (scikit-learn's bundled data set).

scikit-learn ships 1,797 real 8×8 grey-level digits (10 classes, from the UCI "Optical Recognition of
Handwritten Digits" set), so this competition needs no network and no credentials. `local_source`
writes what Kaggle would serve: train.zip (`train/<digit>.<n>.png`), test.zip (`test/<id>.png`, no
labels) and sample_submission.csv, with the images upscaled to 64-px RGB PNGs. A seeded, stratified
20% goes to the test set; its labels are kept aside in test_answers.csv (not in test.zip) so a
submission can be scored locally. A submission is `id,label` with the predicted digit; accuracy.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from pathlib import Path

import numpy as np

from kit.io import atomic_write
from kit.kaggle import Competition, label_by_prefix

# Fixed, so every run writes byte-identical zips with the same test split.
SEED = 2018
TEST_FRACTION = 0.2
# 8 px is too small for a pretrained network's stride-32 body; the loader resizes further as needed.
IMAGE_SIZE = 64
# A fixed timestamp in the zips keeps them byte-identical from run to run.
ZIP_DATE = (2018, 1, 1, 0, 0, 0)
ANSWERS = "test_answers.csv"
CLASSES = tuple(str(d) for d in range(10))
FILES = ("train.zip", "test.zip", "sample_submission.csv")


def _images() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, IMAGE_SIZE, IMAGE_SIZE, 3) uint8 RGB, white ink on black, and their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = np.clip(np.round(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    out = np.empty((len(grey), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for i, g in enumerate(grey):
        big = Image.fromarray(g, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
        out[i] = np.asarray(big.convert("RGB"))
    return out, digits.target.astype(np.int64)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_zip(path: Path, members: list[tuple[str, bytes]]) -> None:
    buf = io.BytesIO()  # a few MB: built in memory, then written atomically
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data)
    atomic_write(path, buf.getvalue())


def _write_csv(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write(path, buf.getvalue())


def local_source(dest_dir: str | os.PathLike) -> list[Path]:
    """Writes train.zip, test.zip, sample_submission.csv and test_answers.csv into dest_dir.

    The files are deterministic; when all of them exist already, nothing is written.

    Example:

    ```python
    COMPETITION.local_source("data/digits")   # [data/digits/train.zip, ...]
    ```

    Args:
        dest_dir: Path. The folder for the competition's files (created if missing).

    Returns:
        The paths of the competition's files (not the answers).
    """
    from kit.kaggle.layout import stratified_split

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    paths = [dest / f for f in FILES]
    if all(p.is_file() for p in paths + [dest / ANSWERS]):
        return paths
    images, labels = _images()
    names = [str(v) for v in labels]
    train_ix, test_ix = stratified_split(names, int(round(TEST_FRACTION * len(names))), SEED)
    # Test ids are 1..n in a shuffled order, so an id says nothing about the digit.
    test_ix = test_ix[np.random.default_rng(SEED).permutation(len(test_ix))]
    train = [(f"train/{labels[i]}.{i:04d}.png", _png(images[i])) for i in train_ix]
    test = [(f"test/{k}.png", _png(images[i])) for k, i in enumerate(test_ix, start=1)]
    answers = [(str(k), str(labels[i])) for k, i in enumerate(test_ix, start=1)]
    _write_zip(dest / "train.zip", train)
    _write_zip(dest / "test.zip", test)
    _write_csv(dest / "sample_submission.csv", COMPETITION.submission_columns, [(k, "0") for k, _ in answers])
    _write_csv(dest / ANSWERS, ("id", "label"), answers)
    return paths


def local_answers(dest_dir: str | os.PathLike) -> dict[str, str]:
    """The test set's true classes, {test id: digit}, from the test_answers.csv that local_source wrote."""
    path = Path(dest_dir) / ANSWERS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `kit download -c digits` to write the digits files")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0] != ["id", "label"]:
        raise ValueError(f"{path}: line 1 must be the header id,label. Received {rows[:1]!r}")
    return {r[0]: r[1] for r in rows[1:]}


COMPETITION = Competition(
    slug="digits",
    title="Handwritten digits (offline demo)",
    classes=CLASSES,
    files=FILES,
    train_zip="train.zip",
    test_zip="test.zip",
    label_from_name=label_by_prefix({c: c for c in CLASSES}),
    submission_columns=("id", "label"),
    submission_kind="class_name",
    metric="accuracy",
    # About 1,438 training images: 300 for validation leaves ~1,140 to learn from.
    valid_size=300,
    local_source=local_source,
    local_answers=local_answers,
    description="offline demo: scikit-learn's 1,797 real 8x8 digits as 64-px PNGs; accuracy",
)
