"""What bench/cpu.py and bench/gpu.py share: synthetic photos, the plain PIL decode bound, the machine.

Imports only numpy and PIL at module level, so the decode and writer processes start fast.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from kit.io import atomic_path

# Dogs vs. Cats photos are mostly 500×375 JPEGs of ~40 KB: quality 80 over smooth gradients, waves
# and noise of sigma ~12 gives the same size, so decoding costs what it costs on the real files.
PHOTO_W, PHOTO_H = 500, 375
JPEG_QUALITY = 80
NOISE_SIGMA = 12.0
# Noise is cut from one larger field at a random offset: drawing 560k normals per image would
# make writing 25,000 files slower than decoding them.
_NOISE_PAD = 97


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(*libs: str) -> dict[str, str]:
    """Versions of Python, numpy, Pillow and `libs` (e.g. "keras", "jax"), each imported here."""
    import importlib

    import PIL

    out = {"python": platform.python_version(), "numpy": np.__version__, "pillow": PIL.__version__}
    for name in libs:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            out[name] = "absent"
    return out


def _pool(workers: int) -> ProcessPoolExecutor:
    # fork: workers start at once and share the parent's imports (numpy, PIL) for free.
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else mp.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx)


def synth_photo(rng: np.random.Generator, noise: np.ndarray, label: int) -> Image.Image:
    """A photo-like 500×375 RGB image: a tinted gradient, soft waves and sensor-like noise.

    `label` shifts the tint (0 redder, 1 bluer), so a model can tell the classes apart.
    """
    x = np.linspace(0.0, 1.0, PHOTO_W, dtype=np.float32)[None, :, None]
    y = np.linspace(0.0, 1.0, PHOTO_H, dtype=np.float32)[:, None, None]
    base = rng.uniform(50, 205, 3).astype(np.float32)
    base += np.array([25, 0, -25] if label == 0 else [-25, 0, 25], dtype=np.float32)
    gx, gy = rng.uniform(-60, 60, (2, 3)).astype(np.float32)
    fx, fy = rng.uniform(6, 40, 2)
    px, py = rng.uniform(0, 2 * math.pi, 2)
    row = gx * x + 30.0 * np.sin(fx * x + px, dtype=np.float32)
    col = gy * y + 30.0 * np.sin(fy * y + py, dtype=np.float32)
    oy, ox = rng.integers(0, _NOISE_PAD, 2)
    img = base + row + col + noise[oy : oy + PHOTO_H, ox : ox + PHOTO_W]
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _write_some(jobs: list[tuple[str, int]], seed: int) -> int:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0.0, NOISE_SIGMA, (PHOTO_H + _NOISE_PAD, PHOTO_W + _NOISE_PAD, 3)).astype(np.float32)
    for path, label in jobs:
        with atomic_path(path) as tmp:
            synth_photo(rng, noise, label).save(tmp, "JPEG", quality=JPEG_QUALITY)
    return len(jobs)


def write_photos(jobs: list[tuple[Path, int]], seed: int = 0, workers: int | None = None) -> None:
    """Writes each (path, label) as a synthetic JPEG, in parallel; the parent folders must exist."""
    workers = workers or cores()
    per = max(1, math.ceil(len(jobs) / (workers * 4)))
    parts = [[(str(p), int(c)) for p, c in jobs[i : i + per]] for i in range(0, len(jobs), per)]
    if workers <= 1 or len(parts) <= 1:
        for k, part in enumerate(parts):
            _write_some(part, seed * 100_003 + k)
        return
    with _pool(workers) as pool:
        for f in [pool.submit(_write_some, part, seed * 100_003 + k) for k, part in enumerate(parts)]:
            f.result()


def make_lesson_folders(
    root: Path, n_train: int, n_valid: int, n_test: int = 0, seed: int = 0, workers: int | None = None
) -> Path:
    """The lesson's layout of synthetic photos: root/{train,valid}/{cats,dogs}/*.jpg and root/test/*.jpg."""
    root = Path(root)
    jobs: list[tuple[Path, int]] = []
    for split, n in (("train", n_train), ("valid", n_valid)):
        for c, cls in enumerate(("cats", "dogs")):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            k = n // 2 + (n % 2 if c == 0 else 0)
            jobs += [(d / f"{cls[:-1]}.{i}.jpg", c) for i in range(k)]
    if n_test:
        (root / "test").mkdir(parents=True, exist_ok=True)
        jobs += [(root / "test" / f"{i + 1}.jpg", i % 2) for i in range(n_test)]
    write_photos(jobs, seed=seed, workers=workers)
    return root


def warm_page_cache(files: list[Path]) -> int:
    """Reads every file once, so every timed pass reads from memory, as repeated epochs do."""
    return sum(len(Path(f).read_bytes()) for f in files)


def pil_decode(path: str, sz: int) -> np.ndarray:
    """The plain decode: Image.open → draft → resize → np.asarray (no EXIF, no crop, no checks)."""
    with Image.open(path) as img:
        img.draft("RGB", (sz, sz))
        img = img.convert("RGB").resize((sz, sz), Image.BILINEAR)
        return np.asarray(img)


def _pil_decode_many(paths: list[str], sz: int) -> int:
    # The arrays are dropped rather than sent back: the bound is decoding alone, the strictest one.
    for p in paths:
        pil_decode(p, sz)
    return len(paths)


def decode_bound(files: list[Path], sz: int, workers: int | None = None) -> float:
    """Seconds for a plain ProcessPoolExecutor of `workers` processes to decode `files` to sz×sz.

    The pool's start is timed too: the kit's pass starts its own pool as well.
    """
    workers = workers or cores()
    paths = [str(f) for f in files]
    per = max(1, math.ceil(len(paths) / (workers * 8)))
    parts = [paths[i : i + per] for i in range(0, len(paths), per)]
    t0 = time.perf_counter()
    with _pool(workers) as pool:
        n = sum(pool.map(_pil_decode_many, parts, [sz] * len(parts)))
    dt = time.perf_counter() - t0
    if n != len(paths):
        raise RuntimeError(f"decode_bound decoded {n} of {len(paths)} files.")
    return dt


def alternate(fns: dict[str, Callable[[], float]], reps: int) -> dict[str, list[float]]:
    """Runs each timing function `reps` times, interleaved (a, b, a, b, ...); every time of each.

    Interleaving spreads a noisy neighbour's load over both sides of a ratio.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(fn())
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """The median of num[i] / den[i]: each pair ran back to back, under the same load."""
    return statistics.median(a / b for a, b in zip(num, den))


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.s` holds the seconds."""

    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.s = time.perf_counter() - self.t0
