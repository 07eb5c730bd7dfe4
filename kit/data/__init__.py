"""Folders → labelled file lists → decoded uint8 batches, on every backend."""
from kit.data.dataset import Batches, ImageClassifierData, Split
from kit.data.images import ImageDecodeError, load_image
from kit.data.transforms import (
    RandomDihedral,
    RandomFlip,
    RandomLighting,
    RandomRotate,
    RandomZoom,
    Transforms,
    tfms_from_model,
    transforms_basic,
    transforms_side_on,
    transforms_top_down,
)

__all__ = [
    "Batches", "ImageClassifierData", "Split", "ImageDecodeError", "load_image",
    "RandomDihedral", "RandomFlip", "RandomLighting", "RandomRotate", "RandomZoom", "Transforms",
    "tfms_from_model", "transforms_basic", "transforms_side_on", "transforms_top_down",
]
