"""kit.training.device: the accelerator's description and the dtype policy that mixed_precision="auto" picks."""

import keras
import pytest

from kit.training.device import Accelerator, accelerator, precision, resolve_mixed_precision

pytestmark = pytest.mark.backends
H100 = Accelerator("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
V100 = Accelerator("gpu", "Tesla V100", (7, 0))
T4 = Accelerator("gpu", "Tesla T4", (7, 5))
CPU = Accelerator("cpu", "cpu")


@pytest.fixture(autouse=True)
def restore_policy(monkeypatch):
    monkeypatch.delenv("KIT_MIXED_PRECISION", raising=False)
    before = keras.config.dtype_policy().name
    yield
    keras.config.set_dtype_policy(before)


def test_this_machine_is_a_cpu_without_fast_bf16():
    acc = accelerator()
    assert acc.platform == "cpu" and not acc.bf16


@pytest.mark.parametrize(
    "device, policy",
    [
        (H100, "mixed_bfloat16"),
        (V100, "mixed_float16"),
        (T4, "mixed_float16"),
        (CPU, "float32"),
        (Accelerator("gpu", "Tesla P100", (6, 0)), "mixed_float16"),
        (Accelerator("gpu", "Tesla P40", (6, 1)), "float32"),
        (Accelerator("tpu", "tpu"), "mixed_bfloat16"),
        (Accelerator("gpu", "?", None), "float32"),
    ],
)
def test_auto_uses_bf16_where_fast_then_fp16_then_float32(device, policy):
    assert resolve_mixed_precision("auto", device) == policy


@pytest.mark.parametrize(
    "value, policy",
    [
        (True, "mixed_bfloat16"),
        (False, "float32"),
        (None, "float32"),
        ("bf16", "mixed_bfloat16"),
        ("FP16", "mixed_float16"),
        ("float32", "float32"),
        ("mixed_bfloat16", "mixed_bfloat16"),
    ],
)
def test_explicit_choices_ignore_the_device(value, policy):
    assert resolve_mixed_precision(value, H100 if policy == "float32" else CPU) == policy


def test_environment_overrides_auto_only(monkeypatch):
    monkeypatch.setenv("KIT_MIXED_PRECISION", "float32")
    assert resolve_mixed_precision("auto", H100) == "float32"
    assert resolve_mixed_precision("bf16", CPU) == "mixed_bfloat16"
    monkeypatch.setenv("KIT_MIXED_PRECISION", "half")
    with pytest.raises(ValueError, match="KIT_MIXED_PRECISION.*'half'"):
        resolve_mixed_precision("auto", CPU)


def test_bad_value_names_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"mixed_precision must be one of .*'auto'.*Received mixed_precision='fast'"):
        resolve_mixed_precision("fast", CPU)


def test_precision_holds_inside_the_block_only():
    keras.config.set_dtype_policy("float32")
    with precision("bf16") as policy:
        assert policy == "mixed_bfloat16" and keras.layers.Dense(2).compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32" and keras.layers.Dense(2).compute_dtype == "float32"


def test_learner_keeps_its_precision_and_leaves_the_global_policy_alone(tmp_path):
    from helpers.images import make_folders
    from helpers.tiny import tiny
    from kit.data import ImageClassifierData, tfms_from_model
    from kit.training.learner import ConvLearner

    folder = make_folders(tmp_path, classes=("a", "b"), n_train=4, n_valid=2, n_test=0)
    data = ImageClassifierData.from_paths(folder, tfms=tfms_from_model(tiny, 32), bs=2, progress=False)
    keras.config.set_dtype_policy("float32")
    learn = ConvLearner.pretrained(tiny, data, weights=None, mixed_precision="bf16")
    assert learn.mixed_precision == "mixed_bfloat16"
    assert any(l.compute_dtype == "bfloat16" for l in learn.body.layers[-1].layers)
    assert keras.config.dtype_policy().name == "float32"  # a user's next model is not affected
