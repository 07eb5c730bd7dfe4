"""Kaggle notebooks: the wheel installs with --no-deps, and /kaggle/input is used instead of the API."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from helpers.images import easy_image
from kit.jobs.pipeline import download

ROOT = Path(__file__).resolve().parents[1]
SLUG = "dogs-vs-cats-redux-kernels-edition"


def test_wheel_installs_without_dependencies(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("kit-*.whl")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = "import kit, kit.plugins.digits, kit.kaggle.competition as c; print(kit.__file__); print(sorted(x.slug for x in c.list_competitions()))"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "site")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[0].startswith(str(tmp_path / "site"))
    assert "dogs-vs-cats-redux-kernels-edition" in r.stdout and "digits" in r.stdout


def test_notebook_uses_kaggle_input_and_writes_to_working(tmp_path, monkeypatch):
    comp_in = tmp_path / "input" / SLUG
    comp_in.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(comp_in / "train.zip", "w") as z:
        for ci, name in enumerate(("cat", "dog")):
            for i in range(10):
                p = tmp_path / "x.jpg"
                easy_image(ci, rng).save(p)
                z.write(p, f"train/{name}.{i}.jpg")
    with zipfile.ZipFile(comp_in / "test.zip", "w") as z:
        for i in range(4):
            easy_image(i % 2, rng).save(tmp_path / "x.jpg")
            z.write(tmp_path / "x.jpg", f"test/{i + 1}.jpg")
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KIT_KAGGLE_WORKING", str(tmp_path / "working"))
    # No credentials and no server: a download attempt would fail loudly.
    for k in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    r = download(SLUG, valid=4, progress=False)
    assert r.root == tmp_path / "working" / "data" / SLUG
    assert "Kaggle input" in r.source
    assert r.counts["valid"] == 4 and r.counts["train"] == 16 and r.counts["test"] == 4
    assert sorted(p.name for p in comp_in.iterdir()) == ["test.zip", "train.zip"]  # input left as it was


def test_import_kit_is_light():
    """`import kit` loads no backend, no Keras, no pyplot and no Kaggle client; names resolve lazily."""
    code = (
        "import sys, kit\n"
        "heavy = ('tensorflow', 'jax', 'torch', 'keras', 'matplotlib', 'kaggle', 'kagglesdk')\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "assert not loaded, loaded\n"
        "assert 'ConvLearner' in dir(kit) and 'most_by_correct' in kit.__all__\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
