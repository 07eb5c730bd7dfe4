"""One call that makes a run repeatable: every seed set, and the backend's deterministic ops switched on.

`kit train` calls `seed_everything(cfg.seed)` before it decodes an image or builds a layer, so two runs
of one recipe with one seed give the same predictions and figures, bit for bit but for what is said
below, on the same machine and software. What is seeded: Python's `random`, NumPy's global generator, TensorFlow's global seed,
torch's generator and Keras' global `SeedGenerator` (`keras.utils.set_random_seed`: every layer built
afterwards, the head's initialisers, Dropout and the augmentation layer, draws its seed from these).
Two things the kit seeds itself need nothing here: the layout's train/valid split (its own seed, in
`layout.json`) and the training batches' shuffling (seeded by the epoch, so a resumed run replays it).
Not seeded: the order the decode workers' chunks land. Each lands in its own rows, but the precompute
runs the body on batches made in that order, and an image's activations can move in their last bit with
their batch neighbours: in the demo, the head stage's val_loss in its 7th digit, no accuracy.

Deterministic ops, where the backend offers them:
- TensorFlow: `tf.config.experimental.enable_op_determinism()` (its GPU kernels with atomic sums, and
  XLA's, take their deterministic paths; an op that has none raises instead of varying).
- torch: `torch.use_deterministic_algorithms(True, warn_only=True)` and cuDNN's deterministic, unbenchmarked
  convolutions; `CUBLAS_WORKSPACE_CONFIG` for cuBLAS, which CUDA reads when it starts.
- JAX: deterministic on a CPU already; on a GPU XLA needs `--xla_gpu_deterministic_ops=true` in
  `XLA_FLAGS` before JAX starts, which this sets when JAX has not started (else it warns).

Another CPU (another vector width or core count) sums in another order: the figures then move in
their last digits, and a long unfrozen stage can turn that into a few images. The README gives the
spread over seeds for that reason.

Example:
    from kit.training.seeding import seed_everything
    seed_everything(42)          # before building the data and the learner
"""

from __future__ import annotations

import os
import warnings

from kit.checks import check_int

# cuBLAS' deterministic workspace (CUDA's documented setting); read once, when CUDA starts.
CUBLAS_WORKSPACE = ":4096:8"
XLA_DETERMINISTIC_FLAG = "--xla_gpu_deterministic_ops=true"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seeds every generator a run draws from and, with `deterministic`, the backend's deterministic ops.

    Call it where a run starts, before any layer is built: layers take their seeds when built.
    Only the active Keras backend is touched (no other framework is imported); the deterministic
    switches are process-wide and stay on.

    Args:
        seed: int. The run's seed (`TrainConfig.seed`).
        deterministic: bool. Also switch the backend to its deterministic ops.
    """
    import keras

    check_int("seed", seed, min=0)
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        enable_determinism(keras.backend.backend())


def enable_determinism(backend: str) -> None:
    """Switches `backend` ("tensorflow", "torch" or "jax") to its deterministic ops; see the module docstring."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    elif backend == "torch":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not fail, on an op without one
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    elif backend == "jax":
        _jax_deterministic_gpu()


def _jax_deterministic_gpu() -> None:
    flags = os.environ.get("XLA_FLAGS", "")
    if XLA_DETERMINISTIC_FLAG in flags:
        return
    from kit._compat import jax_runtime_started

    if not jax_runtime_started():
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISTIC_FLAG}".strip()
        return
    import jax

    if jax.devices()[0].platform != "cpu":
        warnings.warn(
            f"JAX started before seed_everything, so its GPU kernels may sum in varying order: set "
            f"XLA_FLAGS={XLA_DETERMINISTIC_FLAG} before the process starts for repeatable figures.",
            stacklevel=3,
        )
