"""Writing files so that nothing is ever half-written: one atomic-write helper and a free-space check.

Every file the kit writes (caches, activations, weights, runs, reports, submissions) goes through
`atomic_path`: the writer fills a hidden temporary file in the same folder, which replaces the target
with `os.replace` only once complete, and is removed on any failure (a full disk, Ctrl-C, a crash
in the writer), so the previous file, if any, stays intact. What a killed writer leaves (it cannot
remove anything) names it, and `remove_stale_temporaries` removes it once that process is gone.

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

# `.<name>.<pid>-<host>-<random>.tmp<suffix>`: the writer's process id and a digest of its machine's
# name, so that a later run can tell a dead writer's file from a live one's. Older files have only
# `.<name>.<random>.tmp<suffix>`.
TMP_NAME = re.compile(
    r"^\.(?P<stem>.+)\.(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{4})-)?[0-9a-f]{8}\.tmp(?P<suffix>\.[\w.]+)?$"
)
# A temporary file not written for this long, whose writer cannot be checked, is a leftover: the
# kit's slowest writer (a cache that workers fill) writes every few seconds.
STALE_AFTER_S = 3600.0


class NotEnoughSpaceError(OSError):
    """Raised before a write that would not fit: names the folder, the bytes needed and the bytes free."""

    def __init__(self, folder: str | os.PathLike, need: int, free: int, what: str = "the file"):
        super().__init__(
            errno.ENOSPC,
            f"Not enough free space in {folder} for {what}: needs {human_bytes(need)} ({need} bytes), "
            f"{human_bytes(free)} ({free} bytes) free. Free some space or point the kit at another folder.",
        )
        self.folder, self.need, self.free = Path(folder), need, free


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
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Writes `obj` as strict JSON (NaN and infinities become null) atomically."""
    text = json.dumps(finite_json(obj), indent=indent, allow_nan=False, default=str)
    return atomic_write(path, text + "\n")
