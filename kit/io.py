"""Writing files so that nothing is ever half-written: atomic writes, strict JSON, and the one rule for "no room".

Every file the kit writes (caches, activations, weights, runs, reports, submissions) goes through
`atomic_path`: the writer fills a hidden temporary file in the same folder, which replaces the target
with `os.replace` only once complete, and is removed on any failure (a full disk, Ctrl-C, a crash
in the writer), so the previous file, if any, stays intact. What a killed writer leaves (it cannot
remove anything) names it, and `remove_stale_temporaries` removes it once that process is gone.

Two more rules live here, so that no writer has its own: every JSON file is strict (`to_json`,
`atomic_write_json`: NaN and infinities become null), and a write that finds no room (`NO_ROOM_ERRNOS`:
a full disk, a quota, a file-size limit) becomes one error, `NotEnoughSpaceError`, with one sentence
(`no_room_message`) naming the folder, what was written and, when known, the bytes.

Example:

```python
with atomic_path("runs/r1/predictions.npz") as tmp:
    np.savez(tmp, **arrays)
atomic_write_json("runs/r1/history.json", history)
```
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import math
import os
import re
import shutil
import socket
import stat
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kit.signals import pid_alive

try:
    import resource  # POSIX only
except ImportError:  # pragma: no cover - Windows
    resource = None

# `.<name>.<pid>-<host>-<random>.tmp<suffix>`: the writer's process id and a digest of its machine's
# name, so that a later run can tell a dead writer's file from a live one's. Older files have only
# `.<name>.<random>.tmp<suffix>`.
TMP_NAME = re.compile(
    r"^\.(?P<stem>.+)\.(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{4})-)?[0-9a-f]{8}\.tmp(?P<suffix>\.[\w.]+)?$"
)
# A temporary file not written for this long, whose writer cannot be checked, is a leftover: the
# kit's slowest writer (a cache that workers fill) writes every few seconds.
STALE_AFTER_S = 3600.0


# The errnos that mean "no room": the device is full (ENOSPC), the user's quota is (EDQUOT), or the file
# outgrew a size limit (EFBIG: the file system's, or the process's RLIMIT_FSIZE). Every writer of the kit
# treats them alike, through `is_no_room` and `no_room_error`.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
NO_ROOM_ADVICE = "Free some space or point the kit at another folder."


def is_no_room(e: BaseException | None) -> bool:
    """Whether `e` says a write found no room (one of NO_ROOM_ERRNOS)."""
    return isinstance(e, OSError) and e.errno in NO_ROOM_ERRNOS


def no_room_message(
    folder: str | os.PathLike,
    what: str = "the file",
    need: int | None = None,
    free: int | None = None,
    doing: str | None = None,
    advice: str = NO_ROOM_ADVICE,
) -> str:
    """The one sentence for a write that does not fit: the folder, what was written, the bytes when known.

    Example:
        no_room_message("data/tmp", "the 'train' image cache", need=10**9)
        # "Not enough free space in data/tmp for the 'train' image cache: needs 953.7 MB (1000000000 bytes), ..."

    Args:
        folder: the folder written into.
        what: str. What was written ("the weights x.weights.h5").
        need: int or None. The bytes it needs, when known before the write.
        free: int or None. The bytes free (default: `file_room`, measured now, when `need` is given).
        doing: str or None. What failed, when no size is known ("extracting train.zip"); default "writing {what}".
        advice: str. The last sentence: what the user can do.
    """
    if need is None:
        return f"No space left in {folder} while {doing or 'writing ' + what}. {advice}"
    if free is None:
        try:
            free = file_room(folder)
        except OSError:
            free = 0
    return (
        f"Not enough free space in {folder} for {what}: needs {human_bytes(need)} ({need} bytes), "
        f"{human_bytes(free)} ({free} bytes) free. {advice}"
    )


class NotEnoughSpaceError(OSError):
    """A write that does not fit (ENOSPC): names the folder, what was written and, when known, the bytes.

    Raised before a write that would not fit (`ensure_free_space`), or for one that failed for want of
    room (`no_room_error`). See `no_room_message` for the arguments.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        need: int | None = None,
        free: int | None = None,
        what: str = "the file",
        doing: str | None = None,
        advice: str = NO_ROOM_ADVICE,
    ):
        super().__init__(errno.ENOSPC, no_room_message(folder, what, need, free, doing, advice))
        self.folder, self.need, self.free = Path(folder), need, free
        self._args = (folder, need, free, what, doing, advice)

    def __reduce__(self):
        # OSError pickles as (errno, strerror): rebuild from our own arguments (a worker's error travels).
        return type(self), self._args, self.__dict__


def no_room_error(
    e: BaseException,
    folder: str | os.PathLike,
    what: str = "the file",
    need: int | None = None,
    free: int | None = None,
    doing: str | None = None,
    advice: str = NO_ROOM_ADVICE,
) -> BaseException:
    """`e` as a NotEnoughSpaceError naming `folder` when it means no room (`is_no_room`); `e` itself otherwise.

    Example:
        except OSError as e:
            if is_no_room(e):
                raise no_room_error(e, dest, doing=f"extracting {zip_path.name}") from e
            raise
    """
    if isinstance(e, NotEnoughSpaceError) or not is_no_room(e):
        return e
    error = NotEnoughSpaceError(folder, need, free, what, doing, advice)
    error.__cause__ = e
    return error


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def free_bytes(folder: str | os.PathLike) -> int:
    """Bytes free for an ordinary user in `folder` (or its nearest existing parent)."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def file_room(folder: str | os.PathLike) -> int:
    """Bytes one file in `folder` may take: the free space, or less under a file-size limit (`ulimit -f`)."""
    room = free_bytes(folder)
    if resource is not None:
        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if soft != resource.RLIM_INFINITY:
            room = min(room, soft)
    return room


def ensure_free_space(folder: str | os.PathLike, need: int, what: str = "the file") -> None:
    """Raises NotEnoughSpaceError unless `folder` has room for `need` bytes."""
    free = free_bytes(folder)
    if need > free:
        raise NotEnoughSpaceError(folder, int(need), int(free), what)


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


def _tmp_name(path: Path) -> Path:
    # Same folder (os.replace is atomic only within one file system), hidden, unique per writer,
    # naming the writer (process and machine: see TMP_NAME), and keeping the suffix, since some
    # writers (np.save, Keras) insist on it.
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    writer = f"{os.getpid()}-{_host_tag()}-{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.{writer}.tmp{suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, need: int | None = None, what: str | None = None) -> Iterator[Path]:
    """Yields a temporary path next to `path`; on success it replaces `path`, on failure it is removed.

    Args:
        path: the file to write.
        need: bytes the file will take, if known: checked against the free space first.
        what: how to name the file in errors (default: its name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if need is not None:
        ensure_free_space(path.parent, need, what or path.name)
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _is_stale(m: re.Match, mtime: float, now: float) -> bool:
    if m["pid"] is not None and m["host"] == _host_tag():
        return not pid_alive(int(m["pid"]))
    return now - mtime > STALE_AFTER_S


def remove_stale_temporaries(folders: Iterable[str | os.PathLike]) -> tuple[int, int]:
    """Removes the temporary files that stopped writers left in `folders` (not their subfolders).

    A process killed outright (SIGKILL, the out-of-memory killer, a power cut) cannot remove its
    temporary file. Each names its writer (`atomic_path`), so one whose process is gone from this
    machine is removed; one from another machine, or from before the names carried the writer, once
    it is STALE_AFTER_S old. A live writer's file is never touched: two runs may share a folder.

    Example:
        n, size = remove_stale_temporaries(["data/dogscats/tmp", "data/dogscats/runs/r1/checkpoint"])

    Returns:
        (files removed, their bytes); missing or unreadable folders count as empty.
    """
    removed, freed, now = 0, 0, time.time()
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # missing, or not a folder this user may read
        for entry in entries:
            m = TMP_NAME.match(entry.name)
            if m is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode) or not _is_stale(m, st.st_mtime, now):
                    continue
                os.unlink(entry.path)
            except OSError:
                continue  # renamed or removed meanwhile by its writer or another run, or not ours to remove
            removed, freed = removed + 1, freed + st.st_size
    return removed, freed


# What numpy and zipfile raise on an .npz that is truncated, zeroed, garbage or hand-made.
NPZ_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


def npz_read_error(e: BaseException) -> str:
    """Why an .npz could not be read, for a sentence that names the file (`np.load(..., allow_pickle=False)`)."""
    if isinstance(e, ValueError) and "pickle" in str(e):
        # numpy's advice here is to load the file unsafely; no file the kit writes needs that.
        return "it is no archive of plain arrays, and the kit never unpickles a file"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Writes bytes (or UTF-8 text) to `path` atomically, checking the free space first."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path = Path(path)
    with atomic_path(path, need=len(raw)) as tmp:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copies a (small) file to `dst` atomically: a reader of `dst` sees the old file or the whole new one."""
    return atomic_write(dst, Path(src).read_bytes())


def finite_json(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None, so the JSON stays valid (no bare NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy scalars
        return finite_json(obj.item())
    if hasattr(obj, "tolist") and callable(obj.tolist) and getattr(obj, "ndim", 0) > 0:  # numpy arrays
        return finite_json(obj.tolist())
    return obj


def to_json(obj: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """`obj` as strict JSON text: NaN and infinities become null (`finite_json`), never a bare NaN.

    The one JSON encoder of the kit, so that every file it writes is read back by any JSON parser
    (Python's `json` alone accepts NaN). Objects JSON has no type for (paths, dates) become strings.
    """
    return json.dumps(finite_json(obj), indent=indent, sort_keys=sort_keys, allow_nan=False, default=str)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Writes `obj` as strict JSON (`to_json`: NaN and infinities become null) atomically."""
    return atomic_write(path, to_json(obj, indent=indent, sort_keys=sort_keys) + "\n")
