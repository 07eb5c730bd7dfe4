"""Training configuration: a dataclass with commented defaults → a recipe → an optional JSON/TOML file → CLI flags.

A recipe is a TOML file of TrainConfig fields shipped inside the package (`kit/recipes/<name>.toml`,
named by `kit train --recipe NAME`); a recipe or config file may hold a `[quick]` table, the small
slice that `--quick` lays over it. The resolved configuration is saved beside every run's outputs
(config.json), so each submission can be traced to how it was made.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.checks import check_choice, check_int, check_number
from kit.data.transforms import AUG_NAMES
from kit.env import physical_memory
from kit.kaggle.competition import is_slug
from kit.training.device import PRECISION_NAMES

CV_MEANS = ("arithmetic", "geometric")  # how `kit cv` averages its fold models' probabilities
# Heads of the bag when the head is the run's last stage (`head_bag` None): 5-fold CV on the dog breeds' train split
# chose 5 (1.305 → 1.133 log loss; 3 heads: 1.173), and on Dogs vs. Cats it beats the typical single head (README).
HEAD_BAG = 5


@dataclass
class TrainConfig:
    competition: str = "dogs-vs-cats-redux-kernels-edition"
    data_dir: str | None = None  # --data-dir wins; None: /kaggle/working/data in a Kaggle notebook, else ./data
    # Any data folder instead of the competition: train/<class>/ + valid/<class>/, an image folder with a labels
    # CSV beside it, or train/<class>/ alone (kit.data.layouts finds which).
    folder: str | None = None
    work_dir: str | None = None  # caches and runs of `folder`; None: the folder if writable, else the user cache
    labels: str | None = None  # `folder`'s labels CSV (relative to it or absolute); None: found by looking
    images: str | None = None  # the image folder the CSV's ids name; None: found by looking
    val_pct: float = 0.2  # the validation share split from a CSV or a lone train/<class>/ (never from valid/)
    split_seed: int = 42  # that split's seed, apart from `seed`: every seed validates on the same images
    metric: str | None = None  # shown in the epoch table and report; None: the competition's (a folder: none)
    baseline: bool = False  # also fit scikit-learn's LogisticRegression on the precomputed features (no fine-tuning)
    arch: str = "resnet50"  # Keras has no ResNet34, the lesson's arch; 50 is the nearest
    weights: str = "imagenet"  # "imagenet", "none", or a weights file
    size: int = 224  # the lesson's sz: what ImageNet models were trained at
    bs: int = 64  # fits a ResNet50 at 224 px in 8 GB with room to spare
    lr: float | None = None  # None: take lr_find's suggestion
    epochs: int = 3  # head epochs (SGDR cycles if cycle_len) on precomputed activations
    # The head's dropout before each Dense (the lesson's is [0.25, 0.5]). 0.5 for both: 5-fold CV on the dog breeds'
    # train split, 1.40 → 1.31 log loss, and no harm on 2 classes (README, under Kaggle's image competitions).
    head_ps: list[float] = dataclasses.field(default_factory=lambda: [0.5, 0.5])
    head_min_steps: int = 300  # ... each of them several passes until the head makes this many steps; 0: off
    # Heads trained one after another on the activations (each its own init, shuffling and lr_find), their probabilities
    # averaged. None: HEAD_BAG when the head is the last stage, else 1 (the later stages fine-tune one head).
    head_bag: int | None = None
    cycle_len: int | None = 1  # SGDR cycles of 1 epoch; None or 0 (TOML has no null) for a constant rate
    cycle_mult: int = 1
    aug: str = "side_on"  # "side_on" (photos), "top_down" (satellite), "none"
    max_zoom: float = 1.1
    augment_epochs: int = 0  # head epochs on augmented images after the precomputed ones
    unfreeze_epochs: int = 0  # SGDR cycles with the whole net unfrozen
    unfreeze_cycle_len: int = 1  # epochs in the unfrozen stage's first cycle; 0 for a constant rate
    unfreeze_cycle_mult: int = 2  # each unfrozen cycle twice the one before: lesson 1's 1 + 2 + 4
    lr_div: float = 10.0  # differential rates when unfrozen: [lr/div², lr/div, lr]
    unfreeze_lr: float | None = None  # top rate of the unfrozen stage; None: the head's rate (lr or lr_find's)
    unfreeze_lrs: list[float] | None = None  # explicit [early body, late body, head] rates; None: from lr_div
    opt: str = "sgd"  # "sgd" (momentum 0.9, the lesson's), "adam" or "adamw": the head stages' optimizer
    unfreeze_opt: str | None = None  # the unfrozen stage's optimizer; None: opt's (one optimizer throughout)
    train_bn: bool = False  # False: the body's BatchNorm statistics stay frozen once unfrozen (lesson 1)
    stochastic_depth: bool = True  # the body's drop-connect (EfficientNet-Lite's) while it trains unfrozen
    tta: bool = True  # test-time augmentation for the validation and test predictions
    n_aug: int = 4
    sample: bool = False  # train on data/<slug>/sample/ for a quick look
    max_per_class: int | None = None  # the first n files (by name) of each class of train and valid; None: all
    seed: int = 42
    # `kit cv`: folds (stratified, seeded by split_seed) over every labelled image, train and valid together,
    # and how the fold models' test probabilities are averaged: "arithmetic" or "geometric" (renormalised).
    cv_folds: int = 5
    cv_mean: str = "arithmetic"
    # `kit train --all`: one model on train + valid together; no validation figures (there is nothing left to score).
    all_data: bool = False
    num_workers: int | None = None  # decoding processes; None: every core
    mixed_precision: str = "auto"  # bf16 on GPUs with bf16 tensor cores, fp16 on T4/V100/P100, float32 on CPUs
    # JAX's persistent compilation cache: True, a folder, or None ($KIT_COMPILATION_CACHE decides).
    compilation_cache: bool | str | None = None
    devices: str | int | list[str] = "auto"  # every accelerator (1 on a CPU); N: the first N; or names. bs stays global

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


QUICK = "quick"  # the table of a recipe or config file that `--quick` lays over the rest of it


def _toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, before it joined the standard library (a dependency on 3.10 only)
        import tomli as tomllib
    return tomllib.loads(text)


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    return _toml(text) if path.suffix == ".toml" else json.loads(text)


def recipe_names() -> list[str]:
    """The recipes shipped in the package: `kit/recipes/<name>.toml`."""
    folder = importlib.resources.files("kit").joinpath("recipes")
    return sorted(f.name[: -len(".toml")] for f in folder.iterdir() if f.name.endswith(".toml"))


def recipe_file(name: str) -> Path:
    """The file of the recipe `name` (`kit train --recipe NAME`).

    Raises:
        ValueError: no recipe of that name (the known ones are listed).
    """
    known = recipe_names()
    if name not in known:
        raise ValueError(f"Unknown recipe {name!r}. Known recipes: {known} (the files of kit/recipes/).")
    return Path(str(importlib.resources.files("kit").joinpath("recipes", f"{name}.toml")))


def _layer(path: Path) -> dict[str, Any]:
    """The fields of one config file (its `[quick]` table kept apart, under QUICK)."""
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
    if QUICK in read and not isinstance(read[QUICK], dict):
        raise ValueError(
            f"Config file {path}: {QUICK!r} must be a table of TrainConfig fields (the slice --quick runs). "
            f"Received {QUICK}={read[QUICK]!r}."
        )
    return read


def load_config(
    path: str | Path | None = None, *, recipe: str | None = None, quick: bool = False, **overrides: Any
) -> TrainConfig:
    """Defaults, then the recipe `recipe`, then the file at `path` (JSON or TOML), then `overrides`
    whose value is not None. With `quick`, each file's `[quick]` table is laid over that file.

    Example:
        load_config(recipe="real", folder="photos", seed=0)   # what `kit real --folder photos --seed 0` runs
        load_config("my.toml", recipe="real", quick=True)     # the recipe, my changes, then both quick tables

    Raises:
        ValueError: an unknown recipe or key (the valid ones are listed), a value of the wrong kind, or
            `quick` when no file has a `[quick]` table.
    """
    names = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    files = ([recipe_file(recipe)] if recipe is not None else []) + ([Path(path)] if path is not None else [])
    has_quick = False
    for f in files:
        layer = _layer(f)
        values.update({k: v for k, v in layer.items() if k != QUICK})
        if quick and QUICK in layer:
            values.update(layer[QUICK])
            has_quick = True
    if quick and not has_quick:
        raise ValueError(
            f"quick needs a [{QUICK}] table in the recipe or the config file; "
            f"{'none of ' + ', '.join(map(str, files)) + ' has one' if files else 'no recipe or config file was given'}."
        )
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


def head_bag(cfg: TrainConfig) -> int:
    """The heads of the run's bag: `cfg.head_bag`, or HEAD_BAG when the head on activations is the last stage."""
    if cfg.head_bag is not None:
        return cfg.head_bag
    return 1 if cfg.augment_epochs or cfg.unfreeze_epochs else HEAD_BAG


def _validate(cfg: TrainConfig) -> None:
    c = "Config "  # every message starts so: the reader knows it is a TrainConfig field
    for n in ("size", "bs", "epochs", "cycle_mult", "unfreeze_cycle_mult"):
        check_int(n, getattr(cfg, n), min=1, prefix=c)
    for n in ("seed", "augment_epochs", "unfreeze_epochs", "unfreeze_cycle_len", "n_aug", "head_min_steps"):
        check_int(n, getattr(cfg, n), min=0, prefix=c)
    check_int("cycle_len", cfg.cycle_len, min=0, none_ok=True, prefix=c)
    check_int("head_bag", cfg.head_bag, min=1, none_ok=True, prefix=c)
    if (cfg.head_bag or 1) > 1 and (cfg.augment_epochs or cfg.unfreeze_epochs):
        raise ValueError(
            f"Config head_bag={cfg.head_bag} trains {cfg.head_bag} heads on the precomputed activations only, and the later "
            "stages fine-tune one head on images: set head_bag to 1 (or leave it unset) with "
            f"augment_epochs={cfg.augment_epochs}, unfreeze_epochs={cfg.unfreeze_epochs}."
        )
    check_int("max_per_class", cfg.max_per_class, min=1, none_ok=True, prefix=c)
    check_int("split_seed", cfg.split_seed, prefix=c)
    check_int("cv_folds", cfg.cv_folds, min=2, prefix=c)
    check_choice("cv_mean", cfg.cv_mean, CV_MEANS, prefix=c)
    if cfg.all_data and cfg.baseline:
        raise ValueError("Config baseline is scored on the validation images, and all_data (--all) trains on them all.")
    if len(cfg.head_ps) != 2 or not all(isinstance(v, (int, float)) and 0 <= v < 1 for v in cfg.head_ps):
        raise ValueError(
            "Config head_ps must be 2 dropout rates in [0, 1), before the head's hidden and last Dense layers. "
            f"Received head_ps={cfg.head_ps!r}."
        )
    check_number("val_pct", cfg.val_pct, min=0, max=1, min_open=True, max_open=True, prefix=c)
    if cfg.metric is not None:
        from kit.metrics import METRICS

        check_choice("metric", cfg.metric, tuple(METRICS), prefix=c)
    memory = physical_memory()
    batch = cfg.bs * cfg.size**2 * 3 * 4  # one batch of float32 pixels, the least a step holds
    if memory and batch > memory // 2:
        raise ValueError(
            f"Config bs={cfg.bs} at size={cfg.size} cannot fit in memory: one batch of float32 pixels alone is "
            f"{batch / 2**30:,.1f} GiB, and this machine has {memory / 2**30:,.1f} GiB. "
            "Use a smaller bs (64 is the default)."
        )
    check_number("lr", cfg.lr, min=0, min_open=True, none_ok=True, prefix=c)
    check_number("unfreeze_lr", cfg.unfreeze_lr, min=0, min_open=True, none_ok=True, prefix=c)
    if cfg.unfreeze_lrs is not None:
        lrs = cfg.unfreeze_lrs
        for i, v in enumerate(lrs):
            check_number(f"unfreeze_lrs[{i}]", v, min=0, prefix=c)
        if len(lrs) != 3 or not any(v > 0 for v in lrs):
            raise ValueError(
                "Config unfreeze_lrs must be 3 rates [early body, late body, head], >= 0 and not all 0. "
                f"Received unfreeze_lrs={lrs!r}."
            )
        if cfg.unfreeze_lr is not None:
            raise ValueError(
                "Config unfreeze_lr and unfreeze_lrs both set the unfrozen rates: give one of them. "
                f"Received unfreeze_lr={cfg.unfreeze_lr!r}, unfreeze_lrs={lrs!r}."
            )
    # Here, not at the top: the optimizers module loads Keras, and reading a config must not.
    from kit.training.optimizers import OPTIMIZER_NAMES

    check_choice("opt", cfg.opt, OPTIMIZER_NAMES, prefix=c)
    if cfg.unfreeze_opt is not None:
        check_choice("unfreeze_opt", cfg.unfreeze_opt, OPTIMIZER_NAMES, prefix=c)
    check_choice("aug", cfg.aug, AUG_NAMES, prefix=c)
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
    check_number("lr_div", cfg.lr_div, min=1, min_open=True, prefix=c)
    if not is_slug(cfg.competition):
        # The slug names a folder under the data directory: "../x" must never get that far.
        raise ValueError(
            "Config competition must be a Kaggle slug: letters, digits, '-' and '_' (`kit list` shows the known ones). "
            f"Received competition={cfg.competition!r}."
        )
