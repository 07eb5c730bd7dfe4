"""kit.checks: one rule per kind of argument, one sentence per error."""

import re

import numpy as np
import pytest

from kit.checks import check_choice, check_int, check_number


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_check_int_accepts_python_and_numpy_integers(value):
    out = check_int("n", value, min=1)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize(
    "value, received",
    [
        (2.0, "n=2.0 (float)"),
        (True, "n=True (bool)"),
        ("2", "n='2' (str)"),
        (None, "n=None (NoneType)"),
        (np.float64(2.0), "(float64)"),
    ],
)
def test_check_int_refuses_bool_floats_and_strings(value, received):
    with pytest.raises(ValueError) as e:
        check_int("n", value, min=1)
    msg = str(e.value)
    assert msg.startswith("n must be an integer >= 1. Received ")
    assert msg.endswith(f"{received}.")  # numpy's repr of a float64 depends on its version


def test_check_int_bounds_are_inclusive_and_named():
    assert check_int("e", 0, min=0, max=4) == 0 and check_int("e", 4, min=0, max=4) == 4
    with pytest.raises(ValueError, match=re.escape("e must be an integer in [0, 4]. Received e=5 (int).")):
        check_int("e", 5, min=0, max=4)
    with pytest.raises(ValueError, match=re.escape("e must be an integer <= 4. Received e=9 (int).")):
        check_int("e", 9, max=4)
    with pytest.raises(ValueError, match=re.escape("seed must be an integer. Received seed='x' (str).")):
        check_int("seed", "x")


def test_check_int_none_ok_and_prefix():
    assert check_int("cycle_len", None, min=1, none_ok=True) is None
    with pytest.raises(
        ValueError, match=re.escape("Config size must be an integer >= 1 or None. Received size=0 (int).")
    ):
        check_int("size", 0, min=1, none_ok=True, prefix="Config ")


def test_check_number_bounds_open_and_closed():
    assert check_number("lr", 1, min=0, min_open=True) == 1.0
    assert check_number("beta", 0, min=0, max=1, max_open=True) == 0.0
    with pytest.raises(ValueError, match=re.escape("lr must be a finite number > 0. Received lr=0 (int).")):
        check_number("lr", 0, min=0, min_open=True)
    with pytest.raises(
        ValueError, match=re.escape("beta must be a finite number in [0, 1). Received beta=1.0 (float).")
    ):
        check_number("beta", 1.0, min=0, max=1, max_open=True)
    with pytest.raises(ValueError, match=re.escape("x must be a finite number >= 0. Received x=-1 (int).")):
        check_number("x", -1, min=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "1", None])
def test_check_number_refuses_non_finite_bool_and_strings(value):
    with pytest.raises(ValueError, match="x must be a finite number. Received x="):
        check_number("x", value)


def test_check_choice_prints_the_valid_choices():
    assert check_choice("opt", "adam", ("sgd", "adam")) == "adam"
    with pytest.raises(ValueError, match=re.escape("opt must be one of ['sgd', 'adam']. Received opt='Adam' (str).")):
        check_choice("opt", "Adam", ("sgd", "adam"))
    with pytest.raises(ValueError, match="one of \\[1, 2\\]. Received k=True"):
        check_choice("k", True, (1, 2))
    with pytest.raises(ValueError, match="Received a=array"):
        check_choice("a", np.zeros(2), ("x",))
