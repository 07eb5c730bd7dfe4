"""The lesson's augmentations as one layer that every backend can jit: one random affine, one resampling.

Flip (or the 8 dihedral symmetries), rotation and zoom/crop are composed into one 2x3 matrix per image,
so each image is resampled once (bilinear, reflected at the borders), then lit (fastai's brightness and
contrast). Everything is `keras.ops`, with per-image parameters drawn from a `SeedGenerator`, so the
layer runs inside the model's XLA-compiled train step on JAX and TensorFlow (Keras' own RandomRotation
and RandomZoom set `supports_jit = False`, which turns XLA off for the whole model: 24x slower on a GPU).
The sampler is written out with `ops.take` rather than `ops.image.affine_transform` because
TensorFlow's `ImageProjectiveTransformV3` has no XLA kernel.

Example:
    aug = Augment(flip="horizontal", max_rotate=10, max_zoom=1.1, brightness=0.05, contrast=0.05)
    x = aug(uint8_images, training=True)        # uint8 in, uint8 out; identity when not training
    with aug.at_inference(): model.predict(x)  # test-time augmentation through the compiled predict
"""

from __future__ import annotations

import contextlib
import math

import keras
from keras import ops

from kit.checks import check_choice, check_number

FLIPS = ("none", "horizontal", "dihedral")
# Columns of the per-image uniform draw: one draw of (batch, N_PARAMS) feeds every transform.
N_PARAMS = 9


def affine_matrices(size: int, angle, zoom, shift_x, shift_y, flip_x, flip_y, transpose):
    """Per-image maps from output pixel (x, y) to input pixel: (batch, 6) rows [a0, a1, a2, b0, b1, b2].

    `in_x = a0 x + a1 y + a2`, `in_y = b0 x + b1 y + b2`, about the image centre: the output is the
    input flipped (flip_x, flip_y, transpose: 0 or 1), rotated counter-clockwise by `angle` radians,
    zoomed in by `zoom` (>= 1) and its view shifted by (shift_x, shift_y) input pixels.

    Args:
        size: int. Side of the square images.
        angle, zoom, shift_x, shift_y, flip_x, flip_y, transpose: float tensors of shape (batch,).
    """
    angle, zoom, shift_x, shift_y, flip_x, flip_y, transpose = (
        ops.convert_to_tensor(t, "float32") for t in (angle, zoom, shift_x, shift_y, flip_x, flip_y, transpose)
    )
    c = (size - 1) / 2.0
    fx, fy = 1.0 - 2.0 * flip_x, 1.0 - 2.0 * flip_y
    # F = diag(fx, fy) after an optional transpose (x <-> y): the dihedral group on a square.
    f00, f01 = fx * (1.0 - transpose), fx * transpose
    f10, f11 = fy * transpose, fy * (1.0 - transpose)
    cos, sin = ops.cos(angle) / zoom, ops.sin(angle) / zoom
    # A = R(angle) F / zoom, with R = [[cos, -sin], [sin, cos]] in y-down pixel coordinates.
    a0, a1 = cos * f00 - sin * f10, cos * f01 - sin * f11
    b0, b1 = sin * f00 + cos * f10, sin * f01 + cos * f11
    a2 = c + shift_x - (a0 + a1) * c
    b2 = c + shift_y - (b0 + b1) * c
    return ops.stack([a0, a1, a2, b0, b1, b2], axis=1)


def _reflect(u, n: int):
    # Half-sample symmetric (d c b a | a b c d | d c b a), as scipy's and Keras' "reflect".
    u = ops.mod(u + 0.5, 2.0 * n)
    u = ops.where(u >= n, 2.0 * n - u, u) - 0.5
    return ops.clip(u, 0.0, n - 1.0)


def resample(images, matrices):
    """Bilinear resampling of square channels-last `images` through `matrices` (see `affine_matrices`).

    Returns float32. Points outside the image are reflected back into it.
    """
    shape = ops.shape(images)
    b, h, w, ch = shape[0], images.shape[1], images.shape[2], images.shape[3]
    ys, xs = ops.meshgrid(ops.arange(h, dtype="float32"), ops.arange(w, dtype="float32"), indexing="ij")
    xs, ys = ops.reshape(xs, (1, h * w)), ops.reshape(ys, (1, h * w))
    m = ops.cast(matrices, "float32")
    u = _reflect(m[:, 0:1] * xs + m[:, 1:2] * ys + m[:, 2:3], w)
    v = _reflect(m[:, 3:4] * xs + m[:, 4:5] * ys + m[:, 5:6], h)
    x0, y0 = ops.floor(u), ops.floor(v)
    wx, wy = ops.expand_dims(u - x0, -1), ops.expand_dims(v - y0, -1)
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    x1, y1 = ops.minimum(x0 + 1, w - 1), ops.minimum(y0 + 1, h - 1)
    base = ops.expand_dims(ops.arange(b, dtype="int32") * (h * w), 1)
    # Gathered in the input's dtype (uint8 on the wire moves 4x fewer bytes), blended in float32.
    flat = ops.reshape(images, (-1, ch))

    def at(y, x):
        return ops.cast(ops.take(flat, base + y * w + x, axis=0), "float32")

    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    return ops.reshape(top * (1.0 - wy) + bottom * wy, (b, h, w, ch))


def lighting(images, brightness, contrast):
    """fastai's lighting on 0-255 floats: `(x - mean) * contrast + mean + brightness * 255`, per image.

    Args:
        images: float tensor (batch, h, w, c).
        brightness: (batch,) shifts as fractions of the range (0: none).
        contrast: (batch,) factors (1: none).
    """
    images = ops.convert_to_tensor(images, "float32")
    mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
    c = ops.reshape(ops.convert_to_tensor(contrast, "float32"), (-1, 1, 1, 1))
    return (images - mean) * c + mean + 255.0 * ops.reshape(ops.convert_to_tensor(brightness, "float32"), (-1, 1, 1, 1))


@keras.saving.register_keras_serializable(package="kit")
class Augment(keras.layers.Layer):
    """Random flip, rotation, zoom/crop (one fused affine resampling) and lighting, per image.

    Active when called with `training=True` (if `in_training`) or inside `with layer.at_inference():`
    (test-time augmentation); otherwise the identity. uint8 images come back as uint8 (rounded), float
    images as floats in [0, 255].

    Example:
        aug = Augment(flip="horizontal", max_rotate=10, max_zoom=1.1, brightness=0.05, contrast=0.05)
        model = keras.Sequential([keras.Input((224, 224, 3), dtype="uint8"), aug, body])

    Args:
        flip: str. "none", "horizontal" (side-on photos) or "dihedral" (flips on both axes and the
            transpose: top-down photos).
        max_rotate: float. Rotate by up to this many degrees either way.
        max_zoom: float. Zoom in by a factor up to this (>= 1), at a random position: a random crop.
        brightness: float. Brightness shift up to ± this fraction of the range.
        contrast: float. Contrast factor in 1 ± this.
        in_training: bool. Augment during training (False: only at inference, for TTA).
        seed: int or None. Seed of the layer's SeedGenerator.
    """

    def __init__(
        self,
        flip: str = "none",
        max_rotate: float = 0.0,
        max_zoom: float = 1.0,
        brightness: float = 0.0,
        contrast: float = 0.0,
        in_training: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        # The maths stays float32 under a mixed-precision policy: bf16 coordinates are off by pixels.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        check_choice("flip", flip, FLIPS, prefix="Augment's ")
        if max_zoom < 1:
            raise ValueError(
                f"Augment's max_zoom must be >= 1 (1.1 = zoom in up to 10%). Received max_zoom={max_zoom!r}."
            )
        for name, value in (("max_rotate", max_rotate), ("brightness", brightness), ("contrast", contrast)):
            check_number(name, value, min=0, prefix="Augment's ")
        self.flip, self.max_rotate, self.max_zoom = flip, float(max_rotate), float(max_zoom)
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.in_training, self.seed = bool(in_training), seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        # A variable, not a Python flag, so switching TTA on reuses the compiled predict function.
        self.tta = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False, name="tta")
        self.built = True

    def draw(self, batch_size):
        """Per-image uniform [0, 1) draws, shape (batch_size, N_PARAMS), from the layer's SeedGenerator."""
        return keras.random.uniform((batch_size, N_PARAMS), seed=self.seed_generator)

    def params(self, u, size: int) -> dict:
        """Maps uniform draws (see `draw`) for images of side `size` to the parameters, each (batch,)."""
        zoom = 1.0 + (self.max_zoom - 1.0) * u[:, 1]
        # The crop window (side / zoom, pixel edges included) moves anywhere inside the image.
        slack = (1.0 - 1.0 / zoom) * size / 2.0
        coin = lambda col: ops.cast(u[:, col] < 0.5, "float32")  # noqa: E731
        none = 0.0 * u[:, 0]
        return dict(
            angle=math.radians(self.max_rotate) * (2.0 * u[:, 0] - 1.0),
            zoom=zoom,
            shift_x=slack * (2.0 * u[:, 2] - 1.0),
            shift_y=slack * (2.0 * u[:, 3] - 1.0),
            flip_x=coin(4) if self.flip != "none" else none,
            flip_y=coin(5) if self.flip == "dihedral" else none,
            transpose=coin(6) if self.flip == "dihedral" else none,
            brightness=self.brightness * (2.0 * u[:, 7] - 1.0),
            contrast=1.0 + self.contrast * (2.0 * u[:, 8] - 1.0),
        )

    def apply(self, images, params: dict):
        """The augmentation with given parameters (see `params`): deterministic, for tests and plots."""
        x = images
        geometric = self.flip != "none" or self.max_rotate > 0 or self.max_zoom > 1
        if geometric:
            keys = ("angle", "zoom", "shift_x", "shift_y", "flip_x", "flip_y", "transpose")
            x = resample(x, affine_matrices(images.shape[1], *(params[k] for k in keys)))
        if self.brightness > 0 or self.contrast > 0:
            x = lighting(ops.cast(x, "float32"), params["brightness"], params["contrast"])
        if x is images:
            return images
        x = ops.clip(x, 0.0, 255.0)
        if "int" in str(images.dtype):
            return ops.cast(ops.round(x), images.dtype)
        return ops.cast(x, images.dtype)

    def call(self, images, training=None):
        size = int(images.shape[1])
        if training:
            return (
                self.apply(images, self.params(self.draw(ops.shape(images)[0]), size)) if self.in_training else images
            )
        # Drawn outside the branch: a SeedGenerator update inside a traced cond would leak from it.
        p = self.params(self.draw(ops.shape(images)[0]), size)
        return ops.cond(self.tta > 0, lambda: self.apply(images, p), lambda: images)

    @contextlib.contextmanager
    def at_inference(self):
        """Within this block the layer augments at inference too (test-time augmentation)."""
        self.tta.assign(1.0)
        try:
            yield self
        finally:
            self.tta.assign(0.0)

    def compute_output_spec(self, images, training=None):
        return keras.KerasTensor(images.shape, dtype=images.dtype)

    # The layer learns nothing: weights files stay the same whatever the augmentation.
    def save_own_variables(self, store):
        pass

    def load_own_variables(self, store):
        pass

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "flip": self.flip,
            "max_rotate": self.max_rotate,
            "max_zoom": self.max_zoom,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "in_training": self.in_training,
            "seed": self.seed,
        }
