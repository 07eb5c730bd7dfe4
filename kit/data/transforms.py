"""The lesson's transforms: a size, the arch's preprocessing, and augmentations that run on the device.

Images are decoded once to `sz` (resize the shorter side, centre crop) and travel as uint8. The
augmentations below become Keras preprocessing layers inside the training model, so they run on the
accelerator, on every backend, and are active only while training (and in TTA).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras


@dataclass(frozen=True)
class RandomFlip:
    """Mirror left-right (side-on photos: a dog facing left is still a dog)."""

    def layer(self) -> keras.layers.Layer:
        return keras.layers.RandomFlip("horizontal")


@dataclass(frozen=True)
class RandomDihedral:
    """Flips on both axes (top-down photos: satellite, microscopy)."""

    def layer(self) -> keras.layers.Layer:
        return keras.layers.RandomFlip("horizontal_and_vertical")


@dataclass(frozen=True)
class RandomRotate:
    """Rotate by up to ±deg degrees, reflecting at the borders."""

    deg: float = 10.0

    def layer(self) -> keras.layers.Layer:
        return keras.layers.RandomRotation(self.deg / 360.0, fill_mode="reflect")


@dataclass(frozen=True)
class RandomLighting:
    """Brightness ± b and contrast ± c, as fractions (fastai's RandomLighting)."""

    b: float = 0.05
    c: float = 0.05

    def layer(self) -> keras.layers.Layer:
        return keras.Sequential(
            [
                keras.layers.RandomBrightness(self.b, value_range=(0, 255)),
                keras.layers.RandomContrast(self.c, value_range=(0, 255)),
            ]
        )


@dataclass(frozen=True)
class RandomZoom:
    """Zoom in by a factor up to max_zoom (1.1 = up to 10%), a random crop in effect."""

    max_zoom: float = 1.1

    def layer(self) -> keras.layers.Layer:
        f = 1.0 - 1.0 / self.max_zoom
        return keras.layers.RandomZoom(height_factor=(-f, 0.0), fill_mode="reflect")


transforms_basic = [RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_side_on = [RandomFlip(), RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_top_down = [RandomDihedral(), RandomRotate(10), RandomLighting(0.05, 0.05)]


@dataclass(frozen=True)
class Transforms:
    """What a data set needs to know to feed a model: the size, and for training the augmentations."""

    sz: int
    aug_tfms: tuple[Any, ...] = field(default_factory=tuple)
    arch: str | None = None

    def augmentation(self, name: str = "augment") -> keras.Sequential | None:
        """A Sequential of the augmentation layers (None when there are none)."""
        if not self.aug_tfms:
            return None
        return keras.Sequential([t.layer() for t in self.aug_tfms], name=name)


def tfms_from_model(arch: Any, sz: int, aug_tfms: list | None = None, max_zoom: float | None = None) -> tuple[Transforms, Transforms]:
    """Returns (train, valid) transforms for `arch` at `sz` pixels, as fastai's `tfms_from_model`.

    Example:
        tfms = tfms_from_model(resnet50, 224, aug_tfms=transforms_side_on, max_zoom=1.1)
        data = ImageClassifierData.from_paths(PATH, tfms=tfms)

    Args:
        arch: an arch of `kit.models` (e.g. `resnet50`) or its name. The arch's own preprocessing
            runs inside the model, so the same uint8 batches serve any arch.
        sz: int. Side of the square images fed to the model.
        aug_tfms: list. Training augmentations, e.g. `transforms_side_on`.
        max_zoom: float. Adds a random zoom-in up to this factor (> 1).
    """
    if not isinstance(sz, int) or isinstance(sz, bool) or sz < 8:
        raise ValueError(f"tfms_from_model needs an integer size sz >= 8. Received sz={sz!r}.")
    if max_zoom is not None and max_zoom < 1:
        raise ValueError(f"max_zoom must be >= 1 (1.1 = zoom in up to 10%). Received max_zoom={max_zoom!r}.")
    aug = list(aug_tfms or [])
    for t in aug:
        if not hasattr(t, "layer"):
            raise ValueError(f"aug_tfms items must be kit transforms (e.g. RandomFlip()). Received {t!r}.")
    if max_zoom and max_zoom > 1:
        aug.append(RandomZoom(max_zoom))
    name = arch if isinstance(arch, str) or arch is None else getattr(arch, "name", None)
    return Transforms(sz, tuple(aug), name), Transforms(sz, (), name)
