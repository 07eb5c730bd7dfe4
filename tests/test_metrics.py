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
