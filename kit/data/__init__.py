"""Folders → labelled file lists → decoded uint8 batches, on every backend.

The names below load on first use, so `kit.data.images` (numpy and PIL only) stays light for the
decoding workers and the Kaggle side.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    **{n: "kit.data.dataset" for n in ("Batches", "ImageClassifierData", "Split")},
    **{n: "kit.data.images" for n in ("ImageDecodeError", "load_image")},
    **{
        n: "kit.data.transforms"
        for n in (
            "RandomDihedral",
            "RandomFlip",
            "RandomLighting",
            "RandomRotate",
            "RandomZoom",
            "Transforms",
            "tfms_from_model",
            "transforms_basic",
            "transforms_side_on",
            "transforms_top_down",
        )
    },
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
