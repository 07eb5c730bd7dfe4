"""Writing files so that nothing is ever half-written: one atomic-write helper and a free-space check.

Every file the kit writes (caches, activations, weights, runs, reports, submissions) goes through
`atomic_path`: the writer fills a hidden temporary file in the same folder, which replaces the target
with `os.replace` only once complete, and is removed on any failure (a full disk, Ctrl-C, a crash
in the writer), so the previous file, if any, stays intact.

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
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator


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


def _tmp_name(path: Path) -> Path:
    # Same folder (os.replace is atomic only within one file system), hidden, unique per writer,
    # and keeping the suffix, since some writers (np.save, Keras) insist on it.
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    return path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.{uuid.uuid4().hex[:8]}.tmp{suffix}")


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
