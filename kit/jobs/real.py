"""`kit real` (`make real`): a short name for `kit train --recipe real --folder DIR`.

The recipe (efficientnet_lite0 offline at 288 px: SGD on the head over precomputed activations, then
Adam at differential rates with BatchNorm trained and stochastic depth off, then TTA) is the file
`kit/recipes/real.toml`; its `[quick]` table is the smoke test. The run is an ordinary `kit train
--folder` run (`<work>/runs/<UTC time>-<arch>/`), so `kit analyze --folder` and `kit predict --folder`
work on it afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.jobs.config import TrainConfig, load_config
from kit.jobs.train import Run

RECIPE = "real"


def real_config(
    folder: str | Path, work_dir: str | Path | None = None, quick: bool = False, **overrides: Any
) -> TrainConfig:
    """The recipe on `folder`, its `[quick]` slice when `quick`, then `overrides` (TrainConfig fields).

    Raises:
        FileNotFoundError: `folder` is not a folder.
        ValueError: an override that is not a TrainConfig field, or a value it refuses.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No photos folder {folder}: point `kit real --folder PATH` (or `make real DATA=PATH`) at a folder "
            "with train/<class>/ and valid/<class>/."
        )
    return load_config(
        recipe=RECIPE,
        quick=quick,
        folder=str(folder),
        work_dir=None if work_dir is None else str(work_dir),
        **overrides,
    )


def run_real(
    folder: str | Path,
    work_dir: str | Path | None = None,
    quick: bool = False,
    verbose: bool = True,
    **overrides: Any,
) -> Run:
    """Runs the recipe on `folder` (train/<class>/, valid/<class>/) through `kit.jobs.train.train`;
    writes nothing into it. `run.details` and `run.summary` are `kit real`'s two lines.

    Example:
        run_real("photos").summary
        run_real("photos", quick=True, work_dir="/tmp/w", seed=0)   # a smoke test in seconds

    Args:
        folder: str or Path. The photos, in the lesson's layout; may be read-only.
        work_dir: str, Path or None. Caches and the run (default: `kit.env.work_dir_for(folder)`).
        quick: bool. The recipe's `[quick]` slice, for a smoke test.
        verbose: bool. Print the epoch tables and progress bars.
        overrides: TrainConfig fields laid over the recipe (`seed=0`, `size=224`).
    """
    from kit.jobs.pipeline import data_dir_or_default
    from kit.jobs.train import train  # looked up at call time: the trainer a caller (or a test) has in place

    cfg = real_config(folder, work_dir, quick, **overrides)
    return train(cfg, data_dir_or_default(cfg.data_dir), verbose=verbose)
