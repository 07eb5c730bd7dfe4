"""What the accelerator can do, and Keras' dtype policy set to match: mixed precision where it pays.

On a GPU of compute capability 8.0 or newer (A100, H100, ...) or a TPU, bfloat16 matmuls and
convolutions run on tensor cores at several times the float32 rate, and bf16 keeps float32's range,
so no loss scaling is needed. Older GPUs with fast float16 (P100 6.0, V100 7.0, T4 7.5: Kaggle's
T4 ×2) get "mixed_float16": float16's narrow range needs loss scaling, which Keras' `compile` adds
itself (a `LossScaleOptimizer` around the optimizer) under that policy. On a CPU float32 stays. XLA needs nothing here: JAX
always compiles with it, and Keras' `jit_compile="auto"` turns it on for TensorFlow where it works.

Example:
    from kit.training.device import precision
    with precision("auto") as policy:   # "mixed_bfloat16" on an H100, "float32" on a laptop
        model = build()
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

# Keras (and so a backend) is imported by the functions that need it: the config reads the
# precision names without loading one.

# Environment override, for a run that must be float32 on a GPU (or bf16 to test it on a CPU).
ENV_VAR = "KIT_MIXED_PRECISION"
MIXED_PRECISION_CHOICES = ("auto", "bf16", "fp16", "float32")
_ALIASES = {
    "auto": "auto",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "mixed_bfloat16": "bf16",
    "true": "bf16",
    "on": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "mixed_float16": "fp16",
    "float32": "float32",
    "fp32": "float32",
    "false": "float32",
    "off": "float32",
    "none": "float32",
}
_POLICIES = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16", "float32": "float32"}
# Every spelling `resolve_mixed_precision` accepts as a string (config files and --mixed-precision).
PRECISION_NAMES = frozenset(_ALIASES)
# Ampere (8.0) is the first NVIDIA generation with bf16 tensor cores.
MIN_BF16_CAPABILITY = (8, 0)
# Volta (7.0) brought fp16 tensor cores; the P100 (6.0) alone of Pascal runs fp16 at twice fp32
# (the other Pascal chips, 6.1, at 1/64: float32 there).
MIN_FP16_CAPABILITY, FAST_FP16_PASCAL = (7, 0), (6, 0)


@dataclass(frozen=True)
class Accelerator:
    """The first device of the current Keras backend.

    Args:
        platform: str. "gpu", "tpu" or "cpu".
        name: str. The device's name as the backend reports it.
        capability: tuple of int or None. CUDA compute capability (GPUs only).
    """

    platform: str
    name: str
    capability: tuple[int, int] | None = None

    @property
    def bf16(self) -> bool:
        """Whether bfloat16 runs fast here (tensor cores), not merely whether it runs."""
        if self.platform == "tpu":
            return True
        return self.platform == "gpu" and self.capability is not None and self.capability >= MIN_BF16_CAPABILITY

    @property
    def fp16(self) -> bool:
        """Whether float16 runs fast here (a GPU with fp16 tensor cores, or the P100)."""
        cap = self.capability
        return self.platform == "gpu" and cap is not None and (cap >= MIN_FP16_CAPABILITY or cap == FAST_FP16_PASCAL)


def _capability(text: object) -> tuple[int, int] | None:
    try:
        major, minor = str(text).split(".")[:2]
        return int(major), int(minor)
    except (TypeError, ValueError):
        return None


def accelerator() -> Accelerator:
    """The current backend's first device; imports only that backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        platform = "gpu" if dev.platform in ("gpu", "cuda", "rocm") else dev.platform
        return Accelerator(
            platform, getattr(dev, "device_kind", str(dev)), _capability(getattr(dev, "compute_capability", None))
        )
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return Accelerator("gpu", torch.cuda.get_device_name(0), tuple(torch.cuda.get_device_capability(0)))
        return Accelerator("cpu", "cpu")
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            cap = details.get("compute_capability")
            return Accelerator("gpu", details.get("device_name", gpus[0].name), tuple(cap) if cap else None)
        if tf.config.list_physical_devices("TPU"):
            return Accelerator("tpu", "tpu")
        return Accelerator("cpu", "cpu")
    return Accelerator("cpu", "cpu")


def resolve_mixed_precision(mixed_precision: str | bool | None = "auto", device: Accelerator | None = None) -> str:
    """The Keras dtype policy name that `mixed_precision` means on `device` (default: this machine).

    Args:
        mixed_precision: "auto" (bf16 where it is fast, else fp16 where that is fast, else float32),
            "bf16", "fp16", "float32",
            True (bf16), False or None (float32). The KIT_MIXED_PRECISION environment variable,
            when set, overrides "auto".
        device: Accelerator or None.
    """
    if mixed_precision is None or isinstance(mixed_precision, bool):
        choice = "bf16" if mixed_precision else "float32"
    elif isinstance(mixed_precision, str) and mixed_precision.lower() in _ALIASES:
        choice = _ALIASES[mixed_precision.lower()]
    else:
        raise ValueError(
            f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, True or False. Received mixed_precision={mixed_precision!r}."
        )
    if choice == "auto" and os.environ.get(ENV_VAR):
        env = os.environ[ENV_VAR]
        if env.lower() not in _ALIASES:
            raise ValueError(f"{ENV_VAR} must be one of {MIXED_PRECISION_CHOICES}. Received {ENV_VAR}={env!r}.")
        choice = _ALIASES[env.lower()]
    if choice == "auto":
        device = device or accelerator()
        choice = "bf16" if device.bf16 else "fp16" if device.fp16 else "float32"
    return _POLICIES[choice]


@contextlib.contextmanager
def precision(mixed_precision: str | bool | None = "auto") -> Iterator[str]:
    """Keras' dtype policy for the models built inside the block, restored after it.

    The learner builds its models inside; a user's own models built afterwards keep the policy they
    had (Keras' policy is process-wide, and a library call should not change it behind their back).

    Example:
        with precision("auto") as policy:   # "mixed_bfloat16" on an H100
            model = build()
    """
    import keras

    before = keras.config.dtype_policy()
    policy = resolve_mixed_precision(mixed_precision)
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(before)


def default_jit_compile(device: Accelerator | None = None) -> bool:
    """Whether the learner compiles its steps with XLA when the user has not said.

    JAX: always (without jit, JAX runs op by op: 24x slower on a GPU). TensorFlow: on a GPU or TPU,
    where XLA pays; on a CPU its compile time (minutes for an unfrozen body) outweighs the gain, and
    tf.function's graph mode is as fast, as Keras' own "auto" also decides. torch: never
    (torch.compile is opt-in).
    """
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        return (device or accelerator()).platform in ("gpu", "tpu")
    return False
