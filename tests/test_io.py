"""kit.io: atomic writes that leave the old file on failure, strict JSON, free-space checks."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kit.io import (
    NO_ROOM_ERRNOS,
    NotEnoughSpaceError,
    atomic_path,
    atomic_write,
    atomic_write_json,
    ensure_free_space,
    is_no_room,
    no_room_error,
    to_json,
)


def test_atomic_write_replaces_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "a" / "f.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["f.txt"]


@pytest.mark.parametrize("name", ["m.weights.h5", "x.npy", "p.npz", "plain"])
def test_atomic_path_keeps_the_suffix_writers_insist_on(tmp_path, name):
    with atomic_path(tmp_path / name) as tmp:
        assert (
            tmp.parent == tmp_path
            and tmp.name.startswith(".")
            and tmp.name.endswith(name[name.find(".") :] if "." in name else "")
        )
        if name.endswith(".npy"):
            np.save(tmp, np.arange(3))
        else:
            tmp.write_bytes(b"x")
    assert (tmp_path / name).exists() and len(list(tmp_path.iterdir())) == 1


def test_failure_mid_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_json_never_holds_nan(tmp_path):
    path = atomic_write_json(tmp_path / "h.json", {"loss": math.nan, "acc": [np.float32(0.5), math.inf]})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"loss": None, "acc": [0.5, None]}


def test_not_enough_space_names_folder_bytes_needed_and_free(tmp_path):
    with pytest.raises(NotEnoughSpaceError) as e:
        ensure_free_space(tmp_path, 10**18, "the image cache")
    err = e.value
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(tmp_path) in str(err) and "the image cache" in str(err) and str(10**18) in str(err)
    with pytest.raises(NotEnoughSpaceError), atomic_path(tmp_path / "big.bin", need=10**18):
        pass
    assert list(tmp_path.iterdir()) == []


def test_to_json_is_strict_and_turns_numpy_into_plain_values():
    text = to_json({"a": np.float64("nan"), "b": np.arange(2), "c": (1.5, -math.inf), "p": Path("x")}, indent=None)
    assert text == '{"a": null, "b": [0, 1], "c": [1.5, null], "p": "x"}'
    assert to_json({"b": 1, "a": 2}, sort_keys=True, indent=None) == '{"a": 2, "b": 1}'


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EFBIG])
def test_every_no_room_errno_becomes_one_error_naming_the_folder(tmp_path, code):
    assert code in NO_ROOM_ERRNOS
    cause = OSError(code, os.strerror(code))
    assert is_no_room(cause)
    err = no_room_error(cause, tmp_path, "the weights w.weights.h5")
    assert isinstance(err, NotEnoughSpaceError) and isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert err.__cause__ is cause and err.folder == tmp_path
    assert str(err) == (
        f"[Errno {errno.ENOSPC}] No space left in {tmp_path} while writing the weights w.weights.h5. "
        "Free some space or point the kit at another folder."
    )
    sized = no_room_error(cause, tmp_path, "the cache", need=2048, free=1024)
    assert "Not enough free space in" in str(sized) and "needs 2.0 KB (2048 bytes), 1.0 KB (1024 bytes) free" in str(
        sized
    )


def test_other_errors_are_not_no_room_and_pass_through(tmp_path):
    other = OSError(errno.EACCES, "Permission denied")
    assert not is_no_room(other) and not is_no_room(ValueError("x")) and not is_no_room(None)
    assert no_room_error(other, tmp_path) is other
    already = NotEnoughSpaceError(tmp_path, 10, 5, "x")
    assert no_room_error(already, tmp_path) is already


def test_not_enough_space_survives_pickling(tmp_path):
    err = pickle.loads(pickle.dumps(NotEnoughSpaceError(tmp_path, 10, 5, "the cache")))
    assert isinstance(err, NotEnoughSpaceError) and (err.need, err.free) == (10, 5) and "the cache" in str(err)
