"""Each competition of the table, as it ships: `kit download → train → submit` against the fake Kaggle
server, with generated images in that competition's own files (a labels CSV, loose .tif tiles, class
folders of .png); and an internet-off code competition read from a read-only /kaggle/input."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest

from helpers.competitions import competition_files
from helpers.tiny import tiny
from kit.cli import main
from kit.kaggle import get_competition
from kit.kaggle.layout import read_layout
from kit.models import archs
from kit.run import RunFolder

TABLE = [
    # slug, metric, what the train line shows
    ("dog-breed-identification", "log_loss"),
    ("aerial-cactus-identification", "roc_auc"),
    ("histopathologic-cancer-detection", "roc_auc"),
    ("plant-seedlings-classification", "f1_micro"),
    ("aptos2019-blindness-detection", "quadratic_kappa"),
]
CONFIG = '{"tta": false, "lr": 0.01, "epochs": 1, "bs": 8, "aug": "none"}'


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


@pytest.mark.parametrize("slug, metric", TABLE)
def test_download_train_submit(slug, metric, fake_kaggle, tmp_path, monkeypatch, capsys):
    files, answers, header = competition_files(slug)
    seen = {}

    def scorer(data: bytes) -> float:  # what Kaggle checks before it scores: the sample's header and ids
        rows = _rows(data)
        seen["rows"] = rows
        assert rows[0] == header and sorted(r[0] for r in rows[1:]) == sorted(answers)
        return 0.5

    fake_kaggle.add_competition(slug, files, scorer=scorer)
    monkeypatch.setitem(archs.ARCHS, "tiny", tiny)
    data = tmp_path / "data"
    config = tmp_path / "train.json"
    config.write_text(CONFIG)
    assert main(["download", "-c", slug, "--data-dir", str(data)]) == 0
    assert "downloaded with the Kaggle API" in capsys.readouterr().out
    root = data / slug
    record = read_layout(root)
    comp = get_competition(slug)
    if comp.labels_csv:
        # The images are read where they were extracted: no class folders, no copies.
        assert record["layout"]["kind"] == "csv" and not (root / "valid").exists()
        assert Path(record["layout"]["labels"]).name == comp.labels_csv
    else:
        assert record["layout"]["kind"] == "tree"
    args = ["-c", slug, "--data-dir", str(data)]
    assert main(["train", *args, "--arch", "tiny", "--weights", "none", "--size", "32", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    if metric != "log_loss":
        assert metric in out  # the epoch table's column and the run's line
    run = RunFolder.latest(root)
    final = run.read_history()["final"]
    assert final["metric"] == metric and final[metric] == final[metric]  # a number (NaN only when undefined)

    assert main(["submit", *args, "--out-dir", str(tmp_path / "subs"), "-m", "test"]) == 0
    out = capsys.readouterr().out
    assert "Kaggle:" in out and len(fake_kaggle.submissions) == 1
    rows = seen["rows"]
    assert rows[0] == header and len(rows) == len(answers) + 1
    (path,) = (tmp_path / "subs").glob(f"{slug}-*-tiny.csv")
    assert path.read_bytes() == fake_kaggle.submissions[0].data
    values = [r[1:] for r in rows[1:]]
    if comp.submission_kind == "probabilities":
        for v in values:
            assert abs(sum(map(float, v)) - 1) < 1e-4
    elif comp.submission_kind == "probability":
        assert all(0 <= float(v[0]) <= 1 for v in values)
    else:
        assert all(v[0] in comp.classes for v in values)


def test_code_competition_in_a_kaggle_notebook(tmp_path, monkeypatch, capsys):
    """APTOS with internet off: the input mounted read-only, `kit train|submit --folder
    /kaggle/input/<slug>` writes /kaggle/working/submission.csv and uploads nothing."""
    slug = "aptos2019-blindness-detection"
    files, answers, header = competition_files(slug)
    inp = tmp_path / "input" / slug
    for name, blob in files.items():
        (inp / name).parent.mkdir(parents=True, exist_ok=True)
        (inp / name).write_bytes(blob)
    for p in [*inp.rglob("*"), inp]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    working = tmp_path / "working"
    working.mkdir()
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KIT_KAGGLE_WORKING", str(working))
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(working)
    monkeypatch.setitem(archs.ARCHS, "tiny", tiny)
    config = tmp_path / "train.json"
    config.write_text(CONFIG)
    try:
        folder = ["--folder", str(inp)]
        assert (
            main(["train", *folder, "--arch", "tiny", "--weights", "none", "--size", "32", "--config", str(config)])
            == 0
        )
        assert "quadratic_kappa" in capsys.readouterr().out  # the folder is the competition: its metric
        assert main(["submit", *folder, "--dry-run"]) == 0
        out = capsys.readouterr().out
    finally:
        for p in [inp, *inp.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
    rows = _rows((working / "submission.csv").read_bytes())
    assert rows[0] == header and sorted(r[0] for r in rows[1:]) == sorted(answers)
    assert "submission.csv" in out
