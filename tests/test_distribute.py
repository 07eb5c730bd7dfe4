"""Data-parallel training: device resolution (pure), then Kaggle's GPU notebook on the CPU.

The matrix is policy (float32, mixed_float16 — what "auto" picks on a T4 — mixed_bfloat16) × devices
(1, 2 virtual CPU devices) × backend (JAX, TensorFlow). The 2-device runs need the devices before the
backend starts (XLA_FLAGS for JAX, logical CPUs for TensorFlow), so each backend runs
`helpers/distributed_lesson.py` in a process of its own, both side by side, and the tests assert on
the JSON it prints (shared by the tests through a fixture).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize(
    "devices, match",
    [
        (3, r"devices=3 asks for 3 devices, but the jax backend sees 2: \['gpu:0', 'gpu:1'\]"),
        (0, "positive number"),
        (["gpu:7"], r"Unknown devices \['gpu:7'\].*gpu:0"),
        (["gpu:0", "gpu:0"], "twice"),
        (2.5, "positive number"),
    ],
)
def test_impossible_requests_say_what_was_asked_and_what_exists(devices, match):
    with pytest.raises(ValueError, match=match):
        resolve_devices(devices, T4, "jax")


def test_torch_trains_on_one_device_and_says_where_to_go_for_more():
    assert [d.name for d in resolve_devices(1, T4, "torch")] == ["gpu:0"]
    with pytest.raises(
        ValueError, match="torch backend trains on one device.*KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow"
    ):
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
    assert (
        describe([T4[0], DeviceInfo("gpu:2", "Tesla P100", "gpu")], "tensorflow") == "Tesla T4 + Tesla P100, tensorflow"
    )


def test_config_devices():
    assert load_config().devices == "auto"
    assert load_config(devices=2).devices == 2
    for bad in (0, "many", [], True):
        with pytest.raises(ValueError, match="Config devices"):
            load_config(devices=bad)


# ------------------------------------------------------------- Kaggle's GPU notebook: precision × devices × backend
BACKENDS = ("jax", "tensorflow")
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
COMPUTE = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}
CELLS = [(p, d) for p in POLICIES for d in (1, 2)]


def _start(backend: str, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend == "jax":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    return subprocess.Popen(
        [sys.executable, str(HERE / "helpers" / "distributed_lesson.py"), str(tmp)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """Both backends' matrices, run side by side (one process each: the devices exist before the backend starts)."""
    procs = {b: _start(b, tmp_path_factory.mktemp(f"nb-{b}")) for b in BACKENDS}
    out = {}
    for backend, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{backend}:\n" + stdout[-3000:] + stderr[-5000:]
        out[backend] = json.loads(stdout.strip().splitlines()[-1])
    return out


@pytest.fixture(params=BACKENDS)
def two(request, matrix) -> dict:
    return matrix[request.param]


@pytest.mark.parametrize("policy, devices", CELLS, ids=[f"{p}-{d}dev" for p, d in CELLS])
def test_the_whole_lesson_runs_in_every_cell(two, policy, devices):
    """fit twice, lr_find, fit, augmented fit, unfreeze + SGDR, predict, TTA, save/load, finite throughout."""
    c = two["cells"][f"{policy}/{devices}"]
    assert c["finite"], c["fits"]
    assert len(c["history"]) == 6  # 1 + 1 + 1 (after lr_find) + 1 (augmented) + 1 + 1 (SGDR with a restart, unfrozen)
    assert (
        c["lr_find"]["points"] >= 3
        and c["lr_find"]["finite_losses"] >= 3
        and c["lr_find"]["suggestion_finite"]
        and c["lr_find"]["restored"]
    )
    assert c["predict_shape"] == [16, 2] and c["test_shape"] == [5, 2] and c["tta_shape"] == [3, 16, 2]
    assert c["load_max_diff"] < 1e-6  # the saved weights, exactly


@pytest.mark.parametrize("policy", POLICIES)
def test_every_cell_computes_in_its_policy_and_ends_in_float32(two, policy):
    for devices in (1, 2):
        c = two["cells"][f"{policy}/{devices}"]
        d = c["dtypes"]
        assert (
            d["policy"] == policy
            and d["body_compute"] == d["hidden_compute"] == COMPUTE[policy]
            and d["body_variable"] == "float32"
        )
        assert d["logits_compute"] == "float32" and d["output_dtype"] == "float32"  # Keras' rule for the output layer
        assert c["optimizer"] == ("LossScaleOptimizer" if policy == "mixed_float16" else "DifferentialSGD")
        assert c["line"] == f"{devices} × cpu, {two['backend']}, {policy}"


@pytest.mark.parametrize("policy", POLICIES)
def test_two_devices_really_shard_and_every_method_runs_in_their_scope(two, policy):
    assert two["cells"][f"{policy}/1"]["replicas"] == 1 and two["cells"][f"{policy}/1"]["var_devices"] == 1
    t = two["cells"][f"{policy}/2"]
    assert t["replicas"] == 2 and len(t["devices"]) == 2 and t["var_devices"] == 2 and t["var_replicated"]
    if two["backend"] == "jax":
        assert t["batch_rows_per_device"] == [4]  # bs=8, global: 4 rows on each device
    # lr_find once ran outside the data-parallel scope; now every public method runs inside it.
    assert t["scope"] and all(t["scope"].values()), t["scope"]


@pytest.mark.parametrize("policy, devices", CELLS, ids=[f"{p}-{d}dev" for p, d in CELLS])
def test_kit_train_stopped_by_sigint_resumes_in_every_cell(two, policy, devices):
    t = two["cells"][f"{policy}/{devices}"]["train"]
    assert t["interrupted_rc"] == 130 and "Resume with: kit train" in t["interrupted_stderr"]
    assert t["resumed_rc"] == 0, t["resumed_stderr"]
    assert t["finished"] and t["epochs"] == [0, 1] and t["finite"]  # the head's epoch, then the unfrozen one
    assert t["line"] == f"{devices} × cpu, {two['backend']}, {policy}"
    assert t["resolved"]["mixed_precision"] == policy and len(t["resolved"]["devices"]) == devices
    if policy == "mixed_float16":
        assert t["loss_scale_at_stop"] > 0  # the checkpoint carries the loss scale


def test_two_devices_train_as_one(two):
    h1, h2 = two["cells"]["float32/1"]["history"], two["cells"]["float32/2"]["history"]
    assert len(h1) == len(h2) == 6
    for a, b in zip(h1, h2):
        for k in ("trn_loss", "val_loss", "accuracy"):
            assert b[k] == pytest.approx(a[k], rel=RTOL, abs=ATOL), (k, a, b)
    p1, p2 = (np.array(two["cells"][f"float32/{d}"]["predict"]) for d in (1, 2))
    assert np.abs(p1 - p2).max() < 1e-4


@pytest.mark.parametrize("policy, devices", CELLS, ids=[f"{p}-{d}dev" for p, d in CELLS])
def test_a_bag_of_heads_trains_and_predicts_in_every_cell(two, policy, devices):
    b = two["cells"][f"{policy}/{devices}"]["bag"]
    assert b["epochs"] == [0, 1] and b["finite"] and b["sums_to_one"] and b["member_0_differs"]
    assert b["bag_is_the_last_member_view"] < 1e-6
    assert b["images_vs_activations"] < (2e-2 if policy != "float32" else 1e-4)  # the image model holds the bag


def test_a_bag_on_two_devices_predicts_as_on_one(two):
    p1, p2 = (np.array(two["cells"][f"float32/{d}"]["bag"]["predict"]) for d in (1, 2))
    assert np.abs(p1 - p2).max() < 1e-4


def test_checkpoints_move_between_device_counts(two):
    assert two["load_2_on_1_max_diff"] < 1e-5
    assert two["load_1_on_2_max_diff"] < 1e-5


def test_kit_train_refuses_more_devices_than_there_are(two):
    bad = two["cli_too_many"]
    assert bad["rc"] == 1
    assert "devices=3 asks for 3 devices, but the" in bad["stderr"] and len(bad["stderr"].strip().splitlines()) == 1
