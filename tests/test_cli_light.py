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


def test_real_passes_seed_and_size_to_the_recipe(monkeypatch, capsys):
    import kit.jobs.real as real
    from kit.cli import main

    seen = {}

    class Result:
        details, summary = "details", "real: summary"

    def fake_run_real(folder, **kw):
        seen.update(kw, folder=folder)
        return Result()

    monkeypatch.setattr(real, "run_real", fake_run_real)
    assert main(["real", "--folder", "photos", "--seed", "7", "--size", "256"]) in (0, None)
    assert seen == {"folder": "photos", "work_dir": None, "quick": False, "seed": 7, "size": 256}
    seen.clear()
    main(["real", "--folder", "photos"])
    assert seen == {"folder": "photos", "work_dir": None, "quick": False}  # no flag: the recipe's own
    assert capsys.readouterr().out.strip().splitlines()[-1] == "real: summary"
