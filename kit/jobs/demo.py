"""`kit demo`: the whole Kaggle round trip offline, on real handwritten digits and real ImageNet weights.

download (the digits plugin writes Kaggle-style zips) → layout → train (efficientnet_lite0: precompute,
lr_find, fit, a short unfrozen stage) → analyze (report.html) → submit --dry-run, scored locally
against the held-out answers, beside a scikit-learn SVC on the raw pixels of the same split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.jobs.config import load_config
from kit.jobs.pipeline import ZIPS, analyze, data_dir_or_default, download, submit
from kit.jobs.train import train

SLUG = "digits"
# The digits are 8×8 at heart: 32 px holds all they have, and an unfrozen epoch costs a quarter of 64 px.
# SGD fine-tuning of the whole body swings wildly here (val accuracy 50-90% after a restart); Adam at a
# fixed top rate of 1e-3 ([1.1e-4, 3.3e-4, 1e-3]) converges, and 1+2+4+8 unfrozen epochs reach ~98%.
DEMO_CONFIG = dict(
    competition=SLUG,
    arch="efficientnet_lite0",
    weights="imagenet",
    size=32,
    bs=32,
    epochs=3,
    cycle_len=1,
    aug="none",
    opt="adam",
    unfreeze_epochs=4,
    unfreeze_lr=1e-3,
    lr_div=3.0,
    tta=False,
)
QUICK_CONFIG = dict(DEMO_CONFIG, epochs=1, unfreeze_epochs=1, sample=True)  # a small slice, for the smoke test


@dataclass
class DemoResult:
    accuracy: float
    svc_accuracy: float
    seconds: float
    report: Path
    submission: Path

    @property
    def summary(self) -> str:
        return f"demo: test accuracy {self.accuracy:.3f} (SVC on raw pixels {self.svc_accuracy:.3f}) in {self.seconds:.0f} s"


def _pixels(files: list[Path]) -> np.ndarray:
    """Each image back at the digits' native 8×8 grey, flattened: the SVC's raw-pixel features."""
    from PIL import Image

    return np.stack(
        [
            np.asarray(Image.open(f).convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel() / 255
            for f in files
        ]
    )


def svc_baseline(root: Path, answers: dict[str, str], test_id) -> float:
    """Accuracy of an RBF SVC trained on the raw pixels of train+valid, on the same test set."""
    from sklearn.svm import SVC

    train = sorted((root / "train").rglob("*.png")) + sorted((root / "valid").rglob("*.png"))
    y = [p.parent.name for p in train]
    test = sorted((root / "test").glob("*.png"))
    pred = SVC(gamma="scale").fit(_pixels(train), y).predict(_pixels(test))
    truth = [answers[test_id(p.name)] for p in test]
    return float(np.mean(np.asarray(pred) == np.asarray(truth)))


def run_demo(data_dir: str | Path | None = None, quick: bool = False) -> DemoResult:
    from kit.kaggle.competition import get_competition

    t0 = time.perf_counter()
    data = data_dir_or_default(data_dir)
    comp = get_competition(SLUG)
    dl = download(SLUG, data)
    cfg = load_config(None, **(QUICK_CONFIG if quick else DEMO_CONFIG))
    train(cfg, data)
    report = analyze(SLUG, data)
    sub = submit(SLUG, data, dry_run=True, out_dir=Path("submissions"))
    answers = comp.local_answers(dl.root / ZIPS)
    svc = svc_baseline(dl.root, answers, comp.test_id)
    return DemoResult(float(sub.local_score), svc, time.perf_counter() - t0, report, sub.path)
