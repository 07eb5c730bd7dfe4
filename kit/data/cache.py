"""Decode once, in parallel, into a resized uint8 cache on disk; reuse it on every epoch and run.

Decoding JPEGs is the input pipeline's bound (see ../shared/GPU.md: 376 img/s per core at 224 px).
Doing it once per (file list, size) turns every later epoch into memory-mapped reads, so the model,
not PIL, sets the pace. The cache is keyed by each file's path, size and mtime: any change rebuilds it.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kit.data.images import decode_into

# Below this many files a process pool costs more than it saves.
MIN_FILES_FOR_POOL = 64
# Files per task: large enough to amortise a task's cost, small enough that every worker gets about
# CHUNKS_PER_WORKER of them, so a worker slowed by a neighbour does not leave the others idle at the end.
CHUNK = 64
MIN_CHUNK = 8
CHUNKS_PER_WORKER = 8


def chunk_size(n_files: int, workers: int) -> int:
    """Files per decoding task for `n_files` over `workers` processes."""
    return max(MIN_CHUNK, min(CHUNK, -(-n_files // (max(1, workers) * CHUNKS_PER_WORKER))))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def files_key(files: list[Path], *extra: object) -> str:
    """A digest of the file list (path, size, mtime) and `extra`, for cache file names."""
    h = hashlib.sha1()
    for item in extra:
        h.update(repr(item).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers instantly and they touch only numpy and PIL, never the deep-learning
    # framework's threads; elsewhere spawn is the safe default.
    if sys.platform.startswith("linux"):
        return mp.get_context("fork")
    return mp.get_context("spawn")


def decode_cached(
    files: list[Path],
    sz: int,
    cache_dir: Path,
    name: str = "images",
    num_workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images, ok): a read-only (N, sz, sz, 3) uint8 memmap and a bool mask of decoded files.

    Files that fail to decode are zero images with ok=False; one warning lists them all.
    The cache file appears only once complete (written under a temporary name, then renamed).
    """
    files = [Path(f) for f in files]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = files_key(files, sz)
    final = cache_dir / f"{name}_{sz}px_{key}.npy"
    ok_path = final.with_suffix(".ok.npy")
    if final.exists() and ok_path.exists():
        return np.load(final, mmap_mode="r"), np.load(ok_path)

    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), sz, sz, 3))
    del out
    failures: list[tuple[int, str]] = []
    workers = default_workers() if num_workers is None else num_workers
    per = chunk_size(len(files), workers)
    chunks = [(i, [str(f) for f in files[i : i + per]]) for i in range(0, len(files), per)]
    try:
        with tqdm(total=len(files), desc=f"decode {name} {sz}px", unit="img", disable=not progress, leave=False) as bar:
            if workers <= 1 or len(files) < MIN_FILES_FOR_POOL:
                for start, paths in chunks:
                    failures += decode_into(paths, sz, str(tmp), start)
                    bar.update(len(paths))
            else:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*os.fork.*")  # JAX's fork warning
                    with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
                        futures = [(len(p), pool.submit(decode_into, p, sz, str(tmp), s)) for s, p in chunks]
                        for n, fut in futures:
                            failures += fut.result()
                            bar.update(n)
        ok = np.ones(len(files), dtype=bool)
        for i, _ in failures:
            ok[i] = False
        ok_tmp = ok_path.with_name(f".{ok_path.name}.{os.getpid()}.tmp.npy")
        np.save(ok_tmp, ok)
        os.replace(ok_tmp, ok_path)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    if failures:
        listing = "\n  ".join(msg for _, msg in sorted(failures))
        warnings.warn(f"Skipped {len(failures)} of {len(files)} images that could not be decoded:\n  {listing}", stacklevel=2)
    return np.load(final, mmap_mode="r"), ok
