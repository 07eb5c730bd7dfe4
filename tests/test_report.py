"""write_report: the files it writes, that report.html only references files that exist, and that
it opens in a headless browser (Debian's chromium) with every image loaded and no script error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.images import make_folders
from kit.analysis.interpretation import Interpretation
from kit.analysis.report import REPORT_NAME, write_report
from kit.io import atomic_path

P_DOG = np.array([0.125, 0.25, 0.125, 0.875, 0.625, 0.9375, 0.5625, 0.25, 0.4375, 0.96875])
Y2 = np.array([0] * 5 + [1] * 5)
CLASSES3 = ("birds", "cats", "dogs")
PNGS2 = {
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "correctly_random.png",
    "incorrectly_random.png",
    "most_correct_0_cats.png",
    "most_correct_1_dogs.png",
    "most_incorrect_0_cats.png",
    "most_incorrect_1_dogs.png",
    "most_uncertain.png",
    "top_losses.png",
}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="module")
def interp(tmp_path_factory) -> Interpretation:
    root = make_folders(tmp_path_factory.mktemp("dogscats"), n_train=0, n_valid=5, size=24)
    files = sorted((root / "valid").glob("*/*.jpg"))
    return Interpretation(files, Y2, np.stack([1 - P_DOG, P_DOG], axis=1), ["cats", "dogs"])


@pytest.fixture(scope="module")
def lr_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lr") / "lr_find.png"
    Image.new("RGB", (40, 30), (250, 250, 250)).save(path)
    return path


@pytest.fixture(scope="module")
def report(interp, lr_png, tmp_path_factory) -> Path:
    return write_report(
        interp,
        tmp_path_factory.mktemp("run") / "run1",
        lr_finder_png=lr_png,
        config={"arch": "resnet50", "lr": 0.01, "sizes": [1, 2]},
        history=[
            {"epoch": 0, "trn_loss": 0.04955, "val_loss": 0.02605, "accuracy": 0.98975},
            {"epoch": 1, "trn_loss": 0.03977, "val_loss": 0.02916, "accuracy": 0.99219},
        ],
        title="Dogs <vs> cats",
    )


def img_srcs(html_text: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html_text)


def test_writes_all_plots_metrics_and_report(report):
    run = report.parent
    assert report.name == REPORT_NAME
    names = {p.name for p in run.iterdir()}
    assert names == PNGS2 | {"lr_finder.png", "metrics.json", REPORT_NAME}
    for name in PNGS2 | {"lr_finder.png"}:
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(0.6) and metrics["confusion_matrix"] == [[3, 2], [2, 3]]


def test_report_references_only_files_that_exist(report):
    text = report.read_text(encoding="utf-8")
    srcs = img_srcs(text)
    assert set(srcs) == PNGS2 | {"lr_finder.png"}
    for src in srcs:
        # Relative, inside the run folder, so the folder can be moved or zipped as one.
        assert "/" not in src and ":" not in src and (report.parent / src).is_file(), src
    assert not re.search(r'(?:href|src)="(?:https?:)?//', text)


def test_report_contents(report):
    text = report.read_text(encoding="utf-8")
    assert "<title>Dogs &lt;vs&gt; cats</title>" in text
    assert "<td>accuracy</td><td>0.6</td>" in text
    assert "<td>log loss</td>" in text
    assert "<tr><td>cats</td><td>0.6</td><td>0.6</td><td>0.6</td><td>5</td></tr>" in text
    assert "<th>trn_loss</th><th>val_loss</th>" in text and "<td>0.98975</td>" in text
    assert "<td>arch</td><td>resnet50</td>" in text and "<td>sizes</td><td>[1, 2]</td>" in text
    assert "<h2>Learning rate finder</h2>" in text


def test_many_classes_plot_only_the_worst(tmp_path):
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])
    it = Interpretation([tmp_path / f"{i}.jpg" for i in range(5)], np.array([0, 1, 1, 2, 2]), probs, list(CLASSES3))
    report = write_report(it, tmp_path / "run", max_class_plots=1, history={"loss": [1.0, 0.5]})
    names = {p.name for p in report.parent.iterdir()}
    # Class 2 (dogs) has recall 0.5, the others 1.0.
    assert {n for n in names if n.startswith("most_")} == {
        "most_correct_2_dogs.png",
        "most_incorrect_2_dogs.png",
        "most_uncertain.png",
    }
    text = report.read_text(encoding="utf-8")
    assert "the 1 classes with the lowest recall (of 3)" in text
    assert "<th>loss</th>" in text and "<td>0.5</td>" in text and "Learning rate finder" not in text


def test_embed_makes_one_portable_file(interp, tmp_path):
    report = write_report(interp, tmp_path / "run", embed=True)
    srcs = img_srcs(report.read_text(encoding="utf-8"))
    assert len(srcs) == len(PNGS2) and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_bad_arguments(interp, tmp_path):
    with pytest.raises(FileNotFoundError, match="lr_finder_png.*nope.png"):
        write_report(interp, tmp_path / "run", lr_finder_png=tmp_path / "nope.png")
    with pytest.raises(TypeError, match="interp must be an Interpretation"):
        write_report("preds.npy", tmp_path / "run")
    with pytest.raises(TypeError, match="config must be a dict or a dataclass"):
        write_report(interp, tmp_path / "run", config=["lr", 0.01])
    with pytest.raises(ValueError, match="n must be an integer >= 1. Received n=0"):
        write_report(interp, tmp_path / "run", n=0)
    assert not (tmp_path / "run").exists()  # arguments are checked before anything is written


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    with pytest.raises(TypeError), atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise TypeError("fails mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.html"]


# -- headless browser ------------------------------------------------------------------------------


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI to check report.html (apt-get install -y chromium)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return exe


def browser_status(report: Path, profile: Path) -> dict[str, str]:
    """Opens the report in headless chromium and returns the attributes its status script set."""
    out = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", report.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    tag = re.search(r'<p id="kit-status"([^>]*)>', out.stdout)
    assert tag, f"report did not render: {out.stdout[:500]!r}"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))


def test_report_opens_in_headless_browser(report, tmp_path):
    status = browser_status(report, tmp_path / "profile")
    assert status["data-status"] == "ok", status
    assert status["data-images"] == str(len(PNGS2) + 1) and status["data-broken"] == "0"
    assert status["data-js-errors"] == "0"


def test_headless_browser_sees_a_missing_plot(report, tmp_path):
    report = Path(shutil.copytree(report.parent, tmp_path / "run")) / REPORT_NAME
    (report.parent / "top_losses.png").unlink()
    status = browser_status(report, tmp_path / "profile")
    assert status["data-status"] == "broken" and status["data-broken"] == "1"
