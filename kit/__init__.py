"""kit: fast.ai's lesson 1 on Keras 3 (TensorFlow, JAX or PyTorch backend).

`from kit import *` gives the lesson's names, so the lesson runs with only its import line changed:

    from kit import *
    data = ImageClassifierData.from_paths(PATH, tfms=tfms_from_model(resnet50, sz))
    learn = ConvLearner.pretrained(resnet50, data, precompute=True)
    learn.fit(0.01, 3)

Importing kit needs no network, no credentials and no GPU; the Kaggle client is imported only when a
download or a submission asks for it.
"""
import matplotlib.pyplot as plt
import numpy as np

from kit.analysis import (
    Interpretation,
    most_by_correct,
    most_uncertain,
    plot_confusion_matrix,
    plot_top_losses,
    plot_val_with_title,
    rand_by_correct,
    top_losses,
)
from kit.callbacks.lr_range_test import LRRangeTest
from kit.callbacks.one_cycle import OneCycle
from kit.callbacks.sgdr import SGDR
from kit.data import (
    ImageClassifierData,
    RandomDihedral,
    RandomFlip,
    RandomLighting,
    RandomRotate,
    RandomZoom,
    tfms_from_model,
    transforms_basic,
    transforms_side_on,
    transforms_top_down,
)
from kit.learner import ConvLearner
from kit.models import (
    Arch,
    efficientnet_lite0,
    resnet50,
    resnet50v2,
    resnet101,
    resnet101v2,
    resnet152,
    resnet152v2,
)
from kit.schedules import suggest_lr

__version__ = "0.1.0"

__all__ = [
    "np", "plt",
    "ImageClassifierData", "tfms_from_model", "transforms_basic", "transforms_side_on", "transforms_top_down",
    "RandomDihedral", "RandomFlip", "RandomLighting", "RandomRotate", "RandomZoom",
    "ConvLearner", "Arch", "resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2",
    "efficientnet_lite0",
    "LRRangeTest", "SGDR", "OneCycle", "suggest_lr",
    "Interpretation", "rand_by_correct", "most_by_correct", "most_uncertain", "top_losses",
    "plot_val_with_title", "plot_confusion_matrix", "plot_top_losses",
]
