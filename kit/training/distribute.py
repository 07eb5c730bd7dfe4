"""Data-parallel training over several devices, on Keras' own engines: which devices, and their scope.

`ConvLearner.pretrained(..., devices="auto")` resolves the devices here, then builds its models,
optimizer and compiled functions inside `Placement.scope()`, and runs every public method (precompute,
fit, lr_find, predict, TTA, save/load, ...) inside it again (`OnDevices`):

- JAX: a `keras.distribution.DataParallel` over a 1-D mesh of the devices. Variables are replicated
  on every device, each batch is split along its first axis, XLA inserts the gradient all-reduce.
  The distribution is *scoped* (`distribution.scope()` around the learner's calls), not set
  process-wide, so a model the user builds afterwards is not silently distributed.
- TensorFlow: a `tf.distribute.MirroredStrategy` over the devices; trained BatchNorm layers are
  switched to synchronized statistics so N replicas compute what one device would.
- torch: one device. Keras has no data-parallel engine for torch; asking for more is an error that
  says to use JAX or TensorFlow.

`bs` stays the global batch (each device gets bs / N) and learning rates are not rescaled. The pure
parts (`resolve_devices`, `check_batch_size`, `describe`) are tested without devices.

Example:
    placement = Placement.create(devices=2)       # the first two accelerators of the backend
    with placement.scope():
        model = build(); model.compile(...); model.fit(...)
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from kit._compat import flatten_layers

BACKENDS_WITH_DATA_PARALLEL = ("jax", "tensorflow")
AUTO = "auto"
_ENGINES: dict[tuple, Any] = {}


@dataclass(frozen=True)
class DeviceInfo:
    """One device as the backend names it.

    Args:
        name: str. The backend's id: "gpu:0" (JAX), "/device:GPU:0" (TensorFlow), "cuda:0" (torch).
        kind: str. What it is, for people: "Tesla T4", "NVIDIA H100 80GB HBM3", "cpu".
        platform: str. "gpu", "tpu" or "cpu".
    """

    name: str
    kind: str
    platform: str

    @property
    def accelerator(self) -> bool:
        return self.platform != "cpu"


def resolve_devices(
    devices: str | int | Sequence[str] | None, available: Sequence[DeviceInfo], backend: str
) -> list[DeviceInfo]:
    """The devices that `devices` means among `available` (pure: no backend is touched).

    "auto" (or None) is every accelerator, or the first device when there is none (a CPU-only
    machine trains on one CPU device); an int is the first N; a list names them.

    Args:
        devices: "auto", None, an int >= 1, or a list of device names (as in `available`).
        available: list of DeviceInfo. The backend's devices, accelerators first.
        backend: str. "jax", "tensorflow" or "torch" (for the messages and torch's one-device rule).

    Raises:
        ValueError: more devices than there are, unknown or repeated names, or more than one on torch.
    """
    if not available:
        raise ValueError(f"The {backend} backend reports no device at all.")
    accelerators = [d for d in available if d.accelerator]
    pool = accelerators or list(available)
    names = [d.name for d in available]
    if devices is None or (isinstance(devices, str) and devices.lower() == AUTO):
        chosen = pool if accelerators else pool[:1]
        if backend not in BACKENDS_WITH_DATA_PARALLEL and len(chosen) > 1:
            warnings.warn(
                f"devices='auto' uses 1 of the {len(chosen)} {chosen[0].platform.upper()}s on the {backend} backend: "
                f"set KERAS_BACKEND=jax or tensorflow to train on all of them.",
                stacklevel=3,
            )
            chosen = chosen[:1]
        return list(chosen)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        n = int(devices)
        if n < 1:
            raise ValueError(
                f"devices must be 'auto', a positive number of devices or a list of device names. Received devices={devices!r}."
            )
        _check_backend_count(n, backend, devices)
        if n > len(pool):
            raise ValueError(
                f"devices={n} asks for {n} devices, but the {backend} backend sees {len(pool)}: {[d.name for d in pool]}. "
                f"Use devices={len(pool)} or devices='auto'."
            )
        return list(pool[:n])
    if isinstance(devices, str):
        devices = [devices]
    if not isinstance(devices, (list, tuple)) or not devices or not all(isinstance(d, str) for d in devices):
        raise ValueError(
            f"devices must be 'auto', a positive number of devices or a list of device names. Received devices={devices!r}."
        )
    unknown = [d for d in devices if d not in names]
    if unknown:
        raise ValueError(f"Unknown devices {unknown} on the {backend} backend. Its devices: {names}.")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices names a device twice. Received devices={list(devices)}.")
    _check_backend_count(len(devices), backend, devices)
    by_name = {d.name: d for d in available}
    return [by_name[d] for d in devices]


def _check_backend_count(n: int, backend: str, devices: Any) -> None:
    if n > 1 and backend not in BACKENDS_WITH_DATA_PARALLEL:
        raise ValueError(
            f"The {backend} backend trains on one device only: Keras has no data-parallel engine for it. "
            f"Received devices={devices!r}. Set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow to train on several devices."
        )


def check_batch_size(bs: int, n_devices: int) -> None:
    """Refuses a global batch that does not split evenly across the devices.

    Raises:
        ValueError: naming bs, the device count and the nearest batch sizes that do split.
    """
    if n_devices > 1 and bs % n_devices:
        lo, hi = (bs // n_devices) * n_devices, math.ceil(bs / n_devices) * n_devices
        choices = f"bs={hi}" if lo == 0 else f"bs={lo} or bs={hi}"
        raise ValueError(
            f"bs={bs} does not split evenly across {n_devices} devices: bs is the global batch (each device gets "
            f"bs / {n_devices}), so use a multiple of {n_devices}, e.g. {choices}."
        )


def describe(devices: Sequence[DeviceInfo], backend: str, policy: str | None = None) -> str:
    """The line above the epoch table: "2 × Tesla T4, jax, mixed_float16"."""
    kinds = [d.kind for d in devices]
    if len(set(kinds)) == 1:
        what = f"{len(kinds)} × {kinds[0]}"
    else:
        what = " + ".join(kinds)
    return ", ".join(p for p in (what, backend, policy) if p)


def list_devices(backend: str | None = None) -> list[DeviceInfo]:
    """The current backend's devices, accelerators first (on JAX, those of every process)."""
    backend = backend or keras.backend.backend()
    if backend == "jax":
        import jax

        out = []
        for platform in ("gpu", "tpu", "cpu"):
            try:
                devs = jax.devices(platform)
            except RuntimeError:  # no such platform on this machine
                continue
            for d in devs:
                kind = "cpu" if platform == "cpu" else getattr(d, "device_kind", platform)
                # keras.distribution names JAX devices "<platform>:<id>" (ids are global across hosts).
                out.append(DeviceInfo(f"{d.platform}:{d.id}", kind, platform))
        return out
    if backend == "tensorflow":
        import tensorflow as tf

        out = []
        physical = tf.config.list_physical_devices("GPU")
        for i, d in enumerate(tf.config.list_logical_devices("GPU")):
            details = tf.config.experimental.get_device_details(physical[min(i, len(physical) - 1)]) if physical else {}
            out.append(DeviceInfo(d.name, details.get("device_name", "GPU"), "gpu"))
        out += [DeviceInfo(d.name, "tpu", "tpu") for d in tf.config.list_logical_devices("TPU")]
        out += [DeviceInfo(d.name, "cpu", "cpu") for d in tf.config.list_logical_devices("CPU")]
        return out
    if backend == "torch":
        import torch

        out = [DeviceInfo(f"cuda:{i}", torch.cuda.get_device_name(i), "gpu") for i in range(torch.cuda.device_count())]
        return out + [DeviceInfo("cpu", "cpu", "cpu")]
    return [DeviceInfo("cpu", "cpu", "cpu")]


class Placement:
    """The devices a learner trains on, and the Keras scope that makes them used.

    Build with `Placement.create(devices)`. With one device `scope()` changes nothing, so a
    one-device learner runs exactly the code it ran before devices existed.

    Args:
        devices: list of DeviceInfo (resolved).
        backend: str.
    """

    def __init__(self, devices: Sequence[DeviceInfo], backend: str):
        self.devices, self.backend = list(devices), backend
        # DataParallel (JAX) or MirroredStrategy (TensorFlow) when distributed: one per device set and
        # process, because two MirroredStrategy objects over the same devices number their collective
        # all-reduces alike, and a second learner's step then meets the first one's in the same instance.
        self.engine: Any = None
        if self.distributed:
            key = (backend, tuple(self.names))
            if key not in _ENGINES:
                if backend == "jax":
                    _ENGINES[key] = keras.distribution.DataParallel(devices=self.names)
                elif backend == "tensorflow":
                    import tensorflow as tf

                    _ENGINES[key] = tf.distribute.MirroredStrategy(devices=self.names)
            self.engine = _ENGINES.get(key)

    @classmethod
    def create(cls, devices: str | int | Sequence[str] | None = AUTO, backend: str | None = None) -> Placement:
        backend = backend or keras.backend.backend()
        return cls(resolve_devices(devices, list_devices(backend), backend), backend)

    @classmethod
    def single(cls) -> Placement:
        """One device, the backend's first: what a learner built without `devices` uses."""
        return cls.create(1)

    @property
    def n(self) -> int:
        return len(self.devices)

    @property
    def distributed(self) -> bool:
        return self.n > 1

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.devices]

    def scope(self) -> contextlib.AbstractContextManager:
        """The distribution (JAX) or strategy (TensorFlow) scope; a no-op on one device."""
        if self.engine is None:
            return contextlib.nullcontext()
        return self.engine.scope()

    @property
    def num_replicas(self) -> int:
        """Replicas the engine really runs (MirroredStrategy's `num_replicas_in_sync`, the mesh size)."""
        if self.engine is None:
            return 1
        if self.backend == "tensorflow":
            return int(self.engine.num_replicas_in_sync)
        return int(self.engine.device_mesh.devices.size)

    @property
    def supports_xla(self) -> bool:
        """False under MirroredStrategy: an XLA-compiled step cannot reach the mirrored variables of
        the other replicas' devices (TensorFlow's XLA known issues); Keras' "auto" turns XLA off there too."""
        return not (self.backend == "tensorflow" and self.distributed)

    def describe(self, policy: str | None = None) -> str:
        return describe(self.devices, self.backend, policy)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "devices": self.names, "kinds": [d.kind for d in self.devices]}

    def prepare_model(self, model: keras.Model) -> None:
        """Synchronized BatchNorm statistics under MirroredStrategy (JAX computes them globally already).

        Only layers that train their statistics are affected; the frozen body's stay in inference mode.
        """
        if self.backend == "tensorflow" and self.distributed:
            for layer in flatten_layers(model):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True

    def predict_on_batch(self, model: keras.Model, x: np.ndarray):
        """`model.predict_on_batch(x)` with the batch split over the devices.

        `predict_on_batch` hands its batch over as it is: on JAX it would run on one device, under
        MirroredStrategy every replica would get all of it. `x` must have a multiple of N rows.
        """
        if not self.distributed:
            return model.predict_on_batch(x)
        if self.backend == "tensorflow":
            return model.predict(x, batch_size=len(x), verbose=0)
        layout = self.engine.get_data_layout(x.shape)
        return model.predict_on_batch(keras.distribution.distribute_tensor(x, layout))


def _in_placement(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with self.placement.scope():
            return fn(self, *args, **kwargs)

    wrapper.__on_devices__ = True
    return wrapper


class OnDevices:
    """Mixin: every public method and property setter of a subclass runs inside `self.placement.scope()`.

    One mechanism for the whole class, applied when the class is defined (`__init_subclass__`),
    so a method added later cannot forget the scope: on JAX a call outside it would run on one
    device with the data unsharded, silently. Private helpers run inside their public caller's
    scope; class and static methods have no placement yet. The subclass sets `self.placement`
    before calling anything public.
    """

    placement: Placement

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, attr in list(vars(cls).items()):
            if name.startswith("_"):
                continue
            if isinstance(attr, property) and attr.fset is not None:
                setattr(cls, name, attr.setter(_in_placement(attr.fset)))
            elif inspect.isfunction(attr):
                setattr(cls, name, _in_placement(attr))
