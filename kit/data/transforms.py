"""The lesson's transforms: a size, the arch's preprocessing, and augmentations that run on the device.

Images are decoded once to `sz` (resize the shorter side, centre crop) and travel as uint8. The
augmentations below are fused into one `kit.data.augment.Augment` layer inside the training model (one
random affine and one resampling per image, plus lighting), so they run on the accelerator inside the
XLA-compiled train step, on every backend, and are active only while training (and in TTA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kit.checks import check_int

if TYPE_CHECKING:
    from kit.data.augment import Augment

# Keras is imported by `Transforms.augmentation` alone, so the config can read AUG_NAMES without a backend.


@dataclass(frozen=True)
class RandomFlip:
    """Mirror left-right (side-on photos: a dog facing left is still a dog)."""

    def augment_args(self) -> dict:
        return {"flip": "horizontal"}


@dataclass(frozen=True)
class RandomDihedral:
    """The 8 flips and quarter turns of a square (top-down photos: satellite, microscopy)."""

    def augment_args(self) -> dict:
        return {"flip": "dihedral"}


@dataclass(frozen=True)
class RandomRotate:
    """Rotate by up to ±deg degrees, reflecting at the borders."""

    deg: float = 10.0

    def augment_args(self) -> dict:
        return {"max_rotate": self.deg}


@dataclass(frozen=True)
class RandomLighting:
    """Brightness ± b and contrast ± c, as fractions (fastai's RandomLighting)."""

    b: float = 0.05
    c: float = 0.05

    def augment_args(self) -> dict:
        return {"brightness": self.b, "contrast": self.c}


@dataclass(frozen=True)
class RandomZoom:
    """Zoom in by a factor up to max_zoom (1.1 = up to 10%), a random crop in effect."""

    max_zoom: float = 1.1

    def augment_args(self) -> dict:
        return {"max_zoom": self.max_zoom}


transforms_basic = [RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_side_on = [RandomFlip(), RandomRotate(10), RandomLighting(0.05, 0.05)]
transforms_top_down = [RandomDihedral(), RandomRotate(10), RandomLighting(0.05, 0.05)]
# The augmentations a config or the CLI names: photos taken from the side, from above, or none.
AUGMENTATIONS = {"side_on": transforms_side_on, "top_down": transforms_top_down, "none": []}
AUG_NAMES = tuple(AUGMENTATIONS)


@dataclass(frozen=True)
class Transforms:
    """What a data set needs to know to feed a model: the size, and for training the augmentations."""

    sz: int
    aug_tfms: tuple[Any, ...] = field(default_factory=tuple)

    def augmentation(self, name: str = "augment", in_training: bool = True) -> Augment | None:
        """One fused `Augment` layer of all the augmentations (None when there are none).

        Args:
            name: str. The layer's name.
            in_training: bool. Augment while training (False: only inside `at_inference()`, for TTA).
        """
        if not self.aug_tfms:
            return None
        from kit.data.augment import Augment

        args: dict = {}
        for t in self.aug_tfms:
            for key, value in t.augment_args().items():
                if key in args and args[key] != value:
                    raise ValueError(
                        f"aug_tfms set {key} twice, to {args[key]!r} and {value!r}. Received aug_tfms={list(self.aug_tfms)!r}."
                    )
                args[key] = value
        return Augment(**args, in_training=in_training, name=name)


def tfms_from_model(
    arch: Any, sz: int, aug_tfms: list | None = None, max_zoom: float | None = None
) -> tuple[Transforms, Transforms]:
    """Returns (train, valid) transforms for `arch` at `sz` pixels, as fastai's `tfms_from_model`.

    Example:
        tfms = tfms_from_model(resnet50, 224, aug_tfms=transforms_side_on, max_zoom=1.1)
        data = ImageClassifierData.from_paths(PATH, tfms=tfms)

    Args:
        arch: an arch of `kit.models.archs` (e.g. `resnet50`) or its name. The arch's own preprocessing
            runs inside the model, so the same uint8 batches serve any arch.
        sz: int. Side of the square images fed to the model.
        aug_tfms: list. Training augmentations, e.g. `transforms_side_on`.
        max_zoom: float. Adds a random zoom-in up to this factor (> 1).
    """
    check_int("sz", sz, min=8, prefix="tfms_from_model's ")
    if max_zoom is not None and max_zoom < 1:
        raise ValueError(f"max_zoom must be >= 1 (1.1 = zoom in up to 10%). Received max_zoom={max_zoom!r}.")
    aug = list(aug_tfms or [])
    for t in aug:
        if not hasattr(t, "augment_args"):
            raise ValueError(f"aug_tfms items must be kit transforms (e.g. RandomFlip()). Received {t!r}.")
    if max_zoom and max_zoom > 1:
        aug.append(RandomZoom(max_zoom))
    # `arch` is the lesson's argument; the kit needs nothing from it here, since every arch's own
    # preprocessing runs inside its model.
    return Transforms(sz, tuple(aug)), Transforms(sz, ())
