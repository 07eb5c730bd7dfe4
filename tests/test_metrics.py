"""kit.metrics: the one accuracy and log loss, checked by hand and against scikit-learn's."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import log_loss as sk_log_loss

from kit import metrics


def test_by_hand():
    y = np.array([0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert metrics.accuracy(y, probs) == pytest.approx(2 / 3)
    assert metrics.accuracy(y, [0, 1, 0]) == pytest.approx(2 / 3)  # labels work as well as scores
    assert metrics.log_loss(y, probs) == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.4)) / 3)
    np.testing.assert_allclose(metrics.log_losses(y, probs), -np.log([0.9, 0.8, 0.4]))
    assert metrics.nll(y, np.log(probs)) == pytest.approx(metrics.log_loss(y, probs))


def test_a_confident_mistake_costs_minus_log_eps():
    y, probs = np.array([0]), np.array([[0.0, 1.0]])
    assert metrics.log_loss(y, probs) == pytest.approx(-np.log(1e-15))  # Kaggle's clip
    assert metrics.log_loss(y, probs, eps=metrics.SKLEARN_EPS) == pytest.approx(-np.log(np.finfo(np.float64).eps))


def test_binary_probabilities_of_the_positive_class():
    y, p = np.array([1, 0, 1, 0]), np.array([0.9, 0.2, 0.3, 0.0])
    np.testing.assert_allclose(metrics.true_class_probs(y, p), [0.9, 0.8, 0.3, 1.0])
    assert metrics.log_loss(y, p) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.3, 1.0])))


@pytest.mark.parametrize("n_classes", [2, 5])
def test_agrees_with_scikit_learn(n_classes):
    rng = np.random.default_rng(n_classes)
    probs = rng.dirichlet(np.ones(n_classes), size=200)
    probs[0] = np.eye(n_classes)[1]  # a certain mistake: both clip it to the float64 eps
    y = rng.integers(0, n_classes, size=200)
    y[0] = 0
    labels = list(range(n_classes))
    expected = sk_log_loss(y, probs, labels=labels)
    assert metrics.log_loss(y, probs, eps=metrics.SKLEARN_EPS) == pytest.approx(expected, rel=1e-12)
    assert metrics.accuracy(y, probs) == accuracy_score(y, probs.argmax(1))
    if n_classes == 2:  # a binary competition's submission: one column, P(class 1)
        assert metrics.log_loss(y, probs[:, 1], eps=metrics.SKLEARN_EPS) == pytest.approx(expected, rel=1e-12)


def test_no_rows_and_bad_labels():
    assert np.isnan(metrics.log_loss([], np.zeros((0, 2)))) and np.isnan(metrics.accuracy([], np.zeros((0, 2))))
    with pytest.raises(ValueError, match="y must be a 1-D array of 2 labels, one per row of probs. Received shape"):
        metrics.log_loss([0, 1, 1], np.full((2, 2), 0.5))


# -- the competitions' metrics ---------------------------------------------------------------------


def test_roc_auc_by_hand():
    # Positives 0.35 and 0.8 against negatives 0.1 and 0.4: 3 of the 4 pairs ranked right.
    y, p1 = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    assert metrics.roc_auc(y, p1) == pytest.approx(0.75)
    assert metrics.roc_auc(y, np.stack([1 - p1, p1], axis=1)) == pytest.approx(0.75)  # (N, 2) reads column 1
    assert metrics.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)  # a tie counts half
    assert metrics.roc_auc([1, 0], [0.9, 0.1]) == 1.0 and metrics.roc_auc([0, 1], [0.9, 0.1]) == 0.0


def test_roc_auc_nan_for_one_class_and_error_for_three():
    assert np.isnan(metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    with pytest.raises(ValueError, match="roc_auc is for two classes; received probabilities of 3 classes"):
        metrics.roc_auc([0, 1, 2], np.full((3, 3), 1 / 3))


def test_f1_micro_is_accuracy_for_single_labels():
    y, pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    assert metrics.f1_micro(y, pred) == pytest.approx(0.5)
    probs = np.eye(3)[pred] * 0.7 + 0.1  # argmax is pred
    assert metrics.f1_micro(y, probs) == pytest.approx(0.5) == metrics.accuracy(y, probs)
    assert np.isnan(metrics.f1_micro([], np.zeros((0, 3))))


def test_quadratic_kappa_perfect_and_off_by_one():
    assert metrics.quadratic_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(1.0)
    # Grades 0, 1, 2 predicted 0, 1, 1: observed weighted disagreement 1/4 (one miss by one of 2
    # grades, squared), expected by chance 3/4 (true marginals 1,1,1; predicted 1,2,0): 1 - 1/3.
    assert metrics.quadratic_kappa([0, 1, 2], [0, 1, 1]) == pytest.approx(2 / 3)
    # The same from (N, 3) probabilities, whose width fixes the grid of grades.
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.6, 0.3]])
    assert metrics.quadratic_kappa([0, 1, 2], probs) == pytest.approx(2 / 3)


def test_quadratic_kappa_nan_cases():
    assert np.isnan(metrics.quadratic_kappa([], np.zeros((0, 3))))
    assert np.isnan(metrics.quadratic_kappa([2, 2, 2], [2, 2, 2]))  # one grade: no agreement to beat chance


def test_score_names_each_metric_and_refuses_others():
    y, p1 = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    probs = np.stack([1 - p1, p1], axis=1)
    assert metrics.score("roc_auc", y, probs) == pytest.approx(0.75)
    assert metrics.score("accuracy", y, probs) == pytest.approx(0.75)
    assert metrics.score("f1_micro", y, probs) == pytest.approx(0.75)
    assert metrics.score("log_loss", y, probs) == pytest.approx(metrics.log_loss(y, probs))
    assert not metrics.METRICS["log_loss"].higher_is_better and metrics.METRICS["roc_auc"].higher_is_better
    with pytest.raises(ValueError, match="Unknown metric 'auc': choose one of log_loss, accuracy, roc_auc"):
        metrics.score("auc", y, probs)
