"""Generated images in each competition's own file layout, as Kaggle's bundle holds them (what the fake
Kaggle server serves as `<slug>.zip`): CSV labels, loose .tif tiles, class folders of .png.

`competition_files(slug)` returns ({file name in the bundle: bytes}, {test id: class}, the sample's header).
"""

from __future__ import annotations

import io

import numpy as np

from helpers.fake_kaggle import make_zip
from helpers.images import easy_image
from kit.kaggle import get_competition

PLANTS = get_competition("plant-seedlings-classification").classes  # the 12 species
BREEDS = ("afghan_hound", "boston_bull", "pug")


def _image(ci: int, rng: np.random.Generator, fmt: str, size: int) -> bytes:
    img = easy_image(ci, rng, size).resize((size, size))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    return ("\n".join(",".join(r) for r in [header, *rows]) + "\n").encode()


def competition_files(slug: str, n: int = 6, n_test: int = 6, seed: int = 0) -> tuple[dict, dict, list[str]]:
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    answers: dict[str, str] = {}
    if slug == "dog-breed-identification":
        rows = []
        train = {}
        for k in range(n * len(BREEDS)):
            i = f"{k:08x}d0g"
            train[f"train/{i}.jpg"] = _image(k % len(BREEDS), rng, "JPEG", 40)
            rows.append([i, BREEDS[k % len(BREEDS)]])
        test = {}
        for k in range(n_test):
            test[f"test/t{k:04d}.jpg"] = _image(k % len(BREEDS), rng, "JPEG", 40)
            answers[f"t{k:04d}"] = BREEDS[k % len(BREEDS)]
        header = ["id", *sorted(BREEDS)]
        files = {
            "labels.csv": _csv(["id", "breed"], rows),
            "train.zip": make_zip(train),
            "test.zip": make_zip(test),
            "sample_submission.csv": _csv(header, [[i] + ["0.333333"] * len(BREEDS) for i in answers]),
        }
    elif slug == "aerial-cactus-identification":
        rows, train, test = [], {}, {}
        for k in range(2 * n):
            i = f"{k:08x}c4c.jpg"  # the ids are file names
            train[f"train/{i}"] = _image(k % 2, rng, "JPEG", 32)
            rows.append([i, str(k % 2)])
        for k in range(n_test):
            i = f"{k:08x}7e5.jpg"
            test[f"test/{i}"] = _image(k % 2, rng, "JPEG", 32)
            answers[i] = str(k % 2)
        header = ["id", "has_cactus"]
        files = {
            "train.csv": _csv(["id", "has_cactus"], rows),
            "train.zip": make_zip(train),
            "test.zip": make_zip(test),
            "sample_submission.csv": _csv(header, [[i, "0.5"] for i in answers]),
        }
    elif slug == "histopathologic-cancer-detection":
        rows = []
        for k in range(2 * n):
            i = f"{k:040x}"
            files[f"train/{i}.tif"] = _image(k % 2, rng, "TIFF", 96)
            rows.append([i, str(k % 2)])
        for k in range(n_test):
            i = f"{k + 1000:040x}"
            files[f"test/{i}.tif"] = _image(k % 2, rng, "TIFF", 96)
            answers[i] = str(k % 2)
        header = ["id", "label"]
        files["train_labels.csv"] = _csv(header, rows)
        files["sample_submission.csv"] = _csv(header, [[i, "0"] for i in answers])
    elif slug == "plant-seedlings-classification":
        train, test = {}, {}
        for ci, species in enumerate(PLANTS):
            for k in range(n):
                train[f"train/{species}/{ci:02d}{k:05x}a.png"] = _image(ci, rng, "PNG", 40)
        for k in range(n_test):
            name = f"{k:07x}f.png"
            test[f"test/{name}"] = _image(k % len(PLANTS), rng, "PNG", 40)
            answers[name] = PLANTS[k % len(PLANTS)]
        header = ["file", "species"]
        files = {
            "train.zip": make_zip(train),
            "test.zip": make_zip(test),
            "sample_submission.csv": _csv(header, [[i, "Maize"] for i in answers]),
        }
    elif slug == "aptos2019-blindness-detection":
        rows = []
        for k in range(5 * n):
            i = f"{k:012x}"
            files[f"train_images/{i}.png"] = _image(k % 5, rng, "PNG", 40)
            rows.append([i, str(k % 5)])
        for k in range(n_test):
            i = f"{k + 500:012x}"
            files[f"test_images/{i}.png"] = _image(k % 5, rng, "PNG", 40)
            answers[i] = str(k % 5)
        header = ["id_code", "diagnosis"]
        files["train.csv"] = _csv(header, rows)
        files["test.csv"] = _csv(["id_code"], [[i] for i in answers])
        files["sample_submission.csv"] = _csv(header, [[i, "0"] for i in answers])
    else:
        raise ValueError(f"no generator for {slug!r}")
    return files, answers, header
