"""kit: fast.ai's lesson 1 on Keras 3 (TensorFlow, JAX or PyTorch backend).

`from kit import *` gives the lesson's names, so the lesson runs with only its import line changed:

    from kit import *
    data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet50, sz))
    learn = ConvLearner.pretrained(resnet50, data, precompute=True)
    learn.fit(0.01, 3)

`import kit` itself loads nothing heavy (no Keras, no backend, no pyplot, no Kaggle client): each
name below is imported from its room the first time it is used. The rooms, along the data flow:
`kit.kaggle` (competitions, client, layout, submissions) → `kit.data` → `kit.models` →
`kit.training` → `kit.analysis`; `kit.jobs` runs them end to end for the CLI (`kit.cli`).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> (module, attribute); the attribute defaults to the name.
_LAZY: dict[str, tuple[str, str | None]] = {
    "np": ("numpy", ""),
    "plt": ("matplotlib.pyplot", ""),
    **{
        n: ("kit.data", None)
        for n in (
            "ImageClassifierData",
            "tfms_from_model",
            "transforms_basic",
            "transforms_side_on",
            "transforms_top_down",
            "RandomDihedral",
            "RandomFlip",
            "RandomLighting",
            "RandomRotate",
            "RandomZoom",
        )
    },
    "get_cv_idxs": ("kit.data.labels", None),  # lesson 2's validation rows for from_csv
    "ConvLearner": ("kit.training.learner", None),
    **{
        n: ("kit.models.archs", None)
        for n in (
            "Arch",
            "resnet50",
            "resnet101",
            "resnet152",
            "resnet50v2",
            "resnet101v2",
            "resnet152v2",
            "efficientnet_lite0",
        )
    },
    "LRRangeTest": ("kit.training.callbacks.lr_range_test", None),
    "SGDR": ("kit.training.callbacks.sgdr", None),
    "OneCycle": ("kit.training.callbacks.one_cycle", None),
    "suggest_lr": ("kit.training.schedules", None),
    "Interpretation": ("kit.analysis.interpretation", None),
    **{
        n: ("kit.lesson", None)
        for n in (
            "rand_by_correct",
            "most_by_correct",
            "most_uncertain",
            "top_losses",
            "plot_val_with_title",
            "plot_confusion_matrix",
            "plot_top_losses",
        )
    },
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'kit' has no attribute {name!r}")
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    value = mod if attr == "" else getattr(mod, attr or name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
