"""Training configuration: a dataclass with commented defaults → an optional JSON/TOML file → CLI flags.

The resolved configuration is saved beside every run's outputs (config.json), so each submission
can be traced to how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.env import physical_memory
from kit.kaggle.competition import is_slug
from kit.training.device import PRECISION_NAMES


@dataclass
class TrainConfig:
    competition: str = "dogs-vs-cats-redux-kernels-edition"
    data_dir: str | None = None  # --data-dir wins; None: /kaggle/working/data in a Kaggle notebook, else ./data
    folder: str | None = (
        None  # any class-folder tree (train/<class>/, valid/<class>/, test/): used instead of the competition
    )
    work_dir: str | None = (
        None  # caches and runs of `folder`; None: the folder when writable, else the kit's user cache
    )
    arch: str = "resnet50"  # Keras has no ResNet34, the lesson's arch; 50 is the nearest
    weights: str = "imagenet"  # "imagenet", "none", or a weights file
    size: int = 224  # the lesson's sz: what ImageNet models were trained at
    bs: int = 64  # fits a ResNet50 at 224 px in 8 GB with room to spare
    lr: float | None = None  # None: take lr_find's suggestion
    epochs: int = 3  # head epochs (SGDR cycles if cycle_len) on precomputed activations
    cycle_len: int | None = 1  # SGDR cycles of 1 epoch; None for a constant rate
    cycle_mult: int = 1
    aug: str = "side_on"  # "side_on" (photos), "top_down" (satellite), "none"
    max_zoom: float = 1.1
    augment_epochs: int = 0  # head epochs on augmented images after the precomputed ones
    unfreeze_epochs: int = 0  # SGDR cycles with the whole net unfrozen (cycle_mult=2 as in lesson 1)
    lr_div: float = 10.0  # differential rates when unfrozen: [lr/div², lr/div, lr]
    unfreeze_lr: float | None = None  # top rate of the unfrozen stage; None: the head's rate (lr or lr_find's)
    opt: str = "sgd"  # "sgd" (momentum 0.9, the lesson's), "adam" or "adamw", for every stage
    tta: bool = True  # test-time augmentation for the validation and test predictions
    n_aug: int = 4
    sample: bool = False  # train on data/<slug>/sample/ for a quick look
    seed: int = 42
    num_workers: int | None = None  # decoding processes; None: every core
    mixed_precision: str = "auto"  # bf16 on GPUs with bf16 tensor cores, fp16 on T4/V100/P100, float32 on CPUs
    compilation_cache: bool | str | None = (
        None  # JAX's persistent compilation cache: True, a folder, or None ($KIT_COMPILATION_CACHE)
    )
    devices: str | int | list[str] = "auto"  # every accelerator (1 on a CPU); N: the first N; or names. bs stays global

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError as e:  # Python 3.10
            raise ValueError(f"TOML config files need Python 3.11+; write {path.with_suffix('.json')} instead.") from e

        return tomllib.loads(text)
    return json.loads(text)


def load_config(path: str | Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the file at `path` (JSON or TOML), then `overrides` whose value is not None.

    Raises:
        ValueError: an unknown key (the valid ones are listed) or a value of the wrong kind.
    """
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found: {path}.")
        try:
            read = _read(path)
        except (json.JSONDecodeError, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"Cannot parse config file {path}: {e}") from e
        if not isinstance(read, dict):
            raise ValueError(
                f'Config file {path} must hold an object of TrainConfig fields, e.g. {{"bs": 32, "tta": false}}; '
                f"it holds a {type(read).__name__}."
            )
        values.update(read)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"Unknown config keys {unknown}. Valid keys: {sorted(names)}.")
    _check_types(values)
    cfg = TrainConfig(**values)
    _validate(cfg)
    return cfg


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a run saved in its config.json (keys it does not know, e.g. "resolved", ignored)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    known = {k: v for k, v in values.items() if k in names}
    _check_types(known)
    cfg = TrainConfig(**known)
    _validate(cfg)
    return cfg


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _matches(value: Any, tp: Any) -> bool:
    """Whether a JSON/TOML value has the type a TrainConfig field declares (bool is not an int here)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if typing.get_origin(tp) is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0]).split(' ', 1)[-1]}s"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _check_types(values: dict[str, Any]) -> None:
    """Each value has its field's declared type: `"tta": "no"` or `"lr_div": "10"` is refused by name."""
    hints = typing.get_type_hints(TrainConfig)
    for key, value in values.items():
        if not _matches(value, hints[key]):
            raise ValueError(
                f"Config {key} must be {_type_name(hints[key])}. Received {key}={value!r} ({type(value).__name__})."
            )


def _validate(cfg: TrainConfig) -> None:
    def positive_int(name: str, allow_zero: bool = False) -> None:
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if allow_zero else 1):
            raise ValueError(f"Config {name} must be an integer >= {0 if allow_zero else 1}. Received {name}={v!r}.")

    for n in ("size", "bs", "epochs", "cycle_mult", "seed"):
        positive_int(n, allow_zero=n == "seed")
    memory = physical_memory()
    batch = cfg.bs * cfg.size**2 * 3 * 4  # one batch of float32 pixels, the least a step holds
    if memory and batch > memory // 2:
        raise ValueError(
            f"Config bs={cfg.bs} at size={cfg.size} cannot fit in memory: one batch of float32 pixels alone is "
            f"{batch / 2**30:,.1f} GiB, and this machine has {memory / 2**30:,.1f} GiB. Use a smaller bs (64 is the default)."
        )
    for n in ("augment_epochs", "unfreeze_epochs", "n_aug"):
        positive_int(n, allow_zero=True)
    if cfg.cycle_len is not None:
        positive_int("cycle_len")
    if cfg.lr is not None and not (isinstance(cfg.lr, (int, float)) and cfg.lr > 0):
        raise ValueError(f"Config lr must be a positive number or None (lr_find). Received lr={cfg.lr!r}.")
    if cfg.unfreeze_lr is not None and not (
        isinstance(cfg.unfreeze_lr, (int, float)) and not isinstance(cfg.unfreeze_lr, bool) and cfg.unfreeze_lr > 0
    ):
        raise ValueError(
            f"Config unfreeze_lr must be a positive number or None (the head's rate). Received unfreeze_lr={cfg.unfreeze_lr!r}."
        )
    if cfg.opt not in ("sgd", "adam", "adamw"):
        raise ValueError(f"Config opt must be 'sgd', 'adam' or 'adamw'. Received opt={cfg.opt!r}.")
    if cfg.aug not in ("side_on", "top_down", "none"):
        raise ValueError(f"Config aug must be 'side_on', 'top_down' or 'none'. Received aug={cfg.aug!r}.")
    d = cfg.devices
    if not (
        (isinstance(d, str) and (d == "auto" or d.isdigit() and int(d) >= 1))
        or (isinstance(d, int) and not isinstance(d, bool) and d >= 1)
        or (isinstance(d, list) and d and all(isinstance(x, str) for x in d))
    ):
        raise ValueError(
            f"Config devices must be 'auto', a number of devices >= 1 or a list of device names. Received devices={d!r}."
        )
    mp = cfg.mixed_precision
    if not (isinstance(mp, str) and mp.lower() in PRECISION_NAMES):
        raise ValueError(
            f"Config mixed_precision must be one of {sorted(PRECISION_NAMES)}. Received mixed_precision={mp!r}."
        )
    cc = cfg.compilation_cache
    if cc is not None and not isinstance(cc, (bool, str)):
        raise ValueError(
            f"Config compilation_cache must be true, false, a folder or null. Received compilation_cache={cc!r}."
        )
    if cfg.lr_div <= 1:
        raise ValueError(f"Config lr_div must be > 1. Received lr_div={cfg.lr_div!r}.")
    if not is_slug(cfg.competition):
        # The slug names a folder under the data directory: "../x" must never get that far.
        raise ValueError(
            "Config competition must be a Kaggle slug: letters, digits, '-' and '_' (`kit list` shows the known ones). "
            f"Received competition={cfg.competition!r}."
        )
