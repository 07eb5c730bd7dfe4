"""Generated, easy-to-learn images laid out as the lesson's class folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Each class gets its own dominant colour, so a tiny model learns it in a few steps.
COLOURS = [(200, 40, 40), (40, 40, 200), (40, 200, 40), (200, 200, 40), (40, 200, 200)]


def easy_image(cls: int, rng: np.random.Generator, size: int = 40) -> Image.Image:
    """An RGB image whose class is its colour, with noise and a random size."""
    h = int(size * rng.uniform(0.8, 1.3))
    w = int(size * rng.uniform(0.8, 1.3))
    base = np.array(COLOURS[cls % len(COLOURS)], dtype=np.float32)
    arr = base + rng.normal(0, 30, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def make_folders(
    root: Path,
    classes: tuple[str, ...] = ("cats", "dogs"),
    n_train: int = 12,
    n_valid: int = 6,
    n_test: int = 0,
    size: int = 40,
    seed: int = 0,
) -> Path:
    """Writes root/train/<class>/*.jpg, root/valid/<class>/*.jpg and optionally root/test/*.jpg."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    for split, n in (("train", n_train), ("valid", n_valid)):
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                easy_image(ci, rng, size).save(d / f"{cls[:-1] if cls.endswith('s') else cls}.{i}.jpg", quality=90)
    if n_test:
        d = root / "test"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_test):
            easy_image(i % len(classes), rng, size).save(d / f"{i + 1}.jpg", quality=90)
    return root
