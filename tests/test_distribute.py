"""Data-parallel training: device resolution (pure), then the lesson's cells on 2 virtual CPU devices.

The 2-device runs need the devices before the backend starts (XLA_FLAGS for JAX, logical CPUs for
TensorFlow), so each backend runs `helpers/distributed_lesson.py` in a process of its own and the
tests assert on the JSON it prints (one run per backend, shared by the tests through a fixture).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.jobs.config import load_config
from kit.training.distribute import DeviceInfo, check_batch_size, describe, resolve_devices

HERE = Path(__file__).resolve().parent
T4 = [DeviceInfo("gpu:0", "Tesla T4", "gpu"), DeviceInfo("gpu:1", "Tesla T4", "gpu"), DeviceInfo("cpu:0", "cpu", "cpu")]
CPUS = [DeviceInfo("cpu:0", "cpu", "cpu"), DeviceInfo("cpu:1", "cpu", "cpu")]
# History of a seeded run on 2 devices against 1: the same maths, summed in another order.
RTOL, ATOL = 1e-4, 1e-5


# ----------------------------------------------------------------------------- pure resolution
def test_auto_is_every_accelerator_or_one_cpu():
    assert [d.name for d in resolve_devices("auto", T4, "jax")] == ["gpu:0", "gpu:1"]
    assert [d.name for d in resolve_devices(None, CPUS, "tensorflow")] == ["cpu:0"]


def test_an_int_is_the_first_n_and_a_list_names_them():
    assert [d.name for d in resolve_devices(1, T4, "jax")] == ["gpu:0"]
    assert [d.name for d in resolve_devices("2", CPUS, "jax")] == ["cpu:0", "cpu:1"]
    assert [d.name for d in resolve_devices(["gpu:1"], T4, "tensorflow")] == ["gpu:1"]


@pytest.mark.parametrize("devices, match", [
    (3, r"devices=3 asks for 3 devices, but the jax backend sees 2: \['gpu:0', 'gpu:1'\]"),
    (0, "positive number"),
    (["gpu:7"], r"Unknown devices \['gpu:7'\].*gpu:0"),
    (["gpu:0", "gpu:0"], "twice"),
    (2.5, "positive number"),
])
def test_impossible_requests_say_what_was_asked_and_what_exists(devices, match):
    with pytest.raises(ValueError, match=match):
        resolve_devices(devices, T4, "jax")


def test_torch_trains_on_one_device_and_says_where_to_go_for_more():
    assert [d.name for d in resolve_devices(1, T4, "torch")] == ["gpu:0"]
    with pytest.raises(ValueError, match="torch backend trains on one device.*KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow"):
        resolve_devices(2, T4, "torch")
    with pytest.warns(UserWarning, match="1 of the 2 GPUs"):
        assert len(resolve_devices("auto", T4, "torch")) == 1


def test_batch_size_must_split_evenly():
    check_batch_size(64, 2)
    check_batch_size(63, 1)
    with pytest.raises(ValueError, match=r"bs=63 does not split evenly across 2 devices.*bs=62 or bs=64"):
        check_batch_size(63, 2)
    with pytest.raises(ValueError, match=r"bs=3 .* 4 devices.*e\.g\. bs=4\."):
        check_batch_size(3, 4)


def test_describe_is_the_epoch_table_title():
    assert describe(T4[:2], "jax", "mixed_float16") == "2 × Tesla T4, jax, mixed_float16"
    assert describe([T4[0], DeviceInfo("gpu:2", "Tesla P100", "gpu")], "tensorflow") == "Tesla T4 + Tesla P100, tensorflow"


def test_config_devices():
    assert load_config().devices == "auto"
    assert load_config(devices=2).devices == 2
    for bad in (0, "many", [], True):
        with pytest.raises(ValueError, match="Config devices"):
            load_config(devices=bad)


# ----------------------------------------------------------------------------- 2 virtual devices
def _run(backend: str, tmp: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    r = subprocess.run([sys.executable, str(HERE / "helpers" / "distributed_lesson.py"), str(tmp)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["jax", "tensorflow"])
def two(request, tmp_path_factory):
    return _run(request.param, tmp_path_factory.mktemp(f"dist-{request.param}"))


def test_weights_are_replicated_and_batches_split(two):
    assert two["one"]["replicas"] == 1 and two["one"]["var_devices"] == 1
    t = two["two"]
    assert t["replicas"] == 2 and len(t["devices"]) == 2
    assert t["var_devices"] == 2 and t["var_replicated"]
    if two["backend"] == "jax":
        assert t["batch_rows_per_device"] == [4]  # bs=8, global: 4 rows on each device
    assert t["line"] == f"2 × cpu, {two['backend']}, float32"


def test_two_devices_train_as_one(two):
    h1, h2 = two["one"]["history"], two["two"]["history"]
    assert len(h1) == len(h2) == 5  # 2 head epochs, then SGDR 1 + 2 unfrozen with differential rates
    for a, b in zip(h1, h2):
        for k in ("trn_loss", "val_loss", "accuracy"):
            assert b[k] == pytest.approx(a[k], rel=RTOL, abs=ATOL), (k, a, b)
    assert two["predict_max_diff"] < 1e-4


def test_predict_tta_lr_find_on_two_devices(two):
    assert two["predict_shape"] == [16, 2]
    assert two["test_shape"] == [5, 2]  # an odd last batch: padded, then cut back
    assert two["tta_shape"] == [3, 16, 2]
    assert two["lr_find_points"] == 12 and two["lr_find_restored"]


def test_checkpoints_move_between_device_counts(two):
    assert two["load_2_on_1_max_diff"] < 1e-5
    assert two["load_1_on_2_max_diff"] < 1e-5


def test_kit_train_devices(two):
    cli = two["cli"]
    assert cli["rc"] == 0, cli["stderr"]
    assert f"2 × cpu, {two['backend']}, float32" in cli["stdout"]
    resolved = cli["config"]["resolved"]
    assert cli["config"]["devices"] == 2 and len(resolved["devices"]) == 2 and resolved["backend"] == two["backend"]
    bad = two["cli_too_many"]
    assert bad["rc"] == 1
    assert "devices=3 asks for 3 devices, but the" in bad["stderr"] and len(bad["stderr"].strip().splitlines()) == 1
