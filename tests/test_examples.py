"""Smoke runs of what the README tells people to run: the lesson-1 script and the offline demo."""

import os
import subprocess
import sys
from pathlib import Path

from kit.jobs.demo import run_demo

ROOT = Path(__file__).resolve().parents[1]


def test_lesson1_script_runs(tmp_path):
    env = dict(os.environ, KIT_DATA=str(tmp_path / "data"), MPLBACKEND="Agg")
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lesson1.py"), "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for expected in (
        "epoch",
        "trn_loss",
        "data.classes -> ['0', '1'",
        "log_preds.shape ->",
        "lr_find suggests",
        "TTA accuracy",
    ):
        assert expected in r.stdout, expected
    plots = tmp_path / "data" / "digits" / "lesson1"
    assert {"correct.png", "lr_find.png", "confusion.png"} <= {p.name for p in plots.iterdir()}


def test_demo_pipeline_on_a_small_slice(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_demo(tmp_path / "data", quick=True)
    assert 0.0 <= result.accuracy <= 1.0 and result.svc_accuracy > 0.9
    assert result.report.name == "report.html" and result.report.is_file()
    assert result.submission.parent.resolve() == (tmp_path / "submissions").resolve() and result.submission.is_file()
    assert result.summary.startswith("demo: test accuracy ")
