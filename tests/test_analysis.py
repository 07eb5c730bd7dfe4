"""Interpretation: selections on made-up predictions with known answers, metrics, plots, bad input."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.figure import Figure

from helpers.images import make_folders
from kit import lesson
from kit.analysis.interpretation import Interpretation

# Two classes, as in the lesson: P(dog) of 10 images. Dyadic fractions, so that ties are exact ties.
Y2 = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
P_DOG = np.array([0.125, 0.25, 0.125, 0.875, 0.625, 0.9375, 0.5625, 0.25, 0.4375, 0.96875])
PROBS2 = np.stack([1 - P_DOG, P_DOG], axis=1)

# Three classes; row 7 ties classes 0 and 2 (argmax picks 0, so it is a mistake with margin 0).
Y3 = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2])
PROBS3 = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.5, 0.25, 0.25],
        [0.25, 0.5, 0.25],
        [0.125, 0.125, 0.75],
        [0.25, 0.5, 0.25],
        [0.125, 0.75, 0.125],
        [0.5, 0.375, 0.125],
        [0.375, 0.25, 0.375],
        [0.0, 0.0, 1.0],
    ]
)


def interp2(files=None, root=None) -> Interpretation:
    files = files if files is not None else [f"img{i}.jpg" for i in range(len(Y2))]
    return Interpretation(files, Y2, PROBS2, ["cats", "dogs"], root=root)


def interp3(files=None) -> Interpretation:
    files = files if files is not None else [f"img{i}.jpg" for i in range(len(Y3))]
    return Interpretation(files, Y3, PROBS3, ["a", "b", "c"])


def lesson_most_by_correct(y, is_correct, preds, val_y, probs):
    """The lesson's own code, to check that two classes give the lesson's answer."""
    mult = -1 if (y == 1) == is_correct else 1
    mask = ((preds == val_y) == is_correct) & (val_y == y)
    idxs = np.where(mask)[0]
    return idxs[np.argsort(mult * probs[idxs], kind="stable")[:4]]


def fig_titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def renders_png(fig: Figure) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


# -- selections ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y, is_correct, expected",
    [(0, True, [0, 2, 1]), (0, False, [3, 4]), (1, True, [9, 5, 6]), (1, False, [7, 8])],
)
def test_most_by_correct_two_classes(y, is_correct, expected):
    it = interp2()
    np.testing.assert_array_equal(it.most_by_correct(y, is_correct), expected)
    np.testing.assert_array_equal(
        it.most_by_correct(y, is_correct), lesson_most_by_correct(y, is_correct, it.preds, Y2, P_DOG)
    )


def test_most_by_correct_n_and_class_name():
    it = interp2()
    np.testing.assert_array_equal(it.most_by_correct("cats", True, n=1), [0])
    np.testing.assert_array_equal(it.most_by_correct(np.int64(1), True, n=2), [9, 5])


def test_most_uncertain_two_classes_matches_lesson():
    it = interp2()
    np.testing.assert_array_equal(it.most_uncertain(), [6, 8, 4, 1])
    np.testing.assert_array_equal(it.most_uncertain(n=5), [6, 8, 4, 1, 7])
    np.testing.assert_array_equal(it.most_uncertain(), np.argsort(np.abs(P_DOG - 0.5), kind="stable")[:4])


def test_top_losses_two_classes():
    it = interp2()
    np.testing.assert_array_equal(it.top_losses(), [3, 7, 4, 8, 6, 1, 0, 2, 5, 9])
    np.testing.assert_array_equal(it.top_losses(3), [3, 7, 4])
    np.testing.assert_allclose(it.losses[3], -np.log(0.125))


def test_rand_by_correct():
    it = interp2()
    wrong = it.rand_by_correct(False, seed=1)
    assert sorted(wrong.tolist()) == [3, 4, 7, 8]
    right = it.rand_by_correct(True, n=100, seed=1)
    assert sorted(right.tolist()) == [0, 1, 2, 5, 6, 9]
    picks = it.rand_by_correct(True, n=3, seed=7)
    assert len(set(picks.tolist())) == 3 and set(picks.tolist()) <= {0, 1, 2, 5, 6, 9}
    np.testing.assert_array_equal(picks, it.rand_by_correct(True, n=3, seed=7))
    assert it.rand_by_correct(True, n=0).size == 0


@pytest.mark.parametrize(
    "y, is_correct, expected",
    [(0, True, [0, 1]), (0, False, [3, 2]), (1, True, [5, 4]), (1, False, [6]), (2, True, [8]), (2, False, [7])],
)
def test_most_by_correct_three_classes_per_class(y, is_correct, expected):
    np.testing.assert_array_equal(interp3().most_by_correct(y, is_correct), expected)


def test_three_class_uncertainty_is_top_two_margin_and_top_losses():
    it = interp3()
    np.testing.assert_array_equal(it.most_uncertain(n=9), [7, 6, 1, 2, 4, 0, 3, 5, 8])
    np.testing.assert_array_equal(it.top_losses(), [3, 2, 6, 7, 1, 4, 0, 5, 8])
    np.testing.assert_array_equal(it.preds, [0, 0, 1, 2, 1, 1, 0, 0, 2])


# -- metrics ---------------------------------------------------------------------------------------


def test_metrics_two_classes():
    it = interp2()
    m = it.metrics()
    assert m["accuracy"] == pytest.approx(0.6) and m["n_correct"] == 6 and m["n_images"] == 10
    assert m["log_loss"] == pytest.approx(it.losses.mean())
    np.testing.assert_array_equal(it.confusion_matrix(), [[3, 2], [2, 3]])
    np.testing.assert_allclose(it.confusion_matrix(normalize=True), [[0.6, 0.4], [0.4, 0.6]])
    rows = it.per_class()
    assert [r["class"] for r in rows] == ["cats", "dogs"]
    assert rows[0]["precision"] == pytest.approx(0.6) and rows[0]["recall"] == pytest.approx(0.6)
    assert rows[1]["precision"] == pytest.approx(0.6) and rows[1]["f1"] == pytest.approx(0.6)
    assert [r["support"] for r in rows] == [5, 5]


def test_metrics_three_classes():
    it = interp3()
    np.testing.assert_array_equal(it.confusion_matrix(), [[2, 1, 1], [1, 2, 0], [1, 0, 1]])
    assert it.accuracy() == pytest.approx(5 / 9)
    # Row 8 has P(true)=1 and row 3 P(true)=0.125: the log loss is finite and exact.
    assert it.log_loss() == pytest.approx(np.mean(-np.log(PROBS3[np.arange(9), Y3])))


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [2, -1, 5])
def test_class_index_out_of_range_is_a_value_error_naming_it(bad):
    with pytest.raises(ValueError, match=rf"y must be a class index in \[0, 2\).*Received y={bad}"):
        interp2().most_by_correct(bad, True)


def test_bad_selection_arguments():
    it = interp2()
    with pytest.raises(ValueError, match=r"one of \['cats', 'dogs'\].*'wolves'"):
        it.most_by_correct("wolves", True)
    with pytest.raises(TypeError, match="is_correct must be True or False"):
        it.rand_by_correct("yes")
    with pytest.raises(ValueError, match="n must be an integer >= 0"):
        it.most_uncertain(n=-1)
    with pytest.raises(ValueError, match="idxs must index the 10 validation images. Received 10"):
        it.plot_val_with_title([1, 10], "x")
    with pytest.raises(ValueError, match="boolean mask"):
        it.plot_val_with_title(it.is_correct, "x")
    with pytest.raises(ValueError, match=r"cls must be a class index in \[0, 2\).*Received cls=3"):
        it.plot_val_with_title([0], "x", cls=3)


def test_bad_construction():
    files = [f"{i}.jpg" for i in range(10)]
    with pytest.raises(ValueError, match=r"y must hold class indices in \[0, 2\). Received y\[1\]=2"):
        Interpretation(files, np.array([0, 2] + [0] * 8), PROBS2, ["cats", "dogs"])
    with pytest.raises(ValueError, match="each row of probs must sum to 1.*row 0"):
        Interpretation(files, Y2, PROBS2 * 2, ["cats", "dogs"])
    with pytest.raises(ValueError, match="non-negative"):
        Interpretation(files, Y2, np.log(PROBS2), ["cats", "dogs"])
    with pytest.raises(ValueError, match="classes must name each of the 2 columns"):
        Interpretation(files, Y2, PROBS2, ["cats"])
    with pytest.raises(ValueError, match="files must list the 10 images"):
        Interpretation(files[:3], Y2, PROBS2, ["cats", "dogs"])
    with pytest.raises(ValueError, match=r"y must have shape \(10,\)"):
        Interpretation(files, Y2[:4], PROBS2, ["cats", "dogs"])


# -- the lesson's bare functions --------------------------------------------------------------------


def test_module_functions_need_an_interpretation(monkeypatch):
    monkeypatch.setattr(lesson, "_current", None)
    for call in (
        lambda: lesson.most_uncertain(),
        lambda: lesson.rand_by_correct(True),
        lambda: lesson.plot_val_with_title([0], "x"),
    ):
        with pytest.raises(RuntimeError, match=r"learn\.interpret\(\)"):
            call()


def test_module_functions_use_the_current_interpretation(monkeypatch):
    monkeypatch.setattr(lesson, "_current", None)
    lesson.use(interp2())
    np.testing.assert_array_equal(lesson.most_by_correct(0, False), [3, 4])
    it3 = lesson.use(interp3())
    interp2()  # building one does not change the current one: no hidden global state
    assert lesson.current_interpretation() is it3
    np.testing.assert_array_equal(lesson.most_by_correct(0, False), [3, 2])
    np.testing.assert_array_equal(lesson.most_uncertain(2), [7, 6])
    np.testing.assert_array_equal(lesson.top_losses(1), [3])
    assert len(lesson.plot_confusion_matrix().axes) == 1


@pytest.mark.backends
@pytest.mark.parametrize("tta", [False, True])
def test_from_learner(tta):
    import keras

    log_probs = np.log(PROBS2).astype("float32")
    aug = np.stack([log_probs, np.log(PROBS2[:, ::-1]).astype("float32")])  # (1 + n_aug, N, c)
    learn = SimpleNamespace(
        predict=lambda: keras.ops.convert_to_tensor(log_probs),
        TTA=lambda: (keras.ops.convert_to_tensor(aug), Y2),
        data=SimpleNamespace(val_y=Y2, val_files=[f"/v/{i}.jpg" for i in range(10)], classes=["cats", "dogs"]),
    )
    it = Interpretation.from_learner(learn, tta=tta)
    expected = np.exp(aug).mean(axis=0) if tta else PROBS2
    np.testing.assert_allclose(it.probs, expected, atol=1e-6)
    assert it.path(3) == Path("/v/3.jpg") and it.classes == ["cats", "dogs"]


# -- plots -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    root = make_folders(tmp_path_factory.mktemp("dogscats"), n_train=0, n_valid=5, size=24)
    return sorted((root / "valid").glob("*/*.jpg"))  # cats 0-4 then dogs 5-9, the order of Y2


def test_plot_val_with_title_two_classes_shows_p_class1(image_files):
    it = interp2(image_files)
    fig = it.plot_val_with_title(it.most_by_correct(0, True), "Most correct cats")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert fig.get_suptitle() == "Most correct cats"
    assert fig_titles(fig) == ["P(dogs)=0.125", "P(dogs)=0.125", "P(dogs)=0.250"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["cat.0.jpg", "cat.2.jpg", "cat.1.jpg"]
    assert all(len(ax.images) == 1 and not ax.texts for ax in fig.axes)
    assert renders_png(fig)


def test_plot_val_with_title_grid_and_three_classes():
    it = interp3()
    fig = it.plot_val_with_title(np.arange(7), "All")
    assert len(fig.axes) == 7  # a 3x3 grid with the two unused cells removed
    assert fig.axes[3].get_subplotspec().rowspan.start == 1
    assert fig_titles(fig)[:3] == ["a 0.700", "a 0.500", "b 0.500"]
    fig = it.plot_val_with_title([8, 0], "Shown as c", cls="c", ncols=1)
    assert fig_titles(fig) == ["P(c)=1.000", "P(c)=0.100"]
    assert renders_png(fig)


def test_empty_selection_gives_a_figure_that_says_so():
    it = interp2()
    fig = it.plot_val_with_title(it.most_by_correct(0, False, n=0), "Most incorrect cats")
    assert len(fig.axes) == 1 and fig.get_suptitle() == "Most incorrect cats"
    assert "selection is empty" in fig.axes[0].texts[0].get_text()
    assert it.plot_top_losses(0).axes[0].texts and renders_png(fig)


def test_missing_and_unreadable_images_get_placeholder_tiles(tmp_path, image_files):
    files = list(image_files)
    files[0] = tmp_path / "gone.jpg"
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    files[1] = bad
    it = interp2(files)
    fig = it.plot_val_with_title([0, 1, 2], "Tiles")
    assert len(fig.axes) == 3
    assert fig.axes[0].texts[0].get_text() == "missing\ngone.jpg"
    assert fig.axes[1].texts[0].get_text() == "unreadable\nbroken.jpg"
    assert not fig.axes[2].texts
    assert fig_titles(fig)[0] == "P(dogs)=0.125" and renders_png(fig)


def test_relative_files_resolve_against_root(image_files):
    root = image_files[0].parents[1]
    it = interp2([f.relative_to(root) for f in image_files], root=root)
    assert it.path(0) == image_files[0]
    assert not it.plot_val_with_title([0], "x").axes[0].texts


def test_plot_confusion_matrix():
    it = interp3()
    fig = it.plot_confusion_matrix()
    (ax,) = fig.axes
    assert ax.get_title() == "Confusion matrix" and ax.get_xlabel() == "Predicted" and ax.get_ylabel() == "Actual"
    assert [t.get_text() for t in ax.texts] == ["2", "1", "1", "1", "2", "0", "1", "0", "1"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    fig = it.plot_confusion_matrix(normalize=True)
    assert fig.axes[0].get_title() == "Normalised confusion matrix"
    assert fig.axes[0].texts[0].get_text() == "0.50"
    assert renders_png(fig)
    host = Figure()
    target = host.add_subplot(1, 2, 2)
    assert it.plot_confusion_matrix(ax=target) is host and target.texts


def test_plot_top_losses(image_files):
    it = interp2(image_files)
    fig = it.plot_top_losses(3)
    assert len(fig.axes) == 3
    assert fig_titles(fig)[0] == f"dogs/cats\n{-np.log(0.125):.2f}/0.12"
    assert fig.get_suptitle().startswith("Top losses")
    assert len(it.plot_top_losses(9).axes) == 9 and renders_png(fig)
