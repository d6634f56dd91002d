"""VAR/metrics.py on cases with known answers.

All in float64 (NumPy/SciPy): 1e-9 bounds are rounding; the sampled case's 3 % is the sampling error of
20000 seeded draws.
"""
import numpy as np
import pytest

from VAR.metrics import (class_accuracy, classifier_score, frechet_distance, frechet_distance_from_stats, feature_stats,
                         precision_recall)


def test_identical_sets_have_distance_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert abs(frechet_distance(x, x)) < 1e-9


def test_shifted_gaussians_closed_form_same_covariance():
    # Same covariance, shifted means: the trace term vanishes, distance = ||mu1 - mu2||^2.
    s = np.array([[2.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]])
    mu1, mu2 = np.zeros(3), np.array([1.0, -2.0, 0.5])
    assert frechet_distance_from_stats(mu1, s, mu2, s) == pytest.approx(1 + 4 + 0.25, abs=1e-9)


def test_gaussians_closed_form_diagonal_covariances():
    # Diagonal covariances commute: trace term = sum_i (sqrt(a_i) - sqrt(b_i))^2.
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 0.0]), np.array([3.0, 1.0, -1.0])
    expected = 9 + 1 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, abs=1e-9)


def test_sampled_shifted_gaussians_approach_closed_form():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20000, 4))
    y = rng.normal(size=(20000, 4)) * 2.0 + np.array([1.0, 0.0, 0.0, 2.0])
    # ||mu||^2 = 5; trace term = 4 * (1 - 2)^2 = 4.
    assert frechet_distance(x, y) == pytest.approx(9.0, rel=0.03)


def test_feature_stats_matches_numpy():
    x = np.random.default_rng(2).normal(size=(50, 3))
    mu, s = feature_stats(x)
    np.testing.assert_allclose(mu, x.mean(0))
    np.testing.assert_allclose(s, np.cov(x.T))


def test_precision_recall_identical_and_disjoint():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    assert precision_recall(x, x) == (1.0, 1.0)
    far = x + 100.0
    assert precision_recall(x, far) == (0.0, 0.0)


def test_precision_recall_mode_dropping_lowers_recall_only():
    # Fake covers only one of two real clusters: precision stays high, recall is about one half.
    rng = np.random.default_rng(4)
    real = np.concatenate([rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + 20])
    fake = rng.normal(size=(300, 2))
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.95
    assert 0.4 < r < 0.55


def test_class_accuracy():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    assert class_accuracy(logits, np.array([1, 0, 0, 0])) == 0.75


def test_classifier_score_bounds():
    uniform = np.full((20, 10), 0.1)
    assert classifier_score(uniform) == pytest.approx(1.0)
    onehot = np.eye(10)[np.arange(50) % 10]
    assert classifier_score(onehot) == pytest.approx(10.0, rel=1e-6)
    collapsed = np.eye(10)[np.zeros(50, dtype=int)]  # confident but one class only
    assert classifier_score(collapsed) == pytest.approx(1.0, rel=1e-6)
