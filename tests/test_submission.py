"""Submission files: every Kaggle shape, the atomic write, every validation rule, and local scoring."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss

from kit.kaggle.competition import Competition, get_competition, id_from_name
from kit.kaggle.submission import (
    SubmissionFormat,
    competition_format,
    format_from_sample,
    read_submission,
    score_submission,
    submission_path,
    submission_rows,
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


# --- every Kaggle submission shape ------------------------------------------------------------

FILES = ("train.zip", "test.zip", "labels.csv", "sample_submission.csv")


def declare(slug: str, **kw) -> Competition:
    """A competition as its plugin would declare it (the real plugins live elsewhere)."""
    args = dict(
        slug=slug,
        title=slug,
        classes=(),
        files=FILES,
        train_zip="train.zip",
        test_zip="test.zip",
        labels_csv="labels.csv",
        sample_submission="sample_submission.csv",
    )
    args.update(kw)
    return Competition(**args)


DOG_BREED = declare(
    "dog-breed-identification", submission_columns=("id",), submission_kind="probabilities", metric="log_loss"
)
CACTUS = declare(
    "aerial-cactus-identification",
    classes=("0", "1"),
    test_id=id_from_name,
    submission_columns=("id", "has_cactus"),
    positive_class="1",
    metric="roc_auc",
)
HISTO = declare(
    "histopathologic-cancer-detection",
    classes=("0", "1"),
    submission_columns=("id", "label"),
    positive_class="1",
    metric="roc_auc",
)
PLANTS = declare(
    "plant-seedlings-classification",
    classes=("Black-grass", "Charlock", "Cleavers"),
    labels_csv=None,
    labels_from_folders=True,
    test_id=id_from_name,
    submission_columns=("file", "species"),
    submission_kind="class_name",
    metric="f1_micro",
)
APTOS = declare(
    "aptos2019-blindness-detection",
    submission_columns=("id_code", "diagnosis"),
    submission_kind="class_name",
    metric="quadratic_kappa",
)
BREEDS = ["beagle", "collie", "pug"]
GRADES = ["0", "1", "2", "3", "4"]

# (competition, the data's classes, sample_submission.csv or None, test files, probs in the classes'
# order, answers, the file Kaggle must get, the score worked out by hand)
SHAPES = {
    "dog-breed": (
        DOG_BREED,
        BREEDS,
        "id,pug,beagle,collie\nc,0.3,0.3,0.4\na,0.3,0.3,0.4\nb,0.3,0.3,0.4\n",
        ["a.jpg", "b.jpg", "c.jpg"],
        [[0.5, 0.25, 0.25], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25]],
        {"a": "beagle", "b": "pug", "c": "collie"},
        "id,pug,beagle,collie\nc,0.25,0.25,0.5\na,0.25,0.5,0.25\nb,0.8,0.1,0.1\n",
        -(math.log(0.5) + math.log(0.8) + math.log(0.5)) / 3,  # the true class's column
    ),
    "cactus": (
        CACTUS,
        ["0", "1"],
        "id,has_cactus\nb.jpg,0.5\na.jpg,0.5\nd.jpg,0.5\nc.jpg,0.5\n",
        ["test/a.jpg", "test/b.jpg", "test/c.jpg", "test/d.jpg"],
        [[0.1, 0.9], [0.6, 0.4], [0.65, 0.35], [0.9, 0.1]],
        {"a.jpg": "1", "b.jpg": "0", "c.jpg": "1", "d.jpg": "0"},
        "id,has_cactus\nb.jpg,0.4\na.jpg,0.9\nd.jpg,0.1\nc.jpg,0.35\n",
        3 / 4,  # of the 4 (cactus, no cactus) pairs, only (c 0.35, b 0.4) is ranked wrong
    ),
    "histopathology": (
        HISTO,
        ["0", "1"],
        None,
        ["f00d.tif", "0b1e.tif", "a9f0.tif", "3c2d.tif"],
        [[0.4, 0.6], [0.5, 0.5], [0.3, 0.7], [0.9, 0.1]],
        {"f00d": "1", "0b1e": "0", "a9f0": "0", "3c2d": "0"},
        "id,label\n0b1e,0.5\n3c2d,0.1\na9f0,0.7\nf00d,0.6\n",
        2 / 3,  # the one tumour (0.6) outranks 2 of the 3 healthy tiles (0.5, 0.1; not 0.7)
    ),
    "plant-seedlings": (
        PLANTS,
        ["Black-grass", "Charlock", "Cleavers"],
        "file,species\nz.png,Charlock\nx.png,Charlock\ny.png,Charlock\nw.png,Charlock\n",
        ["w.png", "x.png", "y.png", "z.png"],
        np.eye(3)[[2, 0, 1, 1]],
        {"w.png": "Cleavers", "x.png": "Black-grass", "y.png": "Charlock", "z.png": "Cleavers"},
        "file,species\nz.png,Charlock\nx.png,Black-grass\ny.png,Charlock\nw.png,Cleavers\n",
        3 / 4,  # micro-F1 of one label per row = accuracy
    ),
    "aptos": (
        APTOS,
        GRADES,
        "id_code,diagnosis\nk2,0\nk1,0\nk4,0\nk3,0\n",
        ["k1.png", "k2.png", "k3.png", "k4.png"],
        np.eye(5)[[0, 4, 4, 4]],
        {"k1": "0", "k2": "0", "k3": "4", "k4": "4"},
        "id_code,diagnosis\nk2,4\nk1,0\nk4,4\nk3,4\n",
        # Observed: (0,0) (0,4) (4,4) (4,4); weights (i-j)^2/16 = 1 for (0,4). sum w*O = 1;
        # expected counts from the margins {0: 2, 4: 2} x {0: 1, 4: 3} / 4 give sum w*E = 1.5 + 0.5.
        1 - 1 / 2,
    ),
    "redux": (
        REDUX,
        ["cats", "dogs"],
        None,
        ["10.jpg", "1.jpg", "2.jpg"],
        [[0.0, 1.0], [0.2, 0.8], [0.7, 0.3]],
        {"1": "dogs", "2": "cats", "10": "dogs"},
        "id,label\n1,0.8\n2,0.3\n10,0.995\n",
        -(math.log(0.8) + math.log(0.7) + math.log(0.995)) / 3,  # 1.0 was clipped to 0.995
    ),
    "dogs-vs-cats": (
        Y2013,
        ["dogs", "cats"],  # the model's columns in another order: the index is still 1 = dog
        None,
        ["2.jpg", "1.jpg"],
        [[0.9, 0.1], [0.3, 0.7]],
        {"1": "cats", "2": "cats"},
        "id,label\n1,0\n2,1\n",
        1 / 2,
    ),
    "digits": (
        DIGITS,
        list(DIGITS.classes),
        None,
        ["3.png", "1.png", "2.png"],
        np.eye(10)[[4, 0, 9]],
        {"3": "4", "1": "0", "2": "8"},
        "id,label\n1,0\n2,9\n3,4\n",
        2 / 3,
    ),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_submission_shape_is_written_validated_read_and_scored(tmp_path, shape):
    comp, classes, sample_text, files, probs, answers, text, score = SHAPES[shape]
    sample = csv_file(tmp_path, sample_text, "sample_submission.csv") if sample_text else None
    fmt = competition_format(comp, classes=classes, sample=sample)
    ids = [fmt.id_of(f) for f in files]
    path = write_submission(fmt, ids, np.array(probs), classes, out_dir=tmp_path / "subs", now=NOW, arch="m")
    assert path.name == f"{comp.slug}-20240131T120005Z-m.csv"
    assert path.read_text() == text
    validate_submission(fmt, path, ids)
    rows = [line.split(",") for line in text.splitlines()[1:]]
    want = {r[0]: tuple(r[1:]) if fmt.kind == "probabilities" else r[1] for r in rows}
    assert read_submission(fmt, path) == want
    assert list(read_submission(fmt, path)) == [r[0] for r in rows]
    assert score_submission(fmt, path, answers) == pytest.approx(score, abs=1e-12)
    if sample is None:  # the Competition itself (as callers always passed it) writes the same file
        again = write_submission(comp, ids, np.array(probs), classes, out_dir=tmp_path / "c", now=NOW, arch="m")
        assert again.read_text() == text
        assert score_submission(comp, again, answers) == pytest.approx(score, abs=1e-12)


def test_the_competitions_formats():
    fmt = competition_format(CACTUS)
    assert (fmt.columns, fmt.kind, fmt.classes, fmt.positive_class, fmt.metric) == (
        ("id", "has_cactus"),
        "probability",
        ("0", "1"),
        "1",
        "roc_auc",
    )
    assert fmt.keep_extension and fmt.id_of("test/0a1b.jpg") == "0a1b.jpg"
    assert fmt.expected_ids is None
    histo = competition_format(HISTO)
    assert not histo.keep_extension and histo.id_of("test/f00d.tif") == "f00d"
    # Without the sample, a "probabilities" file's columns follow the data's classes.
    assert competition_format(DOG_BREED, classes=BREEDS).columns == ("id", "beagle", "collie", "pug")
    # A classless competition's kappa grades the data's classes in their order.
    assert competition_format(APTOS, classes=GRADES).classes == tuple(GRADES)


def test_competition_format_refuses_what_does_not_fit(tmp_path):
    with pytest.raises(ValueError, match=r"'aptos2019-blindness-detection' declares no classes.*classes=data.classes"):
        competition_format(APTOS)
    with pytest.raises(ValueError, match=r"classes must be the classes of competition 'digits'"):
        competition_format(DIGITS, classes=["0", "1"])
    wrong = csv_file(tmp_path, "id,label\n1,0\n", "sample_submission.csv")
    with pytest.raises(
        ValueError, match=r"sample_submission.csv: line 1 must be the header id,has_cactus .*'id,label'"
    ):
        competition_format(CACTUS, sample=wrong)
    breeds = csv_file(tmp_path, "id,beagle,pug\na,0.5,0.5\n", "breeds.csv")
    with pytest.raises(ValueError, match=r"breeds.csv: line 1 must be 'id' and one column per class"):
        competition_format(DOG_BREED, classes=BREEDS, sample=breeds)
    twice = csv_file(tmp_path, "id,label\n1,0\n2,0\n1,0\n", "twice.csv")
    with pytest.raises(ValueError, match=r"twice.csv: line 4, column 'id': id '1' appears twice \(lines 2 and 4\)"):
        competition_format(HISTO, sample=twice)


def test_a_classless_probabilities_competition_reads_its_classes_from_the_header(tmp_path):
    sample = csv_file(tmp_path, "id,pug,beagle,collie\na,0.2,0.3,0.5\n", "sample_submission.csv")
    fmt = competition_format(DOG_BREED, sample=sample)
    assert fmt.value_columns == ("pug", "beagle", "collie") and fmt.expected_ids == ("a",)
    assert read_submission(DOG_BREED, sample) == {"a": ("0.2", "0.3", "0.5")}
    assert score_submission(DOG_BREED, sample, {"a": "collie"}) == pytest.approx(-math.log(0.5))


# --- format_from_sample --------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, classes, metric, kind, positive, want_metric",
    [
        ("id,c,a,b", ["a", "b", "c"], None, "probabilities", None, "log_loss"),
        ("id,label", ["cats", "dogs"], None, "probability", "dogs", "log_loss"),  # the second class
        ("id,has_cactus", ["1", "0"], "roc_auc", "probability", "1", "roc_auc"),  # the class named "1"
        ("id,label", ["True", "False"], None, "probability", "True", "log_loss"),
        ("id,dog", ["dog", "cat"], None, "probability", "dog", "log_loss"),  # the column's own class
        ("id,label", ["cats", "dogs"], "accuracy", "class_name", None, "accuracy"),
        ("file,species", ["x", "y", "z"], None, "class_name", None, "accuracy"),
        ("id_code,diagnosis", GRADES, "quadratic_kappa", "class_name", None, "quadratic_kappa"),
    ],
)
def test_format_from_sample_infers_the_shape(tmp_path, header, classes, metric, kind, positive, want_metric):
    sample = csv_file(tmp_path, header + "\n7,x\n3,x\n", "sample_submission.csv")
    fmt = format_from_sample(sample, classes, "my-folder", metric=metric)
    assert (fmt.kind, fmt.positive_class, fmt.metric) == (kind, positive, want_metric)
    assert fmt.columns == tuple(header.split(","))
    assert fmt.classes == tuple(classes) and fmt.name == "my-folder"
    assert fmt.expected_ids == ("7", "3") and not fmt.keep_extension


def test_format_from_sample_scales_the_clip_with_the_columns(tmp_path):
    """A column per class: the clip adds at most DEFAULT_EPS of mass to a row's wrong columns, whatever c."""
    breeds = [f"b{k}" for k in range(120)]
    sample = csv_file(tmp_path, "id," + ",".join(breeds) + "\n1," + ",".join(["0"] * 120) + "\n")
    fmt = format_from_sample(sample, breeds, "breeds")
    assert fmt.kind == "probabilities" and fmt.eps == pytest.approx(0.005 / 119)
    assert format_from_sample(csv_file(tmp_path, "id,label\n1,0\n", "s.csv"), ["0", "1"], "x").eps == 0.005
    assert format_from_sample(sample, breeds, "breeds", eps=0.01).eps == 0.01


def test_format_from_sample_sees_whether_ids_keep_their_extension(tmp_path):
    sample = csv_file(tmp_path, "file,species\nb.png,x\na.PNG,y\n")
    fmt = format_from_sample(sample, ["x", "y", "z"], "plants")
    assert fmt.keep_extension and fmt.id_of("test/c.png") == "c.png"
    assert format_from_sample(csv_file(tmp_path, "id,label\nb,x\n", "s2.csv"), ["x", "y"], "p").id_of("c.png") == "c"


@pytest.mark.parametrize(
    "text, classes, message",
    [
        ("id,a,b\n1,0,1\n", ["a", "b", "c"], r"sample.csv: cannot tell the submission format from the header 'id,a,b'"),
        ("id,a,x\n1,0,1\n", ["a", "b"], r"the header 'id,a,x' and 2 classes \['a', 'b'\]. The rule: the id and one"),
        ("id\n1\n", ["a", "b"], r"sample.csv: line 1 must be a header of an id column and at least one value column"),
        ("", ["a", "b"], r"line 1 must be a header of an id column"),
    ],
)
def test_format_from_sample_refuses_a_header_it_cannot_read(tmp_path, text, classes, message):
    with pytest.raises(ValueError, match=message):
        format_from_sample(csv_file(tmp_path, text, "sample.csv"), classes, "x")


def test_a_format_that_cannot_be_right_is_refused():
    base = dict(name="f", id_column="id", value_columns=("label",), kind="class_name", classes=("a", "b", "c"))
    with pytest.raises(ValueError, match=r"name must be a name of letters, digits and _.\+-.*Received .*'a/b'"):
        SubmissionFormat(**{**base, "name": "a/b"})
    with pytest.raises(ValueError, match=r"metric='roc_auc' is scored on probabilities"):
        SubmissionFormat(**{**base, "metric": "roc_auc"})
    with pytest.raises(ValueError, match=r"value_columns must be the classes \['a', 'b', 'c'\] in any order"):
        SubmissionFormat(**{**base, "kind": "probabilities", "value_columns": ("a", "b")})
    with pytest.raises(ValueError, match=r"a 'probabilities' submission is scored on probabilities"):
        SubmissionFormat(**{**base, "kind": "probabilities", "value_columns": ("c", "b", "a"), "metric": "accuracy"})
    with pytest.raises(ValueError, match=r"needs two classes and positive_class among them"):
        SubmissionFormat(**{**base, "kind": "probability", "classes": ("a", "b"), "positive_class": "z"})
    with pytest.raises(ValueError, match=r"kind='probability' with metric='log_loss' is for two classes"):
        SubmissionFormat(**{**base, "kind": "probability", "positive_class": "a"})


# --- "probabilities": clip, renormalise, validate -------------------------------------------

BREED_FORMAT = SubmissionFormat(
    name="breeds",
    id_column="id",
    value_columns=("pug", "beagle", "collie"),
    kind="probabilities",
    classes=tuple(BREEDS),
    metric="log_loss",
    eps=0.01,
    expected_ids=("c", "a", "b"),
)
BREED_HEADER = "id,pug,beagle,collie\n"
BREED_OK = BREED_HEADER + "c,0.2,0.3,0.5\na,0.2,0.3,0.5\nb,0.2,0.3,0.5\n"


def test_a_probabilities_row_is_clipped_then_renormalised(tmp_path):
    # beagle = 1: clipped to (0.99, 0.01, 0.01), sum 1.01, then divided by it as Kaggle would.
    rows = submission_rows(BREED_FORMAT, ["a", "b", "c"], np.array([[1.0, 0.0, 0.0]] + [[0.2, 0.3, 0.5]] * 2), BREEDS)
    assert rows[0] == ("c", "0.5", "0.2", "0.3")
    assert rows[1] == ("a", "0.00990099", "0.980198", "0.00990099")
    assert sum(float(v) for v in rows[1][1:]) == pytest.approx(1, abs=1e-6)
    assert float(rows[1][1]) == pytest.approx(0.01 / 1.01, rel=1e-5)
    path = write_submission(BREED_FORMAT, ["a", "b", "c"], np.eye(3), BREEDS, out_dir=tmp_path, now=NOW)
    assert score_submission(BREED_FORMAT, path, {"a": "beagle", "b": "collie", "c": "pug"}) == pytest.approx(
        -math.log(0.99 / 1.01), rel=1e-5
    )


def test_probabilities_are_scored_after_dividing_each_row_by_its_sum(tmp_path):
    path = csv_file(tmp_path, BREED_HEADER + "c,0.1,0.1,0.2\na,0.2,0.6,0.2\nb,0.1,0.1,0.1\n")
    # c: collie 0.2/0.4; a: beagle 0.6/1.0; b: pug 1/3.
    want = -(math.log(0.5) + math.log(0.6) + math.log(1 / 3)) / 3
    assert score_submission(BREED_FORMAT, path, {"a": "beagle", "b": "pug", "c": "collie"}) == pytest.approx(want)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "id,beagle,pug,collie\n",
            r"sub.csv: line 1 must be the header id,pug,beagle,collie \(the same columns in another order\). "
            r"Received 'id,beagle,pug,collie'",
        ),
        ("id,pug,beagle,corgi\n", r"line 1 must .*\(missing columns: 'collie'; unknown columns: 'corgi'\)"),
        (BREED_HEADER + "c,0.2,0.3\n", r"sub.csv: line 2 must have 4 fields \(id,pug,beagle,collie\). Received 3"),
        (
            BREED_HEADER + "c,0.2,0.3,0.5\na,0.2,1.2,0.5\n",
            r"sub.csv: line 3, column 'beagle' \(id 'a'\) must be a probability in \[0, 1\]. Received '1.2'",
        ),
        (BREED_HEADER + "c,0,0,0\n", r"line 2 \(id 'c'\): the class probabilities must not all be 0"),
        (
            BREED_OK + "z,0.2,0.3,0.5\n",
            r"sub.csv: column 'id' has ids that are not in the sample submission: 'z' \(first on line 5\)",
        ),
        (
            BREED_HEADER + "c,0.2,0.3,0.5\nb,0.2,0.3,0.5\n",
            r"needs one row per test image \(3\), has 2; missing ids: 'a' \(first expected on line 3 of the sample\)",
        ),
    ],
)
def test_each_probabilities_rule(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        validate_submission(BREED_FORMAT, csv_file(tmp_path, text))


def test_the_sample_ids_are_the_rule_and_their_order_is_kept(tmp_path):
    validate_submission(BREED_FORMAT, csv_file(tmp_path, BREED_OK))  # the sample's ids: no list needed
    # Another order is still a valid file; ids that are test images but not the sample's are not.
    validate_submission(BREED_FORMAT, csv_file(tmp_path, BREED_HEADER + "a,1,0,0\nb,1,0,0\nc,1,0,0\n"))
    with pytest.raises(ValueError, match=r"has ids that are not test images: 'b' \(first on line 4\)"):
        validate_submission(BREED_FORMAT, csv_file(tmp_path, BREED_OK), ["a", "c"])
    with pytest.raises(ValueError, match=r"ids must be the 3 ids of the sample submission of 'breeds'. .*'d'"):
        submission_rows(BREED_FORMAT, ["a", "b", "d"], np.eye(3), BREEDS)
    unsampled = SubmissionFormat(**{**BREED_FORMAT.__dict__, "expected_ids": None})
    with pytest.raises(ValueError, match=r"validate_submission needs the test ids"):
        validate_submission(unsampled, csv_file(tmp_path, BREED_OK))
    assert [r[0] for r in submission_rows(unsampled, ["c", "b", "a"], np.eye(3), BREEDS)] == ["a", "b", "c"]


def test_a_long_header_is_shown_short(tmp_path):
    breeds = [f"breed{k:03d}" for k in range(120)]
    fmt = SubmissionFormat("dogs", "id", tuple(breeds), "probabilities", tuple(breeds))
    header = "id," + ",".join(breeds[:-1]) + ",corgi\n"
    with pytest.raises(
        ValueError,
        match=r"header id,breed000,breed001,breed002,… \(121 columns\) \(missing columns: "
        r"'breed119'; unknown columns: 'corgi'\)",
    ):
        validate_submission(fmt, csv_file(tmp_path, header), ["1"])
