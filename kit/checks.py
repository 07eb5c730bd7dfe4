"""Argument checks: one rule for an integer, a number and a choice, one sentence for each error.

Every public function and config field of the kit checks its arguments with these, so the rules
cannot drift apart (`True` is not an integer, `2.0` is not an integer, `"2"` is not a number) and
every error reads the same way: the argument, the rule, and what was received.

Example:

```python
n_cycle = check_int("n_cycle", n_cycle, min=1)
opt = check_choice("opt", opt, OPTIMIZER_NAMES, prefix="Config ")
```

Pure Python: no Keras, no numpy (numpy's integers and floats are accepted through `numbers`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = ["check_choice", "check_int", "check_number", "received"]


def received(name: str, value: Any) -> str:
    """The end of every check's sentence: `Received n=2.0 (float).`"""
    return f"Received {name}={value!r} ({type(value).__name__})."


def _bounds(min: float | None, max: float | None, min_open: bool = False, max_open: bool = False) -> str:
    if min is not None and max is not None:
        return f" in {'(' if min_open else '['}{min}, {max}{')' if max_open else ']'}"
    if min is not None:
        return f" {'>' if min_open else '>='} {min}"
    if max is not None:
        return f" {'<' if max_open else '<='} {max}"
    return ""


def check_int(
    name: str,
    value: Any,
    min: int | None = None,
    max: int | None = None,
    *,
    none_ok: bool = False,
    prefix: str = "",
) -> int | None:
    """`value` as an `int` in [min, max], or a `ValueError` that names the argument.

    Python and numpy integers pass; `bool` and floats (even `2.0`) do not, so a typo in a config
    file cannot become a silent truncation.

    Example:

    ```python
    check_int("n_aug", 4, min=0)  # 4
    check_int("n_aug", 2.0, min=0)  # ValueError: n_aug must be an integer >= 0. Received n_aug=2.0 (float).
    ```

    Args:
        name: str. The argument's name, as the caller spells it.
        value: Any. What was passed.
        min: int or None. The smallest value allowed (inclusive).
        max: int or None. The largest value allowed (inclusive).
        none_ok: bool. Whether `None` is allowed (and returned as is).
        prefix: str. Put before the name in the message, e.g. `"Config "`.

    Returns:
        The value as a plain `int` (or `None` when `none_ok`).
    """
    if value is None and none_ok:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (min is not None and value < min or max is not None and value > max):
        ok = False
    if not ok:
        rule = "an integer" + _bounds(min, max) + (" or None" if none_ok else "")
        raise ValueError(f"{prefix}{name} must be {rule}. {received(name, value)}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    min: float | None = None,
    max: float | None = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    none_ok: bool = False,
    prefix: str = "",
) -> float | None:
    """`value` as a finite `float` within the bounds, or a `ValueError` that names the argument.

    Integers and floats (Python's or numpy's) pass; `bool`, strings, NaN and infinities do not.

    Example:

    ```python
    check_number("lr", 1e-2, min=0, min_open=True)  # 0.01
    check_number("beta", 1.0, min=0, max=1, max_open=True)  # ValueError: beta must be a finite number in [0, 1). ...
    ```

    Args:
        name: str. The argument's name, as the caller spells it.
        value: Any. What was passed.
        min: float or None. The lower bound.
        max: float or None. The upper bound.
        min_open: bool. Whether `min` itself is refused (`> min` rather than `>= min`).
        max_open: bool. Whether `max` itself is refused.
        none_ok: bool. Whether `None` is allowed (and returned as is).
        prefix: str. Put before the name in the message, e.g. `"Config "`.

    Returns:
        The value as a plain `float` (or `None` when `none_ok`).
    """
    if value is None and none_ok:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and min is not None and (value <= min if min_open else value < min):
        ok = False
    if ok and max is not None and (value >= max if max_open else value > max):
        ok = False
    if not ok:
        rule = "a finite number" + _bounds(min, max, min_open, max_open) + (" or None" if none_ok else "")
        raise ValueError(f"{prefix}{name} must be {rule}. {received(name, value)}")
    return float(value)


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # an array compared with a string, say
        return False


def check_choice(name: str, value: Any, options: Iterable[Any], *, prefix: str = "") -> Any:
    """`value` if it is one of `options`, or a `ValueError` that prints the list of valid choices.

    Example:

    ```python
    check_choice("aug", "side_on", AUG_NAMES)  # 'side_on'
    ```

    Args:
        name: str. The argument's name, as the caller spells it.
        value: Any. What was passed.
        options: Iterable. The valid choices (compared with `==`; `True` never matches `1`).
        prefix: str. Put before the name in the message, e.g. `"Config "`.

    Returns:
        The value, unchanged.
    """
    options = list(options)
    if not any(isinstance(value, bool) == isinstance(o, bool) and _equal(value, o) for o in options):
        raise ValueError(f"{prefix}{name} must be one of {options}. {received(name, value)}")
    return value
