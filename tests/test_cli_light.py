"""The CLI answers --help and list without loading a backend, and quiets TensorFlow's start-up lines."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HEAVY = ("tensorflow", "jax", "torch", "keras", "matplotlib")
PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['kit'] + sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_module('kit', run_name='__main__')\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
)


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["predict", "--help"], ["list"]])
def test_help_and_list_load_no_backend(args):
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert "LOADED []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]
    assert "usage: kit" in out.stdout or "dogs-vs-cats" in out.stdout


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="TensorFlow's log lines")
def test_tensorflow_start_up_lines_are_quieted():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "from kit.cli import quiet_backend_logs; quiet_backend_logs(); import keras; keras.ops.ones((2,))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "absl::InitializeLog" not in out.stderr and "cpu_feature_guard" not in out.stderr, out.stderr


class _FakeRun:
    details, summary = "details", "summary"
    lr, val_loss, val_accuracy, seconds, dir = 0.01, 0.5, 0.75, 1.0, "run"


@pytest.fixture
def trained(monkeypatch):
    """`kit.jobs.train.train` replaced by one that keeps the config it was given."""
    import kit.jobs.train as train_job

    seen = []

    def fake_train(cfg, data_dir, verbose=True, resume=None):
        seen.append(cfg)
        return _FakeRun()

    monkeypatch.setattr(train_job, "train", fake_train)
    return seen


def test_real_is_train_with_the_real_recipe(trained, tmp_path, capsys):
    from kit.cli import main
    from kit.jobs.config import load_config

    photos = tmp_path / "photos"
    photos.mkdir()
    assert main(["real", "--folder", str(photos), "--seed", "7", "--size", "256"]) == 0
    assert trained[-1] == load_config(recipe="real", folder=str(photos), seed=7, size=256)
    assert capsys.readouterr().out.splitlines() == ["real: details", "real: summary"]  # the last: `make real`'s
    assert main(["real", "--folder", str(photos), "--quick", "--work-dir", str(tmp_path / "w")]) == 0
    assert trained[-1] == load_config(recipe="real", quick=True, folder=str(photos), work_dir=str(tmp_path / "w"))
    assert (
        main(["train", "--recipe", "real", "--quick", "--folder", str(photos), "--work-dir", str(tmp_path / "w")]) == 0
    )
    assert trained[-1] == trained[-2]  # `kit real` is a short name for exactly this
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "train: details",
        "train: lr 0.01, val_loss 0.5000, accuracy 0.7500 in 1 s -> run",
    ]


def test_real_needs_a_folder(trained, tmp_path, capsys):
    from kit.cli import main

    assert main(["real"]) == 1
    err = capsys.readouterr().err
    assert "kit real needs --folder PATH: a folder of photos with train/<class>/ and valid/<class>/" in err
    assert main(["real", "--folder", str(tmp_path / "nowhere")]) == 1
    assert "No photos folder" in capsys.readouterr().err and not trained


def test_train_layers_recipe_config_flags(trained, tmp_path, capsys):
    from kit.cli import main

    mine = tmp_path / "mine.json"
    mine.write_text('{"size": 128, "bs": 32, "epochs": 5}')
    assert main(["train", "--recipe", "real", "--config", str(mine), "--bs", "8", "--seed", "3", "--folder", "x"]) == 0
    cfg = trained[-1]
    assert (cfg.arch, cfg.unfreeze_opt) == ("efficientnet_lite0", "adam")  # the recipe
    assert (cfg.size, cfg.epochs) == (128, 5)  # the config file, over the recipe
    assert (cfg.bs, cfg.seed, cfg.folder) == (8, 3, "x")  # the flags, over both
    assert main(["train", "--recipe", "demo"]) == 0 and trained[-1].competition == "digits"  # the recipe's slug
    assert main(["train", "--recipe", "demo", "-c", "dogs-vs-cats-redux-kernels-edition"]) == 0
    assert trained[-1].competition == "dogs-vs-cats-redux-kernels-edition"  # an explicit -c wins
    assert main(["train", "--recipe", "nope"]) == 1
    assert "Unknown recipe 'nope'. Known recipes: ['demo', 'real']" in capsys.readouterr().err
