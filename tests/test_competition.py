"""Competition declarations, the plugin registry, submission rows and scoring (no Keras needed)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

import kit.kaggle.competition as kc
from kit.kaggle.competition import (
    Competition,
    get_competition,
    label_by_prefix,
    list_competitions,
)
from kit.kaggle.submission import score_rows, submission_rows

REDUX = "dogs-vs-cats-redux-kernels-edition"


def tiny(**kw) -> Competition:
    args = dict(
        slug="tiny-pets",
        title="Tiny",
        classes=("cats", "dogs"),
        files=("train.zip", "test.zip"),
        train_zip="train.zip",
        test_zip="test.zip",
        label_from_name=label_by_prefix({"cat": "cats", "dog": "dogs"}),
        positive_class="dogs",
    )
    args.update(kw)
    return Competition(**args)


def test_builtin_plugins_are_found():
    slugs = [c.slug for c in list_competitions()]
    assert slugs == sorted(slugs)
    assert {REDUX, "dogs-vs-cats", "digits"} <= set(slugs)


def test_unknown_slug_lists_known_ones():
    with pytest.raises(ValueError, match="Unknown competition 'nope'.*digits.*dogs-vs-cats"):
        get_competition("nope")


def test_get_competition_passes_a_competition_through():
    c = tiny()
    assert get_competition(c) is c


def test_redux_declaration():
    c = get_competition(REDUX)
    assert c.classes == ("cats", "dogs")
    assert c.files == ("train.zip", "test.zip", "sample_submission.csv")
    assert (c.metric, c.submission_kind, c.positive_class, c.eps) == ("log_loss", "probability", "dogs", 0.005)
    assert c.label_from_name("cat.123.jpg") == "cats"
    assert c.label_from_name("train/Dog.7.jpg") == "dogs"
    assert c.label_from_name("123.jpg") is None
    assert c.label_from_name("README") is None
    assert c.test_id("123.jpg") == "123"
    assert c.rules_url == f"https://www.kaggle.com/competitions/{REDUX}/rules"
    assert not c.is_offline


def test_dogs_vs_cats_2013_declaration():
    c = get_competition("dogs-vs-cats")
    assert (c.train_zip, c.test_zip, c.metric, c.submission_kind) == (
        "train.zip",
        "test1.zip",
        "accuracy",
        "class_index",
    )
    assert c.classes.index("dogs") == 1 and c.classes.index("cats") == 0


def test_digits_declaration():
    c = get_competition("digits")
    assert c.classes == tuple(str(d) for d in range(10))
    assert c.label_from_name("3.0042.png") == "3"
    assert c.label_from_name("x.0042.png") is None
    assert c.is_offline and c.local_answers is not None


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(slug="bad slug"), "slug must be letters, digits"),
        (dict(slug="../x"), "slug must be letters, digits"),
        (dict(classes=("cats",)), "at least two distinct"),
        (dict(classes=("cats", "cats")), "at least two distinct"),
        (dict(classes=("cats", "../dogs")), "plain folder name"),
        (dict(train_zip="nope.zip"), "train_zip must be one of files"),
        (dict(positive_class=None), "positive_class"),
        (dict(submission_kind="class_index"), "metric='log_loss' is scored on probabilities"),
        (dict(submission_kind="ranks"), "submission_kind must be one of"),
        (dict(metric="auc"), "metric must be one of"),
        (dict(eps=0.5), r"eps must be a finite number in \[0, 0.5\)"),
        (dict(valid_size=-1), "valid_size must be an integer >= 0"),
        (dict(submission_columns=("id",)), "submission_columns"),
    ],
)
def test_bad_declarations_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kw)


def test_lists_become_tuples_and_the_declaration_is_frozen():
    c = tiny(classes=["cats", "dogs"])
    assert c.classes == ("cats", "dogs")
    with pytest.raises(AttributeError):
        c.slug = "x"


def test_probability_rows_pick_the_positive_column_clip_and_sort_numerically():
    c = tiny()
    probs = np.array([[0.0, 1.0], [0.7, 0.3], [1.0, 0.0]])
    # The model's columns may come in any order; ["dogs", "cats"] puts P(dog) first.
    rows = submission_rows(c, ["10", "2", "1"], probs[:, ::-1], ["dogs", "cats"])
    assert rows == [("1", "0.005"), ("2", "0.3"), ("10", "0.995")]
    assert c.submission_rows(["10", "2", "1"], probs, ["cats", "dogs"], eps=0.01)[0] == ("1", "0.01")
    assert c.submission_rows(["10", "2", "1"], probs, ["cats", "dogs"], eps=0)[0] == ("1", "0")


def test_class_index_and_class_name_rows():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    index = tiny(submission_kind="class_index", metric="accuracy", positive_class=None)
    assert index.submission_rows(["a", "b"], probs, ["cats", "dogs"]) == [("a", "0"), ("b", "1")]
    # The index is the competition's (1 = dog), whatever the model's column order.
    assert index.submission_rows(["a", "b"], probs, ["dogs", "cats"]) == [("a", "1"), ("b", "0")]
    digits = get_competition("digits")
    p = np.eye(10)[[3, 7]]
    assert digits.submission_rows(["2", "1"], p, digits.classes) == [("1", "7"), ("2", "3")]


@pytest.mark.parametrize(
    "ids, probs, classes, message",
    [
        (
            ["1"],
            [[0.5, 0.5], [0.5, 0.5]],
            ["cats", "dogs"],
            r"probs must have shape \(len\(ids\), len\(classes\)\) = \(1, 2\)",
        ),
        (["1"], [[-0.1, -2.3]], ["cats", "dogs"], "apply exp to log-probabilities"),
        (["1"], [[float("nan"), 0.5]], ["cats", "dogs"], r"probabilities in \[0, 1\]"),
        (["1"], [[0.5, 0.5]], ["cats", "birds"], "classes must be the classes of 'tiny-pets'"),
        (["1", "1"], [[0.5, 0.5], [0.5, 0.5]], ["cats", "dogs"], "ids must be distinct"),
        (["1", ""], [[0.5, 0.5], [0.5, 0.5]], ["cats", "dogs"], "ids must be distinct and non-empty"),
    ],
)
def test_bad_rows_input_is_refused(ids, probs, classes, message):
    with pytest.raises(ValueError, match=message):
        submission_rows(tiny(), ids, np.array(probs), classes)


def test_log_loss_score_matches_the_formula():
    c = tiny()
    got = score_rows(c, {"1": "0.9", "2": "0.2", "3": "0.6"}, {"1": "dogs", "2": "cats", "3": "cats"})
    want = -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    assert got == pytest.approx(want)


def test_accuracy_scores():
    index = tiny(submission_kind="class_index", metric="accuracy", positive_class=None)
    assert score_rows(index, {"1": "1", "2": "1"}, {"1": "dogs", "2": "cats"}) == 0.5
    prob_acc = tiny(metric="accuracy")
    assert score_rows(prob_acc, {"1": "0.7", "2": "0.4"}, {"1": "dogs", "2": "cats"}) == 1.0


def test_score_refuses_mismatched_ids_and_unknown_answers():
    c = tiny()
    with pytest.raises(ValueError, match=r"Missing ids \['2'\]; unknown ids \['3'\]"):
        score_rows(c, {"1": "0.5", "3": "0.5"}, {"1": "dogs", "2": "cats"})
    with pytest.raises(ValueError, match="answers must be classes of 'tiny-pets'.*'birds' for id '1'"):
        score_rows(c, {"1": "0.5"}, {"1": "birds"})


def test_entry_point_plugins_are_loaded_and_broken_ones_skipped(monkeypatch):
    # monkeypatch restores the real registry afterwards.
    monkeypatch.setattr(kc, "_REGISTRY", None)
    third = tiny(slug="third-party")
    good = SimpleNamespace(name="third", value="pkg:COMPETITION", load=lambda: SimpleNamespace(COMPETITION=third))

    def boom():
        raise ImportError("no module named pkg2")

    bad = SimpleNamespace(name="broken", value="pkg2:COMPETITION", load=boom)
    wrong = SimpleNamespace(name="wrong", value="pkg3:X", load=lambda: 42)
    monkeypatch.setattr(kc.metadata, "entry_points", lambda group: [good, bad, wrong] if group == "kit.plugins" else [])
    with pytest.warns(UserWarning) as record:
        slugs = [c.slug for c in list_competitions(refresh=True)]
    assert "third-party" in slugs and REDUX in slugs
    messages = " ".join(str(w.message) for w in record)
    assert "'broken'" in messages and "no module named pkg2" in messages
    assert "'wrong'" in messages and "must expose COMPETITION" in messages
    assert get_competition("third-party") is third


def test_a_duplicate_slug_from_an_entry_point_is_skipped_with_a_warning(monkeypatch):
    # monkeypatch restores the real registry afterwards.
    monkeypatch.setattr(kc, "_REGISTRY", None)
    clash = SimpleNamespace(name="clash", value="pkg:C", load=lambda: tiny(slug="digits"))
    monkeypatch.setattr(kc.metadata, "entry_points", lambda group: [clash])
    with pytest.warns(UserWarning, match="already declares"):
        list_competitions(refresh=True)
    assert get_competition("digits").is_offline
