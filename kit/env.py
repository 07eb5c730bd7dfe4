"""The one reader of the environment: Kaggle notebook or not, where inputs are mounted, where output
may be written, and the caches (Keras' model cache, the kit's own user cache).

Every other module asks here instead of reading `os.environ` for these, so a notebook, a laptop and
a test (which points the variables below at temporary folders) all take the same code path.

| variable | default | meaning |
| --- | --- | --- |
| `KAGGLE_KERNEL_RUN_TYPE` | unset | set by Kaggle inside a notebook |
| `KIT_KAGGLE_INPUT` | `/kaggle/input` | where a notebook's inputs are mounted (read-only) |
| `KIT_KAGGLE_WORKING` | `/kaggle/working` | a notebook's writable folder |
| `KERAS_HOME` | `~/.keras` | Keras' home; ImageNet weights live in its `models/` |
| `KIT_CACHE_DIR` | `$XDG_CACHE_HOME/kit`, else `~/.cache/kit` | the kit's own cache (work folders, compilation cache) |
| `KIT_COMPILATION_CACHE` | off | `1`: JAX's persistent compilation cache under the kit's cache; a path: there |

A data folder may be read-only (`/kaggle/input`, a shared drive): `work_dir_for` says where its caches,
activations, saved models and runs go instead, so that nothing is ever written into it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KAGGLE_INPUT_ENV = "KIT_KAGGLE_INPUT"
KAGGLE_WORKING_ENV = "KIT_KAGGLE_WORKING"
KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"
CACHE_ENV = "KIT_CACHE_DIR"
COMPILATION_CACHE_ENV = "KIT_COMPILATION_CACHE"


def in_kaggle_notebook() -> bool:
    """Whether this runs in a Kaggle notebook (Kaggle sets KAGGLE_KERNEL_RUN_TYPE there)."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))


def kaggle_input_root() -> Path:
    """Where Kaggle mounts a notebook's inputs: /kaggle/input, or $KIT_KAGGLE_INPUT (for tests)."""
    return Path(os.environ.get(KAGGLE_INPUT_ENV) or KAGGLE_INPUT)


def working_dir() -> Path:
    """Where output goes: /kaggle/working (or $KIT_KAGGLE_WORKING) in a notebook, else the current folder."""
    if in_kaggle_notebook():
        return Path(os.environ.get(KAGGLE_WORKING_ENV) or KAGGLE_WORKING)
    return Path(".")


def default_data_dir() -> Path:
    """/kaggle/working/data in a Kaggle notebook (the only writable place there), else ./data."""
    return Path("data") if not in_kaggle_notebook() else working_dir() / "data"


def keras_cache_dir() -> Path:
    """Keras' model cache: `$KERAS_HOME/models`, else `~/.keras/models`."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def user_cache_dir() -> Path:
    """The kit's own cache: $KIT_CACHE_DIR, else $XDG_CACHE_HOME/kit, else ~/.cache/kit."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kit"


WORK = "work"  # per-data-folder work folders live under user_cache_dir()/work/


def is_writable(path: str | os.PathLike) -> bool:
    """Whether the kit may write into the folder `path`.

    The OS must allow it (`os.access`, which also catches read-only mounts) and the folder's mode must
    grant write to someone: root passes `os.access` on any folder of a writable file system, but a
    folder whose owner took every write bit away (`chmod a-w`) is read-only by intent, so the kit
    treats it as read-only even when it runs as root.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError:
        return False
    return p.is_dir() and bool(mode & 0o222) and os.access(p, os.W_OK | os.X_OK)


def default_work_dir(data_path: str | os.PathLike) -> Path:
    """The work folder of a read-only data folder: `user_cache_dir()/work/<name>-<hash of its absolute path>`.

    In a Kaggle notebook it is `/kaggle/working/kit-work/<name>-<hash>` instead, so that runs outlive the
    session with the notebook's output.
    """
    absolute = Path(os.path.abspath(os.fspath(data_path)))
    digest = hashlib.sha1(str(absolute).encode()).hexdigest()[:8]
    base = working_dir() / "kit-work" if in_kaggle_notebook() else user_cache_dir() / WORK
    return base / f"{absolute.name or 'data'}-{digest}"


def work_dir_for(data_path: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> Path:
    """Where the caches, activations, models and runs of the data folder `data_path` go.

    Example:
        work_dir_for("data/dogscats")            # data/dogscats itself, when writable
        work_dir_for("/kaggle/input/dogscats")   # ~/.cache/kit/work/dogscats-1a2b3c4d

    Args:
        data_path: str or Path. The data folder (train/<class>/, valid/<class>/, ...).
        work_dir: str, Path or None. An explicit work folder, used as it is.
    """
    if work_dir is not None:
        return Path(work_dir)
    return Path(data_path) if is_writable(data_path) else default_work_dir(data_path)


def compilation_cache_setting() -> str:
    """$KIT_COMPILATION_CACHE as set ("" when unset): see `kit.training.compilation_cache`."""
    return os.environ.get(COMPILATION_CACHE_ENV, "")


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say), to refuse what cannot fit."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None
