"""Keras Hub image backbones as the lesson's body: `ConvLearner.pretrained("hub:resnet_50_imagenet", data)`.

A `hub:` arch names a Keras Hub preset (a Kaggle Model variation such as `resnet_50_imagenet`), a
preset folder (`hub:/kaggle/input/resnetv1/keras/resnet_50_imagenet/3`) or a Kaggle handle
(`hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3`). Its folder is found offline first
(`kit.models.weights.resolve_preset`: attached under /kaggle/input, then kagglehub's cache, then the
network); the body is the preset's backbone at the data's size, fed by an "affine" `Preprocess` layer
holding the preset's own image converter (scale, offset: its mean/std); the lesson's concat pooling and
head go on top, as for every arch.

Keras Hub is the optional extra `kit[hub]`: this module imports it only when a `hub:` arch is built, and
says how to install it when it is missing. The backbone gives a feature map (batch, h, w, channels: ResNet,
DenseNet, EfficientNet, MobileNet, VGG, ...) or tokens (batch, n, channels: ViT, DeiT), which the
lesson's concat pooling then averages and maxes over.

Example:
    learn = ConvLearner.pretrained("hub:resnet_50_imagenet", data, precompute=True)
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import keras

from kit.models.archs import HUB_PREFIX, Arch, per_channel
from kit.models.weights import PRESET_CONFIG, PRESET_WEIGHTS, is_preset_folder, resolve_preset

INSTALL_HINT = (
    "Install it with `pip install 'kit[hub]'`, or keep tensorflow-cpu alone with `pip install 'kit[hub-light]'` "
    "and `pip install --no-deps keras-hub==0.32.0` (image backbones need no tensorflow-text)."
)
KAGGLE_SCHEME = "kaggle://"
IMAGE_CONVERTER = "image_converter.json"
# Per backbone class: the name prefix of the first layer of the late layer group, from the preset's
# config (the keras.applications ResNets split at conv4_block1: the third of four stacks). Other
# classes split their layers in half (kit.models.archs.split_body_layers).
SPLIT_AT = {"ResNetBackbone": lambda c: f"stack{len(c['stackwise_num_filters']) // 2}_"}


@dataclass(frozen=True)
class PresetSpec:
    """What a `hub:` arch names: a preset, with its Kaggle Model and handle when known, or a folder.

    Args:
        preset: str. The preset's name, its Kaggle Model variation ("resnet_50_imagenet").
        model: str or None. Its Kaggle Model, "owner/model" ("keras/resnetv1").
        handle: str or None. Its full Kaggle handle, for a download ("keras/resnetv1/keras/resnet_50_imagenet/3").
        folder: Path or None. The preset folder, when the arch named one.
    """

    preset: str
    model: str | None = None
    handle: str | None = None
    folder: Path | None = None


def require_keras_hub(spec: str) -> Any:
    """The keras_hub module, or an ImportError that says how to install it."""
    try:
        import keras_hub
    except ImportError as e:
        raise ImportError(
            f"The arch {spec!r} is a Keras Hub preset, and Keras Hub is not installed. {INSTALL_HINT}"
        ) from e
    return keras_hub


def parse_spec(spec: str) -> PresetSpec:
    """A `hub:` arch's preset, Kaggle handle or folder (no file is read, no Keras Hub imported).

    Example:
        parse_spec("hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3").model  # "keras/resnetv1"
    """
    if not spec.lower().startswith(HUB_PREFIX):
        raise ValueError(f"A Keras Hub arch starts with {HUB_PREFIX!r}. Received {spec!r}.")
    target = spec[len(HUB_PREFIX) :].strip()
    if not target:
        raise ValueError(f"{spec!r} names no preset: write e.g. 'hub:resnet_50_imagenet' or 'hub:/path/to/preset'.")
    if target.lower().startswith(KAGGLE_SCHEME):
        return _from_handle(spec, target[len(KAGGLE_SCHEME) :])
    if "/" in target or "\\" in target or target.startswith((".", "~")):
        folder = Path(target).expanduser()
        # Kaggle's last folder is the version (…/resnet_50_imagenet/3): the preset is the one above it.
        name = folder.parent.name if folder.name.isdigit() else folder.name
        return PresetSpec(name or "preset", folder=folder)
    return PresetSpec(target)


def _from_handle(spec: str, handle: str) -> PresetSpec:
    parts = handle.strip("/").split("/")
    if len(parts) not in (4, 5):
        raise ValueError(
            "A Kaggle Model handle is kaggle://<owner>/<model>/<framework>/<variation>[/<version>], e.g. "
            f"'hub:kaggle://keras/resnetv1/keras/resnet_50_imagenet/3'. Received {spec!r}."
        )
    return PresetSpec(parts[3], model="/".join(parts[:2]), handle="/".join(parts))


def builtin_handle(keras_hub: Any, preset: str) -> str | None:
    """Keras Hub's own Kaggle handle of a built-in preset ("keras/resnetv1/keras/resnet_50_imagenet/3")."""
    info = keras_hub.models.Backbone.presets.get(preset)
    return None if info is None else info["kaggle_handle"].removeprefix(KAGGLE_SCHEME)


def kagglehub_caches() -> list[Path]:
    """Where kagglehub keeps downloaded models (its own setting: $KAGGLEHUB_CACHE, else ~/.cache/kagglehub)."""
    try:
        from kagglehub.config import get_cache_folder
    except ImportError:
        return []
    return [Path(get_cache_folder()) / "models"]


def download_preset(handle: str) -> Path:
    """Downloads a Kaggle Model's files with kagglehub (into its cache) and returns their folder."""
    import kagglehub

    return Path(kagglehub.model_download(handle))


def preset_folder(spec: PresetSpec, keras_hub: Any, download: bool = True) -> Path:
    """The local folder of `spec`: the one it names, or attached, cached or downloaded (`resolve_preset`)."""
    if spec.folder is not None:
        if not is_preset_folder(spec.folder):
            raise FileNotFoundError(
                f"{spec.folder} is not a Keras Hub preset folder: it needs {PRESET_CONFIG}, metadata.json and "
                f"one of {list(PRESET_WEIGHTS)} (what `Backbone.save_to_preset` writes)."
            )
        return spec.folder
    handle = spec.handle or builtin_handle(keras_hub, spec.preset)
    model = spec.model or ("/".join(handle.split("/")[:2]) if handle else None)
    hint = (
        "" if handle else f"{spec.preset!r} is none of Keras Hub's own presets (`keras_hub.models.Backbone.presets`)."
    )
    return resolve_preset(
        spec.preset,
        model,
        caches=kagglehub_caches(),
        download=partial(download_preset, handle) if download and handle else None,
        install_hint=hint,
    )


def read_converter(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (scale, offset) per channel of a preset's image converter: pixels 0..255 → x · scale + offset.

    Older presets give `mean` and `variance` instead, which Keras Hub turns into the same two.
    """
    path = Path(folder) / IMAGE_CONVERTER
    if not path.is_file():
        raise FileNotFoundError(
            f"The Keras Hub preset {folder} has no {IMAGE_CONVERTER}: its preprocessing is unknown, so its "
            "pretrained weights cannot be fed. Use a preset saved with its image converter "
            "(`converter.save_to_preset(folder)`)."
        )
    config = json.loads(path.read_text())["config"]
    scale, offset = config.get("scale"), config.get("offset")
    if "mean" in config and "variance" in config:
        std = [math.sqrt(v) for v in config["variance"]]
        base = 1.0 if scale is None else float(scale)
        scale = [base / s for s in std]
        offset = [-m / s for m, s in zip(config["mean"], std)]
    return per_channel("scale", 1.0 if scale is None else scale), per_channel(
        "offset", 0.0 if offset is None else offset
    )


def read_config(folder: Path) -> dict:
    """The preset's config.json: `class_name` (e.g. "ResNetBackbone") and the backbone's `config`."""
    return json.loads((Path(folder) / PRESET_CONFIG).read_text())


@keras.saving.register_keras_serializable(package="kit")
class TokensAsMap(keras.layers.Layer):
    """A transformer's tokens (batch, n, channels) as a feature map (batch, n, 1, channels), so that the
    lesson's concat pooling averages and maxes over them (the class token included)."""

    def call(self, x):
        return keras.ops.expand_dims(x, 2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], 1, input_shape[2])


def build_backbone(folder: Path, include_top: bool = False, weights: Any = None, input_shape: Any = None, **_: Any):
    """The preset's backbone at `input_shape`, randomly initialised (the arch's loader sets the weights).

    It takes keras.applications' signature, so `build_body` calls it as any arch's constructor. A backbone
    of tokens (ViT, DeiT) is given a last layer that lays them out as a feature map (`TokensAsMap`).
    """
    keras_hub = require_keras_hub(f"{HUB_PREFIX}{folder}")
    shape = tuple(input_shape or (None, None, 3))
    # Most image backbones take `image_shape`, EfficientNet `input_shape`; from_preset lays either over the
    # saved config. The dtype is left to the global policy: the learner builds inside its precision scope.
    cls = keras.saving.get_registered_object(read_config(folder).get("registered_name", ""))
    params = inspect.signature(cls.__init__).parameters if cls is not None else {}
    size = next((name for name in ("image_shape", "input_shape") if name in params), None)
    backbone = keras_hub.models.Backbone.from_preset(str(folder), load_weights=False, **({size: shape} if size else {}))
    rank = len(backbone.output.shape)
    if rank == 3:
        # The same layers (and weight names) as the backbone, one more at the end: the learner's layer
        # groups, BatchNorm handling and the preset's weights file all see the backbone's own layers.
        return keras.Model(backbone.input, TokensAsMap(name="tokens_as_map")(backbone.output), name=backbone.name)
    if rank != 4:
        raise ValueError(
            f"The Keras Hub preset {folder} ({type(backbone).__name__}) outputs {tuple(backbone.output.shape)}: "
            "neither a feature map (batch, height, width, channels) nor tokens (batch, n, channels), which the "
            "lesson's concat pooling needs. Use an image backbone (ResNet, DenseNet, EfficientNet, ViT, ...)."
        )
    return backbone


def load_preset_weights(folder: Path, model: keras.Model, path: Path) -> None:
    """Loads a preset's weights into the body's backbone, with what to do when they do not fit."""
    try:
        model.load_weights(str(path))
    except ValueError as e:
        sz = model.input.shape[1]
        trained = _converter_size(folder)
        at = f" Its image converter says {trained[0]} px: train at --size {trained[0]}." if trained else ""
        raise ValueError(
            f"The weights {path} do not fit the Keras Hub backbone built at {sz} px ({e}). Transformer presets "
            f"(ViT, DeiT) learn one position embedding per patch, so they fix the image size.{at}"
        ) from e


def _converter_size(folder: Path) -> list[int] | None:
    path = Path(folder) / IMAGE_CONVERTER
    size = json.loads(path.read_text())["config"].get("image_size") if path.is_file() else None
    return list(size) if size else None


def weights_file(folder: Path) -> Path:
    """The preset's weights: model.weights.h5, or model.weights.json for sharded ones."""
    for name in PRESET_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"The Keras Hub preset {folder} has no weights: expected one of {list(PRESET_WEIGHTS)}.")


def arch_name(preset: str) -> str:
    """The arch's name: `hub_<preset>`, safe in file names (activation caches) and Keras layer names."""
    return "hub_" + (re.sub(r"[^0-9a-z_]+", "_", preset.lower()).strip("_") or "preset")


def hub_arch(spec: str, download: bool = True) -> Arch:
    """An Arch for a Keras Hub preset, its folder found (offline first) and its converter read.

    Example:
        arch = hub_arch("hub:resnet_50_imagenet")   # finds /kaggle/input/resnetv1/keras/resnet_50_imagenet/3

    Args:
        spec: str. "hub:<preset>", "hub:<folder>" or "hub:kaggle://<owner>/<model>/keras/<preset>[/<version>]".
        download: bool. Download with kagglehub when it is nowhere on disk.

    Raises:
        ImportError: Keras Hub is not installed (with how to install it).
        PresetNotFoundError: not attached, not cached, not downloaded: what to attach, where it was looked for.
    """
    parsed = parse_spec(spec)
    keras_hub = require_keras_hub(spec)
    folder = preset_folder(parsed, keras_hub, download=download)
    config = read_config(folder)
    split = SPLIT_AT.get(config.get("class_name", ""))
    scale, offset = read_converter(folder)
    return Arch(
        arch_name(parsed.preset),
        partial(build_backbone, folder),
        "affine",
        split_at=split(config["config"]) if split else None,
        scale=scale,
        offset=offset,
        resolve=partial(weights_file, folder),
        load=partial(load_preset_weights, folder),
    )


__all__ = [
    "INSTALL_HINT",
    "PresetSpec",
    "TokensAsMap",
    "arch_name",
    "build_backbone",
    "hub_arch",
    "parse_spec",
    "preset_folder",
    "read_converter",
    "require_keras_hub",
]
