"""The offline digits competition: its Kaggle-style zips, answers kept aside, layout and scoring."""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from kit.kaggle.competition import get_competition
from kit.kaggle.layout import prepare_layout, read_layout
from kit.kaggle.submission import score_submission, write_submission

DIGITS = get_competition("digits")
N = 1797  # scikit-learn's bundled digits


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    d = tmp_path_factory.mktemp("digits-zips")
    paths = DIGITS.local_source(d)
    return d, paths


def zip_names(path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return [i.filename for i in zf.infolist()]


def test_it_writes_kaggle_style_files(source):
    d, paths = source
    assert [p.name for p in paths] == ["train.zip", "test.zip", "sample_submission.csv"]
    assert sorted(p.name for p in d.iterdir()) == ["sample_submission.csv", "test.zip", "test_answers.csv", "train.zip"]
    train, test = zip_names(d / "train.zip"), zip_names(d / "test.zip")
    assert len(train) + len(test) == N
    assert all(re.fullmatch(r"train/[0-9]\.[0-9]{4}\.png", n) for n in train)
    # Test names carry no label: ids 1..n.
    assert sorted(int(n[5:-4]) for n in test) == list(range(1, len(test) + 1))
    assert all(re.fullmatch(r"test/[0-9]+\.png", n) for n in test)


def test_the_test_split_is_a_stratified_fifth(source):
    d, _ = source
    answers = DIGITS.local_answers(d)
    assert len(answers) == round(0.2 * N)
    train_counts = Counter(n.split("/")[1].split(".")[0] for n in zip_names(d / "train.zip"))
    test_counts = Counter(answers.values())
    for c in DIGITS.classes:
        total = train_counts[c] + test_counts[c]
        assert abs(test_counts[c] - 0.2 * total) <= 1, (c, test_counts[c], total)
    assert set(answers) == {n[5:-4] for n in zip_names(d / "test.zip")}


def test_images_are_upscaled_rgb_pngs_of_real_digits(source):
    d, _ = source
    with zipfile.ZipFile(d / "train.zip") as zf:
        name = zf.namelist()[0]
        img = Image.open(io.BytesIO(zf.read(name)))
        arr = np.asarray(img)
    assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)
    assert arr.max() > 200 and arr.min() < 30  # ink and background, not a blank image


def test_the_files_are_deterministic_and_not_rewritten(source, tmp_path):
    d, _ = source
    stamps = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}
    DIGITS.local_source(d)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == stamps
    (tmp_path / "again").mkdir()
    DIGITS.local_source(tmp_path / "again")
    for name in ("train.zip", "test.zip", "test_answers.csv"):
        a, b = ((x / name).read_bytes() for x in (d, tmp_path / "again"))
        assert hashlib.sha256(a).digest() == hashlib.sha256(b).digest(), name


def test_layout_and_a_perfect_submission_scores_one(source, tmp_path):
    d, _ = source
    root = prepare_layout(DIGITS, d, tmp_path / "data", progress=False)
    record = read_layout(root)
    assert record["valid"] == DIGITS.valid_size == 300
    assert sorted(p.name for p in (root / "train").iterdir()) == list(DIGITS.classes)
    assert sum(record["counts"]["valid"].values()) == 300
    assert min(record["counts"]["valid"].values()) >= 28  # about 30 of each digit
    tests = sorted(p.name for p in (root / "test").iterdir())
    answers = DIGITS.local_answers(d)
    ids = [DIGITS.test_id(n) for n in tests]
    assert set(ids) == set(answers)
    # Columns in an order other than the competition's: the written class must still be right.
    classes = list(reversed(DIGITS.classes))
    probs = np.zeros((len(ids), 10))
    for row, i in enumerate(ids):
        probs[row, classes.index(answers[i])] = 1.0
    path = write_submission(DIGITS, ids, probs, classes, out_dir=tmp_path / "subs", arch="demo")
    assert score_submission(DIGITS, path, answers) == 1.0
    probs[:10] = np.roll(probs[:10], 1, axis=1)
    worse = write_submission(DIGITS, ids, probs, classes, out_dir=tmp_path / "subs2", arch="demo")
    assert score_submission(DIGITS, worse, d / "test_answers.csv") == pytest.approx(1 - 10 / len(ids))


def test_missing_answers_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"test_answers.csv not found; run `kit download -c digits`"):
        DIGITS.local_answers(tmp_path)
