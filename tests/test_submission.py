"""Submission files: the atomic write, every validation rule, and local scoring."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss

from kit.kaggle.competition import get_competition
from kit.kaggle.submission import (
    read_submission,
    score_submission,
    submission_path,
    validate_submission,
    write_submission,
)

REDUX = get_competition("dogs-vs-cats-redux-kernels-edition")
Y2013 = get_competition("dogs-vs-cats")
DIGITS = get_competition("digits")
NOW = datetime(2024, 1, 31, 12, 0, 5, tzinfo=timezone.utc)
IDS = ["1", "2", "3", "10"]
PROBS = np.array([[0.9, 0.1], [0.0, 1.0], [0.4, 0.6], [1.0, 0.0]])


def write(tmp_path, comp=REDUX, ids=IDS, probs=PROBS, classes=("cats", "dogs"), **kw) -> Path:
    return write_submission(comp, ids, probs, list(classes), out_dir=tmp_path / "subs", now=NOW, **kw)


def csv_file(tmp_path, text: str, name: str = "sub.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_redux_submission_is_named_clipped_and_sorted(tmp_path):
    path = write(tmp_path, arch="resnet50")
    assert path == tmp_path / "subs" / "dogs-vs-cats-redux-kernels-edition-20240131T120005Z-resnet50.csv"
    assert path.read_text() == "id,label\n1,0.1\n2,0.995\n3,0.6\n10,0.005\n"
    # Nothing but the submission is left in the folder (no temp file).
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    validate_submission(REDUX, path, IDS)


def test_eps_can_be_chosen(tmp_path):
    path = write(tmp_path, eps=0.02)
    assert read_submission(REDUX, path) == {"1": "0.1", "2": "0.98", "3": "0.6", "10": "0.02"}


def test_2013_and_digits_submissions(tmp_path):
    p13 = write(tmp_path, comp=Y2013, arch="efficientnet_lite0")
    assert p13.name == "dogs-vs-cats-20240131T120005Z-efficientnet_lite0.csv"
    assert p13.read_text() == "id,label\n1,0\n2,1\n3,1\n10,0\n"
    probs = np.eye(10)[[4, 0, 9]]
    pd = write(tmp_path, comp=DIGITS, ids=["3", "1", "2"], probs=probs, classes=DIGITS.classes)
    assert pd.read_text() == "id,label\n1,0\n2,9\n3,4\n"


def test_the_time_stamp_is_utc(tmp_path):
    local = datetime(2024, 1, 31, 14, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert submission_path(REDUX, tmp_path, "r", local).name.endswith("-20240131T120005Z-r.csv")
    naive = datetime(2024, 1, 31, 12, 0, 5)
    assert submission_path(REDUX, tmp_path, "r", naive).name.endswith("-20240131T120005Z-r.csv")


@pytest.mark.parametrize("arch", ["", "res/net", "../x", ".hidden", "a b"])
def test_an_arch_that_is_not_a_file_name_part_is_refused(tmp_path, arch):
    with pytest.raises(ValueError, match="arch must be a name"):
        write(tmp_path, arch=arch)


def test_a_failed_write_leaves_nothing_and_keeps_an_old_file(tmp_path):
    old = write(tmp_path)
    before = old.read_bytes()
    with pytest.raises(ValueError, match="apply exp to log-probabilities"):
        write(tmp_path, probs=np.log(np.clip(PROBS, 1e-3, 1)))
    assert [p.name for p in old.parent.iterdir()] == [old.name]
    assert old.read_bytes() == before


def test_a_crash_after_the_temp_file_is_written_leaves_no_file(tmp_path, monkeypatch):
    import kit.kaggle.submission as ks

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(ks, "validate_submission", crash)
    with pytest.raises(RuntimeError, match="killed"):
        write(tmp_path)
    assert list((tmp_path / "subs").iterdir()) == []


# --- validation: one test per rule ----------------------------------------------------------

HEADER = "id,label\n"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"sub.csv: the file is empty; it must start with the header id,label"),
        ("ID,Label\n1,0.5\n", r"sub.csv: line 1 must be the header id,label. Received 'ID,Label'"),
        ("id,label,extra\n", r"line 1 must be the header id,label"),
        (HEADER + "1,0.5\n2\n", r"sub.csv: line 3 must have 2 fields \(id,label\). Received 1"),
        (HEADER + "1,0.5,0.3\n", r"line 2 must have 2 fields"),
        (HEADER + ",0.5\n", r"line 2, column 'id' must not be empty"),
        (HEADER + "1,0.5\n2,0.5\n1,0.5\n", r"line 4, column 'id': id '1' appears twice \(lines 2 and 4\)"),
        (HEADER + "1,1.5\n", r"line 2, column 'label' \(id '1'\) must be a probability in \[0, 1\]. Received '1.5'"),
        (HEADER + "1,-0.1\n", r"must be a probability in \[0, 1\]. Received '-0.1'"),
        (HEADER + "1,dog\n", r"must be a probability in \[0, 1\]. Received 'dog'"),
        (HEADER + "1,nan\n", r"Received 'nan'"),
        (HEADER + "1,0.5\n2,0.5\n3,0.5\n10,0.5\n99,0.5\n", r"column 'id' has ids that are not test images: '99'"),
        (HEADER + "1,0.5\n2,0.5\n", r"needs one row per test image \(4\), has 2; missing ids: '3', '10'"),
    ],
)
def test_each_validation_rule(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        validate_submission(REDUX, csv_file(tmp_path, text), IDS)


def test_class_index_and_class_name_values_are_checked(tmp_path):
    with pytest.raises(
        ValueError,
        match=r"line 2, column 'label' \(id '1'\) must be a class index 0..1 \(0=cats, 1=dogs\). Received '2'",
    ):
        validate_submission(Y2013, csv_file(tmp_path, HEADER + "1,2\n"), ["1"])
    with pytest.raises(ValueError, match=r"class index .*Received '0.7'"):
        validate_submission(Y2013, csv_file(tmp_path, HEADER + "1,0.7\n"), ["1"])
    with pytest.raises(ValueError, match=r"must be one of the classes \['0', '1', .*Received '12'"):
        validate_submission(DIGITS, csv_file(tmp_path, HEADER + "1,12\n"), ["1"])
    validate_submission(DIGITS, csv_file(tmp_path, HEADER + "1,7\n"), ["1"])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="submission file not found: .*nope.csv"):
        validate_submission(REDUX, tmp_path / "nope.csv", IDS)


def test_a_byte_order_mark_and_crlf_are_accepted(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfid,label\r\n1,0.5\r\n")
    validate_submission(REDUX, p, ["1"])


# --- scoring --------------------------------------------------------------------------------


def test_log_loss_score_matches_scikit_learn(tmp_path):
    path = write(tmp_path)
    answers = {"1": "cats", "2": "dogs", "3": "cats", "10": "dogs"}
    p = np.array([0.1, 0.995, 0.6, 0.005])
    want = log_loss([0, 1, 0, 1], p)
    assert score_submission(REDUX, path, answers) == pytest.approx(want)
    # The clip at work: the confident mistake on id 10 costs log(1/0.005), not infinity.
    assert -math.log(0.005) == pytest.approx(5.2983, abs=1e-4)
    assert math.isfinite(score_submission(REDUX, path, answers))


def test_accuracy_score_and_answers_from_a_csv(tmp_path):
    path = write(tmp_path, comp=Y2013)
    answers = csv_file(tmp_path, "id,label\n1,cats\n2,dogs\n3,cats\n10,cats\n", "answers.csv")
    assert score_submission(Y2013, path, answers) == 0.75


def test_scoring_checks_the_ids_against_the_answers(tmp_path):
    path = write(tmp_path)
    with pytest.raises(ValueError, match=r"missing ids: '4'"):
        score_submission(REDUX, path, {"1": "cats", "2": "dogs", "3": "cats", "10": "dogs", "4": "dogs"})
    bad = csv_file(tmp_path, "id\n1\n", "answers.csv")
    with pytest.raises(ValueError, match=r"answers.csv: answers must be a CSV with the header id,<class>"):
        score_submission(REDUX, path, bad)
