"""`kit demo`: the whole Kaggle round trip offline, on real handwritten digits and real ImageNet weights.

download (the digits plugin writes Kaggle-style zips) → layout → train (the recipe `kit/recipes/demo.toml`:
efficientnet_lite0, precompute, lr_find, fit, a short unfrozen stage) → analyze (report.html) → submit
--dry-run, scored locally against the held-out answers, beside a scikit-learn SVC on the raw pixels of
the same split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit import metrics
from kit.jobs.config import load_config
from kit.jobs.pipeline import ZIPS, analyze, data_dir_or_default, download, submit
from kit.jobs.train import train

SLUG = "digits"
RECIPE = "demo"  # kit/recipes/demo.toml: every number of the demo's training, and why; [quick] is the smoke test


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
    return metrics.accuracy(truth, pred)


def run_demo(data_dir: str | Path | None = None, quick: bool = False, **overrides) -> DemoResult:
    """The demo's round trip; `overrides` are TrainConfig fields over the recipe (`run_demo(seed=0)`)."""
    from kit.kaggle.competition import get_competition

    t0 = time.perf_counter()
    data = data_dir_or_default(data_dir)
    comp = get_competition(SLUG)
    dl = download(SLUG, data)
    cfg = load_config(recipe=RECIPE, quick=quick, **overrides, competition=SLUG)  # the competition downloaded above
    train(cfg, data)
    report = analyze(SLUG, data)
    sub = submit(SLUG, data, dry_run=True, out_dir=Path("submissions"))
    answers = comp.local_answers(dl.root / ZIPS)
    svc = svc_baseline(dl.root, answers, comp.test_id)
    return DemoResult(float(sub.local_score), svc, time.perf_counter() - t0, report, sub.path)
