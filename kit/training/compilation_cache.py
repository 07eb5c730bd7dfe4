"""Opt-in persistent compilation cache: a second run loads its XLA programs from disk instead of compiling.

On JAX every compiled train and predict step is written to a folder and read back by later processes
(a ResNet50 train step takes ~14 s to compile on an H100). Off by default: the folder grows with every
model, size and batch size, and it must be trusted (a compiled program is code). TensorFlow and torch
have no such cache through Keras; there the setting does nothing.

Example:
    KIT_COMPILATION_CACHE=1 python train.py          # under the kit's user cache folder
    ConvLearner.pretrained(resnet50, data, compilation_cache="/big/disk/xla")
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from kit.env import compilation_cache_setting, user_cache_dir

# "1", "true", "on": the default folder; another value: that folder; unset, "", "0", "false", "off": off.
SUBDIR = "jax-compilation-cache"
_OFF = ("", "0", "false", "off", "no", "none")
_ON = ("1", "true", "on", "yes")


def compilation_cache_dir(setting: bool | str | os.PathLike | None = None) -> Path | None:
    """The cache folder asked for, or None: `setting` first (None defers to $KIT_COMPILATION_CACHE).

    Args:
        setting: True (the default folder, `<user cache>/jax-compilation-cache`), False (off), a
            folder, or None (read the environment variable).
    """
    if setting is None:
        setting = compilation_cache_setting()
    if isinstance(setting, bool):
        return user_cache_dir() / SUBDIR if setting else None
    text = str(setting).strip()
    if text.lower() in _OFF:
        return None
    if text.lower() in _ON:
        return user_cache_dir() / SUBDIR
    return Path(text).expanduser()


def enable_compilation_cache(setting: bool | str | os.PathLike | None = None) -> Path | None:
    """Points JAX's persistent compilation cache at the folder asked for; returns it (None: off or not JAX).

    Every program is cached, even the small ones JAX skips by default (compiled in under a second):
    a lesson compiles dozens of them, and they add up on a first run.
    """
    path = compilation_cache_dir(setting)
    if path is None or keras.backend.backend() != "jax":
        return None
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    path.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir not in (None, str(path)):
        cc.reset_cache()  # JAX opens its cache folder once; another folder needs a fresh start
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
