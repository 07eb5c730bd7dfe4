"""kit.io: atomic writes that leave the old file on failure, strict JSON, free-space checks."""

from __future__ import annotations

import errno
import json
import math

import numpy as np
import pytest

from kit.io import NotEnoughSpaceError, atomic_path, atomic_write, atomic_write_json, ensure_free_space


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
