"""The command line end to end: `make download train analyze submit` against the local fake Kaggle."""

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers.fake_kaggle import make_zip
from helpers.images import easy_image
from kit.cli import main

ROOT = Path(__file__).resolve().parents[1]
SLUG = "dogs-vs-cats-redux-kernels-edition"


def _jpeg(cls: int, rng) -> bytes:
    buf = io.BytesIO()
    easy_image(cls, rng, 40).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _redux_zips(n_train: int = 24, n_test: int = 10) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    train = {f"train/{name}.{i}.jpg": _jpeg(ci, rng) for ci, name in enumerate(("cat", "dog")) for i in range(n_train)}
    test = {f"test/{i + 1}.jpg": _jpeg(i % 2, rng) for i in range(n_test)}
    sample = "id,label\n" + "".join(f"{i + 1},0.5\n" for i in range(n_test))
    return {"train.zip": make_zip(train), "test.zip": make_zip(test), "sample_submission.csv": sample.encode()}


def test_make_download_train_analyze_submit(fake_kaggle, tmp_path):  # noqa: F811
    fake_kaggle.add_competition(SLUG, _redux_zips(), scorer=lambda data: 0.1234)
    env = fake_kaggle.child_env(tmp_path / "site")
    env.update(KERAS_BACKEND=os.environ.get("KERAS_BACKEND", "tensorflow"), PYTHONUNBUFFERED="1")
    data = tmp_path / "data"
    subs = tmp_path / "subs"
    config = tmp_path / "train.json"
    config.write_text('{"tta": false, "bs": 8, "size": 32, "epochs": 2}')
    cmd = [
        "make",
        "-s",
        "-C",
        str(ROOT),
        "download",
        "train",
        "analyze",
        "submit",
        f"DATA={data}",
        "DOWNLOAD_ARGS=--valid 12",
        f"SUBMIT_ARGS=--out-dir {subs}",
        "MESSAGE=e2e test",
        f"TRAIN_ARGS=--arch resnet50 --weights none --config {config}",
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    root = data / SLUG
    assert sorted(p.name for p in (root / "valid").iterdir()) == ["cats", "dogs"]
    assert sum(1 for _ in (root / "valid").rglob("*.jpg")) == 12
    assert sum(1 for _ in (root / "train").rglob("*.jpg")) == 36
    assert "epoch" in r.stdout and "trn_loss" in r.stdout
    run = root / "runs" / (root / "runs" / "LATEST").read_text().strip()
    for name in ("config.json", "history.json", "lr_find.png", "model.weights.h5", "predictions.npz", "report.html"):
        assert (run / name).is_file(), name
    (csv,) = subs.glob(f"{SLUG}-*-resnet50.csv")
    lines = csv.read_text().splitlines()
    assert lines[0] == "id,label" and len(lines) == 11
    assert len(fake_kaggle.submissions) == 1
    assert fake_kaggle.submissions[0].data == csv.read_bytes()  # received byte for byte
    assert "0.1234" in r.stdout


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["download", "-c", "no-such-competition", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no-such-competition" in err and "dogs-vs-cats" in err
    assert main(["submit", "-c", "digits", "--data-dir", str(tmp_path), "--dry-run"]) == 1
    assert "kit train" in capsys.readouterr().err
    assert main(["train", "-c", "digits", "--data-dir", str(tmp_path), "--size", "0"]) == 1
    assert "size" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["submit", "--help"])
    assert "log(200)" in capsys.readouterr().out


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert SLUG in out and "dogs-vs-cats " in out and "digits" in out
