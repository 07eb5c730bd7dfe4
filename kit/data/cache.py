"""Decode once, in parallel, into a resized uint8 cache on disk; reuse it on every epoch and run.

Decoding JPEGs is the input pipeline's bound (about 376 images a second per core at 224 px).
Doing it once per (file list, size) turns every later epoch into memory-mapped reads, so the model,
not PIL, sets the pace. The cache is keyed by each file's path, size, mtime, inode and ctime: any
change rebuilds it, even a same-size copy that kept the old mtime (`cp -p`, rsync, unzip), and the
caches of the split's earlier file lists are removed then, with the activations computed from them
(`kit.training.precompute`, which owns those files).

Writing goes through ordinary file I/O into a file preallocated to its full size (a full disk is an
`OSError` before any decoding, never a SIGBUS from a memory map of a sparse file); reading is a
read-only memory map. `start_decoding` returns while worker processes write (one pool for every
split); each split's `DecodeJob` (`kit.data.decode_job`) hands out its chunks as they land and then
the finished cache. `decode_cached` is the same, waited for.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import multiprocessing as mp
import os
import re
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

from kit._compat import jax_runtime_started, tensorflow_runtime_started
from kit.data.decode_job import DecodeJob, DecodePool
from kit.data.images import decode_into, pwrite_all
from kit.io import NotEnoughSpaceError, atomic_path, ensure_free_space, file_room, is_no_room
from kit.training.precompute import remove_activations

# Below this many files a process pool costs more than it saves.
MIN_FILES_FOR_POOL = 64
# Files per task: large enough to amortise a task's cost, small enough that every worker gets about
# CHUNKS_PER_WORKER of them, so a worker slowed by a neighbour does not leave the others idle at the end.
CHUNK = 64
MIN_CHUNK = 8
CHUNKS_PER_WORKER = 8
# Reserving the cache's blocks up front turns a full disk into an OSError before any decoding.
PREALLOCATE = hasattr(os, "posix_fallocate")
CACHE_NAME = re.compile(r"^(?P<name>.+)_(?P<sz>\d+)px_(?P<key>[0-9a-f]{16})(?:\.ok)?\.npy$")


def chunk_size(n_files: int, workers: int) -> int:
    """Files per decoding task for `n_files` over `workers` processes."""
    return max(MIN_CHUNK, min(CHUNK, -(-n_files // (max(1, workers) * CHUNKS_PER_WORKER))))


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def files_key(files: list[Path], *extra: object) -> str:
    """A digest of the file list (path, size, mtime, inode, ctime) and `extra`, for cache file names.

    Inode and ctime catch a file replaced by one of the same size with the old mtime (`cp -p`,
    rsync, unzip). Names are hashed as the file system's bytes, whatever their encoding; a file that
    cannot be stat'ed (vanished, a link that dangles or loops) enters as its error, never stopping it.
    """
    h = hashlib.sha1()
    for item in extra:
        h.update(repr(item).encode())
    for f in files:
        try:
            st = os.stat(f)
            meta = f"{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}"
        except OSError as e:
            meta = f"error {e.errno}"
        h.update(os.fsencode(f) + f"\0{meta}\n".encode())
    return h.hexdigest()[:16]


def pixels_key(images: np.ndarray, rows: np.ndarray, files: list[Path]) -> str:
    """Names the pixels a split feeds (its image cache's key and the rows it keeps), for derived caches.

    Unlike `files_key` it does not look at the files again: a file deleted or replaced after
    `from_paths` changes nothing, as the pixels decoded then are the ones used.
    """
    m = CACHE_NAME.match(Path(getattr(images, "filename", None) or "").name)
    if m is None:
        return files_key(files, np.shape(images))
    return m["key"] + hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:4]


def runtime_started() -> bool:
    """Whether a JAX or TensorFlow runtime (and its thread pools) is up in this process.

    Importing either starts nothing; their first computation does. Read from `sys.modules` only,
    so this never imports or starts a framework itself.
    """
    return jax_runtime_started() or tensorflow_runtime_started()


def _pool_context() -> mp.context.BaseContext:
    # fork starts workers instantly, and they touch only numpy and PIL. But forking a process whose
    # JAX or TensorFlow runtime runs threads copies their locks mid-use (JAX warns; a worker can
    # hang), so then the workers come from a forkserver: a fresh process that imports the decoder
    # once (preloaded, and never the user's script, which the default preload of __main__ would rerun)
    # and forks them cleanly. Elsewhere than Linux, spawn.
    if not sys.platform.startswith("linux"):
        return mp.get_context("spawn")
    if not runtime_started():
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([decode_into.__module__])
    return ctx


def _npy_header(shape: tuple[int, ...], dtype: type) -> bytes:
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _preallocate(path: Path, header: bytes, size: int) -> None:
    """Creates `path` with its .npy header, its blocks reserved up to `size`: no room fails here."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        if PREALLOCATE:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as e:
                if is_no_room(e):
                    raise
                # A file system without fallocate: the workers' writes extend the file instead.
        pwrite_all(fd, header, 0)
    finally:
        os.close(fd)


def _prune(cache_dir: Path, name: str, sz: int, keep: str, before: float) -> None:
    """Removes this split's caches at this size for other file lists, and the activations computed from them.

    Caches finished after `before` (when this one began) are left alone: a concurrent run wrote them.
    """
    for p in cache_dir.glob(f"{glob.escape(name)}_{sz}px_*.npy"):
        m = CACHE_NAME.match(p.name)
        if m is None or m["name"] != name or int(m["sz"]) != sz or m["key"] == keep:
            continue
        try:
            if p.stat().st_mtime >= before:
                continue
        except FileNotFoundError:
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
        remove_activations(cache_dir, m["key"])


def _cache_error(e: BaseException, cache_dir: Path, need: int, what: str) -> BaseException:
    """The error a failed decode raises: a dead worker and a full disk named as such, others as they are."""
    if isinstance(e, BrokenProcessPool):
        error: BaseException = RuntimeError(
            f"A decoding worker died while writing the image cache in {cache_dir} (out of memory, or "
            f"killed by a signal); nothing was cached. num_workers=1 decodes in this process instead."
        )
    elif is_no_room(e) and not isinstance(e, NotEnoughSpaceError):
        error = NotEnoughSpaceError(cache_dir, need, file_room(cache_dir), what)
    else:
        return e
    error.__cause__ = e
    return error


def _open_job(name: str, files: list[Path], sz: int, cache_dir: Path, workers: int) -> DecodeJob:
    """The split's cache read from disk (a finished job), or a new one preallocated under a temporary name."""
    key = files_key(files, sz)
    final = cache_dir / f"{name}_{sz}px_{key}.npy"
    ok_path = final.with_suffix(".ok.npy")
    with contextlib.suppress(FileNotFoundError):  # removed in between by a concurrent run: rebuild it
        if final.exists() and ok_path.exists():
            return DecodeJob.finished(name, np.load(final, mmap_mode="r"), np.load(ok_path))

    began = time.time()
    shape = (len(files), sz, sz, 3)
    header = _npy_header(shape, np.uint8)
    size = len(header) + int(np.prod(shape))
    need = size + len(_npy_header((len(files),), np.bool_)) + len(files)
    what = f"the '{name}' image cache ({len(files)} images at {sz}px)"
    ensure_free_space(cache_dir, need, what)
    # The temporary file lives as long as the job, across threads: the stack closes it (renaming it
    # to `final`) once every chunk has landed, or unwinds it (removing it) on the first error.
    stack = contextlib.ExitStack()
    tmp = stack.enter_context(atomic_path(final))

    def discard(e: BaseException) -> BaseException:
        stack.__exit__(type(e), e, e.__traceback__)
        return _cache_error(e, cache_dir, need, what)

    def publish(ok: np.ndarray) -> np.ndarray:
        with atomic_path(ok_path) as ok_tmp:
            np.save(ok_tmp, ok)
        stack.close()
        _prune(cache_dir, name, sz, key, began)
        return np.load(final, mmap_mode="r")

    try:
        _preallocate(tmp, header, size)
    except BaseException as e:
        error = discard(e)
        if error is e:
            raise
        raise error from e
    per = chunk_size(len(files), workers)
    plan = [(i, [str(f) for f in files[i : i + per]]) for i in range(0, len(files), per)]
    return DecodeJob(name, len(files), sz, plan, tmp, len(header), publish, discard)


def start_decoding(
    splits: list[tuple[str, list[Path]]],
    sz: int,
    cache_dir: Path,
    num_workers: int | None = None,
    progress: bool = True,
) -> list[DecodeJob]:
    """Starts decoding each (name, files) into its uint8 cache; returns their DecodeJobs, in order.

    A cache on disk is a finished job. A split of at least MIN_FILES_FOR_POOL files decodes in worker
    processes, one pool for all such splits (their chunks queued split after split), and this returns
    while they work; a smaller split, or num_workers=1, is decoded here before it returns. Every
    cache is preallocated first, so a full disk is raised here, before any decoding.

    Example:
        trn, val = start_decoding([("train", trn_files), ("valid", val_files)], 224, Path("tmp"))
        images, ok = trn.result()   # waits for the train cache

    Raises:
        NotEnoughSpaceError: an OSError naming `cache_dir`, the bytes needed and the bytes free.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if num_workers is None else num_workers
    jobs: list[DecodeJob] = []
    try:
        for name, files in splits:
            jobs.append(_open_job(name, [Path(f) for f in files], sz, cache_dir, workers))
    except BaseException as e:
        for job in jobs:
            job.fail(e)  # removes the temporary files already made
        raise
    pooled = [j for j in jobs if not j.done and workers > 1 and j.n >= MIN_FILES_FOR_POOL]
    if pooled:
        DecodePool(pooled, workers, _pool_context(), f"decode {'+'.join(j.name for j in pooled)} {sz}px", progress)
    try:
        for job in jobs:
            if not job.done and job not in pooled:
                job.run_here(f"decode {job.name} {sz}px", progress)
    except BaseException:
        if pooled:
            pooled[0].cancel()  # Ctrl-C: the pool stops too
        raise
    return jobs


def decode_cached(
    files: list[Path],
    sz: int,
    cache_dir: Path,
    name: str = "images",
    num_workers: int | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images, ok): a read-only (N, sz, sz, 3) uint8 memmap and a bool mask of decoded files.

    Files that fail to decode (corrupt, truncated, decompression bombs, vanished, links that dangle
    or loop) are zero images with ok=False; one warning lists them all. The cache file appears only
    once complete (written under a temporary name, removed on any failure, then renamed); the
    caches of this split's earlier file lists at this size are removed then.

    Raises:
        NotEnoughSpaceError: an OSError naming `cache_dir`, the bytes needed and the bytes free,
            raised before decoding when the disk has no room, or if a write still fails.
    """
    return start_decoding([(name, files)], sz, cache_dir, num_workers, progress)[0].result()
