from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from detectors import bootstrap_ci, classification_metrics, regression_metrics


@pytest.fixture(scope="module")
def binary():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 800)
    s = np.clip(rng.random(800) * 0.6 + y * 0.3, 0, 1)
    s[:50] = np.round(s[:50], 1)  # ties for ROC AUC
    return y, s


def test_classification_equals_sklearn(binary):
    y, s = binary
    c = classification_metrics(y, s, threshold=0.5)
    pred = (s >= 0.5).astype(int)
    assert c.n == 800 and c.positives == int(y.sum())
    assert c.accuracy == skm.accuracy_score(y, pred)
    assert c.precision == skm.precision_score(y, pred)
    assert c.recall == skm.recall_score(y, pred)
    assert c.f1 == skm.f1_score(y, pred)
    assert c.roc_auc == pytest.approx(
        skm.roc_auc_score(y, s), rel=1e-14
    )  # rank formula vs trapezoids
    assert c.log_loss == pytest.approx(skm.log_loss(y, s, labels=[0, 1]), rel=1e-13)
    assert c.brier == pytest.approx(skm.brier_score_loss(y, s), rel=1e-13)


def test_string_labels_and_pos_label():
    y = np.array(["churn", "stay", "churn", "stay", "stay"], dtype=object)
    s = np.array([0.9, 0.2, 0.4, 0.6, 0.1])
    c = classification_metrics(y, s, pos_label="churn")
    assert (c.accuracy, c.precision, c.recall) == (0.6, 0.5, 0.5)
    assert c.roc_auc == skm.roc_auc_score(y == "churn", s)


def test_edge_cases():
    one_class = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(one_class.roc_auc) and one_class.recall == 2 / 3
    none_predicted = classification_metrics([0, 1], [0.1, 0.2])
    assert (
        none_predicted.precision == 0.0 and none_predicted.f1 == 0.0
    )  # sklearn's zero_division default
    empty = classification_metrics([], [])
    assert empty.n == 0 and math.isnan(empty.accuracy)
    dropped = classification_metrics(np.array([1, None, 0], dtype=object), [0.9, 0.5, np.nan])
    assert dropped.n == 1 and dropped.n_dropped == 2
    assert classification_metrics([0, 1], [0.0, 1.0]).log_loss == pytest.approx(
        skm.log_loss([0, 1], [0.0, 1.0], labels=[0, 1])
    )


def test_regression_equals_sklearn():
    rng = np.random.default_rng(1)
    t = rng.normal(size=500) * 5
    p = t + rng.normal(size=500)
    r = regression_metrics(t, p)
    assert r.mae == skm.mean_absolute_error(t, p)
    assert r.rmse == skm.root_mean_squared_error(t, p)
    assert r.mape == skm.mean_absolute_percentage_error(t, p)
    assert r.r2 == pytest.approx(skm.r2_score(t, p), rel=1e-14)


def test_regression_edges():
    assert (
        regression_metrics([2.0, 2.0], [2.0, 2.0]).r2 == skm.r2_score([2.0, 2.0], [2.0, 2.0]) == 1.0
    )
    assert (
        regression_metrics([2.0, 2.0], [1.0, 2.0]).r2 == skm.r2_score([2.0, 2.0], [1.0, 2.0]) == 0.0
    )
    assert math.isnan(regression_metrics([1.0], [2.0]).r2)
    assert regression_metrics([0.0, 1.0], [1.0, 1.0]).mape == skm.mean_absolute_percentage_error(
        [0.0, 1.0], [1.0, 1.0]
    )
    r = regression_metrics([1.0, np.nan, np.inf], [1.0, 2.0, 3.0])
    assert (r.n, r.n_dropped, r.mae) == (1, 2, 0.0)


@pytest.mark.parametrize(
    "metric", ["accuracy", "f1", "roc_auc", "log_loss", "brier", "precision", "recall"]
)
def test_bootstrap_matches_a_plain_loop(binary, metric):
    """The vectorised replicates equal metrics recomputed on explicitly resampled rows."""
    y, s = binary
    n_boot = 40
    ci = bootstrap_ci(metric, y, s, n_boot=n_boot, seed=3)
    rng = np.random.default_rng(3)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    loop = np.array([getattr(classification_metrics(y[i], s[i]), metric) for i in idx])
    lo, hi = np.quantile(loop, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, rel=1e-12) and ci.high == pytest.approx(hi, rel=1e-12)
    assert ci.low <= ci.estimate <= ci.high and ci.n_defined == n_boot


@pytest.mark.parametrize("metric", ["mae", "rmse", "mape", "r2"])
def test_bootstrap_regression_matches_a_plain_loop(metric):
    rng = np.random.default_rng(4)
    t = rng.normal(size=300) * 3 + 1000.0  # large mean: r2 must not cancel catastrophically
    p = t + rng.normal(size=300)
    ci = bootstrap_ci(metric, t, p, n_boot=30, seed=5)
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 300, size=(30, 300))
    loop = np.array([getattr(regression_metrics(t[i], p[i]), metric) for i in idx])
    lo, hi = np.quantile(loop, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, rel=1e-9) and ci.high == pytest.approx(hi, rel=1e-9)


def test_bootstrap_is_deterministic_and_validates():
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.8, 0.3, 0.6])
    assert bootstrap_ci("roc_auc", y, s, seed=1) == bootstrap_ci("roc_auc", y, s, seed=1)
    assert bootstrap_ci("roc_auc", y, s, seed=1).n_defined < 1000  # some resamples hold one class
    assert math.isnan(bootstrap_ci("mae", [], []).low)
    with pytest.raises(ValueError):
        bootstrap_ci("auc", y, s, task="classification")
