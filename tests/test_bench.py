"""bench/gpu.py --smoke runs end to end here, so a GPU session spends its minutes measuring, not debugging.

No timing assertions: benchmarks are not tests. Only that every figure comes out as valid JSON with
its keys, and that none failed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "machine": {"backend", "platform", "dtype_policy", "cores", "versions"},
    "photos": {"images", "seconds"},
    "decode_bound": {"images", "processes", "img_per_s"},
    "precompute": {
        "images",
        "seconds",
        "decode_s",
        "after_decode_s",
        "overlapped",
        "img_per_s",
        "vs_decode_bound",
        "target",
        "decode_vs_bound",
    },
    "head_epochs": {"epochs", "epoch_s"},
    "unfrozen_epoch": {"images", "img_per_s", "vs_synthetic", "target", "augmentation", "jit_compile"},
    "synthetic_uint8": {"images", "img_per_s"},
    "compile_cache": set(),  # JAX only: first_run_s and second_run_s; elsewhere it says why it was skipped
    "torch_eager": {"train_img_per_s", "infer_img_per_s", "model"},
    "torch_compile": set(),  # measured on a GPU; in --smoke it says why it was skipped
    "unfrozen_epoch_scaling": {"skipped"},  # issue 12: needs 2+ GPUs; a CPU says why it skipped
    "lesson": {"seconds", "steps", "train", "valid", "test", "tta_accuracy"},
}
LESSON_STEPS = {"decode", "precompute", "lr_find", "fit_3_epochs", "predict", "tta_valid", "test_predictions"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--dir", str(tmp_path_factory.mktemp("bench"))],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    return proc, lines


def test_smoke_exits_cleanly_and_prints_only_json(smoke):
    proc, lines = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in lines:
        json.loads(line)  # raises on anything that is not one JSON object per line


def test_smoke_prints_every_figure_with_its_keys(smoke):
    _, lines = smoke
    figures = {}
    for line in lines:
        rec = json.loads(line)
        assert "figure" in rec and "device" in rec, rec
        figures[rec["figure"]] = rec
    assert not [f for f in figures if f.startswith("error_")], figures
    assert set(figures) == set(EXPECTED), sorted(figures)
    for name, keys in EXPECTED.items():
        assert keys <= set(figures[name]), (name, sorted(keys - set(figures[name])))
    assert figures["machine"]["backend"] == os.environ.get("KERAS_BACKEND", "tensorflow")
    assert figures["machine"]["smoke"] is True
    assert "skipped" in figures["torch_compile"]
    assert set(figures["lesson"]["steps"]) == LESSON_STEPS
    assert figures["lesson"]["test"] == 16 and figures["photos"]["images"] == 48
    for name in ("decode_bound", "precompute", "unfrozen_epoch", "synthetic_uint8"):
        assert figures[name]["img_per_s"] > 0, figures[name]
    # Always the lesson's augmentation, and XLA on (the smoke runs on TensorFlow or JAX).
    assert figures["unfrozen_epoch"]["augmentation"] == ["RandomFlip", "RandomRotate", "RandomLighting", "RandomZoom"]
    # The learner's own choice: XLA on JAX always, on TensorFlow where there is an accelerator.
    assert figures["unfrozen_epoch"]["jit_compile"] is (figures["machine"]["backend"] == "jax")
    if figures["machine"]["backend"] == "jax":
        assert {"first_run_s", "second_run_s"} <= set(figures["compile_cache"])
    else:
        assert "skipped" in figures["compile_cache"]


def test_a_figure_over_its_limit_prints_timed_out_and_the_rest_run(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gpu.py"),
            "--smoke",
            "--only",
            "bound,torch",
            "--limit",
            "torch_eager=0.001",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = {r["figure"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert list(figures) == ["machine", "photos", "decode_bound", "torch_eager", "torch_compile"]
    assert figures["torch_eager"]["timed_out"] is True and figures["torch_eager"]["limit_s"] == 0.001
    assert figures["decode_bound"]["img_per_s"] > 0 and "skipped" in figures["torch_compile"]
    assert figures["machine"]["limits"]["torch_eager"] == 0.001


def test_bad_flag_names_the_flag():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--n", "10", "--valid", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert "--valid" in proc.stderr and "Received --valid=20" in proc.stderr
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--limit", "nope=3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2 and "Received --limit=nope=3" in proc.stderr
