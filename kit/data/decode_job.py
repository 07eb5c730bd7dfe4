"""Image caches being written in the background, readable chunk by chunk as the workers finish them.

`kit.data.cache.start_decoding` preallocates each split's cache file and hands its chunks (runs of
files) to one `DecodePool` for all the splits: worker processes decode each chunk into its rows of the
file, and a thread of this process collects the finished chunks, keeping only a few per worker queued.
Each split's `DecodeJob` records its chunks as they land: the precompute pass runs the body on them
while the rest still decode (`ready_batches`); everything else waits for the whole cache (`result`).

Ctrl-C while anything waits on a job cancels its pool: the chunks in flight finish, the others are
dropped and the temporary files removed. The interpreter's exit does the same, so a script that ends
before its images are decoded leaves no cache rather than waiting for it. A process killed outright
(SIGKILL) takes its workers with it (`kit.signals.exit_with_owner`); the temporary file it leaves
names it, and the next `kit train` removes it (`kit.io.remove_stale_temporaries`).

Example:
    job = start_decoding([("train", files)], 224, Path("tmp"))[0]
    for rows, xb in job.ready_batches(64): feats[rows] = body(xb)
    images, ok = job.result()
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from kit.data.images import decode_into
from kit.signals import exit_with_owner

# Chunks queued per worker: one running and one waiting, so no worker idles between two; a cancelled
# or interrupted decode stops after these.
IN_FLIGHT_PER_WORKER = 2


class DecodeJob:
    """One split's cache being written: its chunks as they land, then (images, ok) or the error that stopped it.

    Only the thread that decodes (the pool's collector, or the caller for a small split) changes a job;
    any thread may wait on it or read its landed rows.

    Args:
        name: str. The split, for messages.
        n: int. Files (rows of the cache).
        sz: int. Side of the images.
        plan: list of (first row, file paths). The chunks to decode.
        tmp: Path. The preallocated temporary .npy file the workers write into.
        header_len: int. Bytes of its .npy header.
        publish: called with the ok mask once every chunk has landed; saves it, renames `tmp` to the
            cache's name and returns the cache as a read-only memmap.
        discard: called with the error that stopped the decode; removes `tmp` and returns the error
            to raise (a full disk named as such).
    """

    def __init__(
        self,
        name: str,
        n: int,
        sz: int,
        plan: list[tuple[int, list[str]]],
        tmp: Path | None,
        header_len: int,
        publish: Callable[[np.ndarray], np.ndarray] | None,
        discard: Callable[[BaseException], BaseException] | None,
    ):
        self.name, self.n, self.sz, self.plan = name, n, sz, plan
        self.tmp, self.header_len = tmp, header_len
        self._publish, self._discard = publish, discard
        self._cond = threading.Condition()
        self._landed: list[tuple[int, np.ndarray]] = []  # (first row, ok mask of its rows), in landing order
        self._failures: list[tuple[int, str]] = []
        self._images: np.ndarray | None = None
        self._ok: np.ndarray | None = None
        self._error: BaseException | None = None
        self._warned = False
        self.pool: DecodePool | None = None
        self.started_at, self.finished_at = time.perf_counter(), None
        # Rows are read through a descriptor opened now: it outlives the rename of `tmp`.
        self._fd = os.open(tmp, os.O_RDONLY) if tmp is not None else None
        if self._fd is not None:
            weakref.finalize(self, os.close, self._fd)

    @classmethod
    def finished(cls, name: str, images: np.ndarray, ok: np.ndarray) -> DecodeJob:
        """A job for a cache already on disk: one landed chunk, nothing to decode."""
        job = cls(name, len(ok), int(images.shape[1]), [], None, 0, None, None)
        job._landed, job._images, job._ok, job.finished_at = [(0, ok)], images, ok, job.started_at
        return job

    # ------------------------------------------------------------------------- state (the decoding thread)
    @property
    def done(self) -> bool:
        """Whether the cache is complete or its decode failed."""
        return self._images is not None or self._error is not None

    @property
    def landed(self) -> int:
        """Chunks decoded so far."""
        return len(self._landed)

    def land(self, start: int, n: int, failures: list[tuple[int, str]]) -> None:
        """Records the chunk of rows start..start+n as written (`failures`: its rows that are zeros)."""
        ok = np.ones(n, dtype=bool)
        ok[[i - start for i, _ in failures]] = False
        with self._cond:
            if self.done:
                return  # a chunk in flight when the job failed
            self._landed.append((start, ok))
            self._failures += failures
            last = len(self._landed) == len(self.plan)
            self._cond.notify_all()
        if last:
            self._finish()

    def _finish(self) -> None:
        ok = np.ones(self.n, dtype=bool)
        ok[[i for i, _ in self._failures]] = False
        try:
            images = self._publish(ok)
        except BaseException as e:
            self.fail(e)  # stored, and raised to whoever reads the job
            if not isinstance(e, Exception):
                raise  # Ctrl-C while a small split is saved here
            return
        with self._cond:
            self._images, self._ok, self.finished_at = images, ok, time.perf_counter()
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Stops the job with `error` (raised to its readers); its temporary file is removed."""
        if self.done:
            return
        error = self._discard(error)
        with self._cond:
            self._error, self.finished_at = error, time.perf_counter()
            self._cond.notify_all()

    def run_here(self, desc: str, progress: bool) -> None:
        """Decodes every chunk in this thread (a small split, or num_workers=1)."""
        if not self.plan:
            self._finish()  # no files: an empty cache
            return
        with tqdm(total=self.n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for start, paths in self.plan:
                try:
                    failures = decode_into(paths, self.sz, str(self.tmp), start, self.header_len)
                except BaseException as e:
                    self.fail(e)
                    if not isinstance(e, Exception):
                        raise  # Ctrl-C: stop here, as before
                    return
                self.land(start, len(paths), failures)
                bar.update(len(paths))

    # ------------------------------------------------------------------------- readers (any thread)
    def cancel(self) -> None:
        """Stops the pool decoding this job (and its other splits); returns once its thread has ended."""
        if self.pool is not None:
            self.pool.cancel()

    def _wait_for(self, ready: Callable[[], bool]) -> None:
        try:
            with self._cond:
                self._cond.wait_for(ready)
        except KeyboardInterrupt:
            self.cancel()
            raise

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Waits for the whole cache: (images memmap, ok mask). Warns once, listing the files that failed.

        Raises:
            The error that stopped the decode: `NotEnoughSpaceError` for a full disk, RuntimeError for
            a dead worker or a cancelled decode.
        """
        self._wait_for(lambda: self.done)
        with self._cond:
            if self._error is not None:
                raise self._error
            warn, self._warned = bool(self._failures) and not self._warned, True
        if warn:
            listing = "\n  ".join(msg for _, msg in sorted(self._failures))
            warnings.warn(
                f"Skipped {len(self._failures)} of {self.n} images that could not be decoded:\n  {listing}",
                stacklevel=3,
            )
        return self._images, self._ok

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, ok mask) of each chunk as it lands, until the last; raises the job's error."""
        i = 0
        while True:
            self._wait_for(lambda i=i: len(self._landed) > i or self.done)
            with self._cond:
                new, error = self._landed[i:], self._error
            if error is not None:
                raise error
            if not new:
                return
            i += len(new)
            yield from new

    def read(self, start: int, n: int) -> np.ndarray:
        """Rows start..start+n, which must have landed, as an (n, sz, sz, 3) uint8 array."""
        if self._fd is None:
            return np.asarray(self._images[start : start + n])
        row = self.sz * self.sz * 3
        size, offset, parts = n * row, self.header_len + start * row, []
        while size > 0:
            part = os.pread(self._fd, size, offset)
            if not part:
                raise OSError(f"The '{self.name}' image cache {self.tmp} ends before row {start + n}.")
            parts.append(part)
            size, offset = size - len(part), offset + len(part)
        return np.frombuffer(b"".join(parts) if len(parts) > 1 else parts[0], dtype=np.uint8).reshape(
            n, self.sz, self.sz, 3
        )

    def ready_batches(self, bs: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(rows, images) of `bs` decoded rows at a time (the last batch shorter), as their chunks land.

        Rows of files that failed to decode are left out; `rows` index the cache (all files).
        """
        xs: list[np.ndarray] = []
        ids: list[np.ndarray] = []
        have = 0
        for chunk_start, chunk_ok in self.chunks():
            # A cache already on disk lands as one chunk of every row: read it `bs` rows at a time.
            for offset in range(0, len(chunk_ok), bs):
                start, ok = chunk_start + offset, chunk_ok[offset : offset + bs]
                rows = start + np.flatnonzero(ok)
                if len(rows) == 0:
                    continue
                x = self.read(start, len(ok))
                xs.append(x if len(rows) == len(ok) else x[ok])
                ids.append(rows)
                have += len(rows)
                while have >= bs:
                    x, i = (xs[0], ids[0]) if len(xs) == 1 else (np.concatenate(xs), np.concatenate(ids))
                    yield i[:bs], x[:bs]
                    xs, ids, have = [x[bs:]], [i[bs:]], have - bs
        if have:
            yield np.concatenate(ids), np.concatenate(xs)


class DecodePool:
    """Worker processes decoding the chunks of several jobs, job after job; a thread here collects them.

    Args:
        jobs: the DecodeJobs, in the order their chunks are decoded.
        workers: int. Processes.
        mp_context: how to start them (`kit.data.cache._pool_context`).
        desc: str. The progress bar's label.
        progress: bool. Show a progress bar.
    """

    def __init__(self, jobs: list[DecodeJob], workers: int, mp_context, desc: str, progress: bool):
        self.jobs = jobs
        self._queue = deque((job, start, paths) for job in jobs for start, paths in job.plan)
        self._window = max(1, workers) * IN_FLIGHT_PER_WORKER
        self._in_flight: dict[Future, tuple[DecodeJob, int, int]] = {}  # future -> (job, first row, files)
        self._cancelled = threading.Event()
        self._stop: BaseException | None = None
        self._bar = tqdm(total=sum(j.n for j in jobs), desc=desc, unit="img", disable=not progress, leave=False)
        # Workers ignore Ctrl-C and SIGTERM (this process decides, and lets the chunks in flight finish)
        # and die with this process, even one killed with SIGKILL.
        self._pool = ProcessPoolExecutor(
            workers, mp_context=mp_context, initializer=exit_with_owner, initargs=(os.getpid(),)
        )
        for job in jobs:
            job.pool = self
        self._thread = threading.Thread(target=self._collect, name="kit-decode", daemon=False)
        try:
            self._submit()  # in the caller's thread: a fork-started pool forks its workers here, before ours runs
        except Exception as e:  # workers that cannot start: every job fails with it
            self._stop = e
            self._queue.clear()
        except BaseException:
            self._cancelled.set()  # Ctrl-C: the thread lets the chunks sent finish, then cleans up
            raise
        finally:
            self._thread.start()

    def _submit(self) -> None:
        while self._queue and len(self._in_flight) < self._window and not self._cancelled.is_set():
            job, start, paths = self._queue.popleft()
            if job.done:
                continue  # failed: its other chunks are dropped
            future = self._pool.submit(decode_into, paths, job.sz, str(job.tmp), start, job.header_len)
            self._in_flight[future] = (job, start, len(paths))

    def _collect(self) -> None:
        try:
            while self._in_flight:
                finished, _ = wait(list(self._in_flight), return_when=FIRST_COMPLETED)
                for future in finished:
                    job, start, n = self._in_flight.pop(future)
                    if not self._in_flight and not self._queue:
                        # The pool goes before the last chunk lands and wakes whoever waits for it: at
                        # exit, Python 3.11 wakes every pool's thread and fails on one still closing.
                        self._pool.shutdown(wait=True)
                    try:
                        failures = future.result()
                    except BaseException as e:  # noqa: BLE001 -- a worker's error belongs to its job
                        job.fail(e)
                    else:
                        job.land(start, n, failures)
                    self._bar.update(n)
                try:
                    self._submit()
                except RuntimeError as e:  # the pool broke, or the interpreter is exiting: no new chunks
                    self._stop = e if isinstance(e, BrokenExecutor) else None
                    self._queue.clear()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._bar.close()
            for job in self.jobs:
                job.fail(
                    self._stop
                    or RuntimeError(
                        f"Decoding the '{job.name}' images was cancelled (Ctrl-C, or the interpreter exiting) before it "
                        "ended; nothing was cached. Call ImageClassifierData.from_paths again to decode them."
                    )
                )

    def cancel(self) -> None:
        """Lets the chunks in flight finish, drops the rest (their jobs fail) and waits for the thread."""
        self._cancelled.set()
        if threading.current_thread() is not self._thread:
            self._thread.join()
