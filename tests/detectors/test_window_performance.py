"""Window performance figures equal scikit-learn's; intervals, comparisons and estimates behave."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.isotonic import IsotonicRegression

from detectors.comparison import compare, two_proportion_z
from detectors.estimation import estimate_binary, fit_calibrator
from detectors.window_performance import (
    binary_performance,
    multiclass_performance,
    regression_performance,
)

TOL = 1e-12


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL * max(1.0, abs(b))


def test_binary_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(1500) < 0.3
    s = np.clip(rng.random(1500) * 0.7 + y * 0.25, 0, 1).round(3)  # rounded: ties
    wp = binary_performance(y, s, threshold=0.4, n_boot=50, seed=1)
    pred = s >= 0.4
    expected = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, s),
        "log_loss": skm.log_loss(y, s, labels=[False, True]),
        "brier": skm.brier_score_loss(y, s),
    }
    for m, v in expected.items():
        assert close(wp.figures[m].value, v), (m, wp.figures[m].value, v)
        f = wp.figures[m]
        assert f.ci_low <= f.value <= f.ci_high and f.se > 0, m
    assert wp.rates["accuracy"] == (int((pred == y).sum()), 1500)
    assert wp.rates["precision"] == (int((pred & y).sum()), int(pred.sum()))


def test_binary_scores_that_are_not_probabilities_have_no_log_loss() -> None:
    wp = binary_performance(np.array([True, False, True]), np.array([2.5, -1.0, 0.7]), threshold=0.0)
    assert math.isnan(wp.value("log_loss")) and math.isnan(wp.value("brier"))
    assert wp.value("accuracy") == 1.0 and wp.value("roc_auc") == 1.0


def test_a_model_whose_scores_are_margins_has_no_log_loss_even_in_a_window_within_0_1() -> None:
    """Whether scores are probabilities is the model's (``probabilities``), not each
    window's: a margin model's window whose margins happen to fall in [0, 1] gets no log
    loss or Brier score; a probability model's window gets sklearn's, as with the default."""
    y, s = np.array([True, False, True, False]), np.array([0.9, 0.2, 0.6, 0.4])
    margin = binary_performance(y, s, n_boot=20, probabilities=False)
    assert math.isnan(margin.value("log_loss")) and math.isnan(margin.value("brier"))
    assert margin.value("accuracy") == 1.0 and margin.value("roc_auc") == 1.0
    for probs in (True, None):
        wp = binary_performance(y, s, n_boot=20, probabilities=probs)
        assert close(wp.value("log_loss"), skm.log_loss(y, s, labels=[False, True]))
        assert close(wp.value("brier"), skm.brier_score_loss(y, s))


def test_multiclass_equals_sklearn() -> None:
    rng = np.random.default_rng(2)
    classes = np.array(["cat", "dog", "eel", "fox"], dtype=object)
    t = rng.choice(classes, 900, p=[0.5, 0.3, 0.15, 0.05])
    p = np.where(rng.random(900) < 0.7, t, rng.choice(classes[:3], 900))  # "fox" never predicted
    wp = multiclass_performance(t, p, positive="dog", n_boot=40, seed=3)
    assert close(wp.value("accuracy"), skm.accuracy_score(t, p))
    for avg in ("macro", "weighted"):
        assert close(wp.value(f"precision_{avg}"), skm.precision_score(t, p, average=avg, zero_division=0))
        assert close(wp.value(f"recall_{avg}"), skm.recall_score(t, p, average=avg, zero_division=0))
        assert close(wp.value(f"f1_{avg}"), skm.f1_score(t, p, average=avg, zero_division=0))
    assert close(wp.value("precision"), skm.precision_score(t == "dog", p == "dog"))
    assert close(wp.value("recall"), skm.recall_score(t == "dog", p == "dog"))
    assert close(wp.value("f1"), skm.f1_score(t == "dog", p == "dog"))
    f = wp.figures["f1_macro"]
    assert f.ci_low < f.value < f.ci_high


def test_a_very_long_class_name_costs_its_own_length_not_every_rows() -> None:
    """Class names were made a fixed-width text array (``astype(str)``): every row as wide
    as the longest name. One predicted class of 500,000 characters (a message under the
    1 MiB cap) in a window of 2,000 labelled rows asked for 8 GB and the daemon was killed,
    again at each restart (the window was still owed its figures). Here 20,000 characters
    in 2,000 rows took 960 MB; figures are those of scikit-learn either way."""
    import tracemalloc

    rng = np.random.default_rng(4)
    classes = np.array(["basic", "pro", "enterprise"], dtype=object)
    t = rng.choice(classes, 2000)
    p = np.where(rng.random(2000) < 0.7, t, rng.choice(classes, 2000))
    p[7] = "x" * 20_000
    t[11] = 12  # a class that is not text yet is read as its text, as before
    tracemalloc.start()
    try:
        wp = multiclass_performance(t, p, positive="pro", n_boot=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak
    ts = np.array([str(v) for v in t], dtype=object)
    assert close(wp.value("accuracy"), skm.accuracy_score(ts, p))
    for avg in ("macro", "weighted"):
        assert close(wp.value(f"precision_{avg}"), skm.precision_score(ts, p, average=avg, zero_division=0))
        assert close(wp.value(f"f1_{avg}"), skm.f1_score(ts, p, average=avg, zero_division=0))
    assert close(wp.value("recall"), skm.recall_score(ts == "pro", p == "pro"))


def test_multiclass_bootstrap_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(5)
    classes = np.array(["a", "b", "c"], dtype=object)
    t = rng.choice(classes, 300)
    p = np.where(rng.random(300) < 0.6, t, rng.choice(classes, 300))
    wp = multiclass_performance(t, p, positive="b", n_boot=30, seed=9, chunk=7)
    rng = np.random.default_rng(9)
    loop = []
    for start in range(0, 30, 7):
        k = min(7, 30 - start)
        idx = rng.integers(0, 300, size=(k, 300))
        loop += [skm.f1_score(t[i], p[i], average="macro", zero_division=0) for i in idx]
    lo, hi = np.quantile(loop, [0.025, 0.975])
    f = wp.figures["f1_macro"]
    assert f.ci_low == pytest.approx(lo, rel=1e-12) and f.ci_high == pytest.approx(hi, rel=1e-12)
    assert f.se == pytest.approx(np.std(loop, ddof=1), rel=1e-12)


def test_class_sums_equal_the_one_hot_products_they_replace() -> None:
    from detectors.performance import _bootstrap_weights
    from detectors.window_performance import _ClassSums

    rng = np.random.default_rng(6)
    for n, k in ((1, 1), (50, 7), (3000, 40)):
        codes = rng.integers(0, max(1, k - 2), n)  # the last classes have no rows
        w = _bootstrap_weights(n, 9, rng)
        assert np.array_equal(_ClassSums(codes, k)(w), w @ np.eye(k)[codes])
    assert _ClassSums(np.zeros(0, dtype=np.intp), 3)(np.zeros((2, 0))).tolist() == [[0.0] * 3] * 2


def test_a_large_window_bootstraps_in_bounded_memory_with_the_same_intervals() -> None:
    """100 replicates' weights of a 300,000-row window, and three rows x classes one-hot
    matrices, were all held at once: ~1.5 GB for 100 classes, in a daemon whose windows
    may be that large without any hostile input. Replicates are now drawn in chunks of at
    most MAX_BOOT_CELLS weights, and class sums come from the rows grouped by class; the
    numbers drawn, hence the intervals, do not depend on the chunks."""
    import tracemalloc

    rng = np.random.default_rng(7)
    classes = np.array([f"c{i}" for i in range(50)], dtype=object)
    n = 200_000
    t = rng.choice(classes, n)
    p = np.where(rng.random(n) < 0.6, t, rng.choice(classes, n))
    tracemalloc.start()
    try:
        big = multiclass_performance(t, p, positive="c3", n_boot=40, seed=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # before: 40 replicates x 200k weights at once (4 arrays of 64 MB) and 3 one-hot
    # matrices of 80 MB: ~500 MB; now 20 replicates at a time, no one-hot matrices
    assert peak < 200_000_000, peak
    small = multiclass_performance(t[:20_000], p[:20_000], positive="c3", n_boot=12, seed=3, chunk=12)
    same = multiclass_performance(t[:20_000], p[:20_000], positive="c3", n_boot=12, seed=3, chunk=5)
    assert small.figures == same.figures
    f = big.figures["f1_macro"]
    assert f.ci_low is not None and f.ci_low < big.value("f1_macro") < f.ci_high  # type: ignore[operator]


def test_resamples_where_precision_or_recall_is_undefined_are_left_out() -> None:
    """A resample without a predicted (or actual) positive has no precision (recall): counting
    it as 0 made a perfect classifier's interval [0, 1] in a small window, and inflated the
    bootstrap standard error that f1_delta and f1_worse_p use. Left out, like ROC AUC on a
    one-class resample; the point figures keep scikit-learn's 0 for 0/0."""
    y = np.array([True, True] + [False] * 18)
    s = np.where(y, 0.9, 0.1)
    wp = binary_performance(y, s, n_boot=2000, seed=1)
    t = np.where(y, "churn", "stay").astype(object)
    mc = multiclass_performance(t, t.copy(), positive="churn", n_boot=2000, seed=1)
    for figs in (wp.figures, mc.figures):
        for m in ("precision", "recall", "f1"):
            f = figs[m]
            assert (f.value, f.ci_low, f.ci_high, f.se) == (1.0, 1.0, 1.0, 0.0), (m, f)
    # the intervals of the defined resamples, as a loop over scikit-learn computes them
    y = np.zeros(20, dtype=bool)
    y[[0, 1]] = True  # two positives, of which one is predicted, and one false alarm
    s = np.full(20, 0.1)
    s[[0, 5]] = 0.9
    wp = binary_performance(y, s, n_boot=300, seed=4, chunk=300)
    idx = np.random.default_rng(4).integers(0, 20, size=(300, 20))
    for m, fn, den in (("precision", skm.precision_score, lambda i: (s[i] >= 0.5).sum()),
                       ("recall", skm.recall_score, lambda i: y[i].sum())):
        loop = [fn(y[i], s[i] >= 0.5, zero_division=0) for i in idx if den(i) > 0]
        assert len(loop) < 300  # some resamples had none: the case at hand
        lo, hi = np.quantile(loop, [0.025, 0.975])
        f = wp.figures[m]
        assert f.ci_low == pytest.approx(lo, rel=1e-12) and f.ci_high == pytest.approx(hi, rel=1e-12), m
        assert f.se == pytest.approx(np.std(loop, ddof=1), rel=1e-12), m
    # and the point figure of a window without a predicted positive stays scikit-learn's 0
    assert binary_performance(y, np.zeros(20), n_boot=50).figures["precision"].value == 0.0


def test_regression_equals_sklearn() -> None:
    rng = np.random.default_rng(4)
    t = rng.normal(50, 10, 700)
    p = t + rng.normal(0, 3, 700)
    wp = regression_performance(t, p, n_boot=30, seed=2)
    assert close(wp.value("mae"), skm.mean_absolute_error(t, p))
    assert close(wp.value("rmse"), skm.root_mean_squared_error(t, p))
    assert close(wp.value("mape"), skm.mean_absolute_percentage_error(t, p))
    assert close(wp.value("r2"), skm.r2_score(t, p))
    assert wp.figures["mae"].ci_low < wp.value("mae") < wp.figures["mae"].ci_high


def test_empty_and_no_bootstrap() -> None:
    assert binary_performance(np.array([], bool), np.array([])).n == 0
    assert math.isnan(regression_performance(np.array([]), np.array([])).value("mae"))
    wp = binary_performance(np.array([True, False]), np.array([0.9, 0.2]), n_boot=0)
    assert wp.value("accuracy") == 1.0 and math.isnan(wp.figures["accuracy"].ci_low)


def test_intervals_are_deterministic_per_seed() -> None:
    y = np.array([True, False] * 50)
    s = np.linspace(0, 1, 100)
    a = binary_performance(y, s, seed=7)
    assert a == binary_performance(y, s, seed=7)
    assert a.figures["roc_auc"] != binary_performance(y, s, seed=8).figures["roc_auc"]


# --------------------------------------------------------------------------- comparison


def test_two_proportion_z_matches_statsmodels_formula() -> None:
    # pooled z by hand: p1=0.8, p2=0.7, pooled=0.75
    z = two_proportion_z(80, 100, 70, 100)
    assert z == pytest.approx(0.1 / math.sqrt(0.75 * 0.25 * 0.02), rel=1e-12)
    assert math.isnan(two_proportion_z(1, 0, 1, 2)) and two_proportion_z(5, 5, 3, 3) == 0.0


def _window(rng: np.random.Generator, n: int, acc_shift: float) -> tuple[np.ndarray, np.ndarray]:
    y = rng.random(n) < 0.4
    s = np.clip(0.5 + (y - 0.5) * (0.5 - acc_shift) + rng.normal(0, 0.25, n), 0, 1)
    return y, s


def test_equal_versions_false_positive_rate_is_near_alpha() -> None:
    """Over 400 seeds of two equal versions, p_worse < 0.05 in about 5 % of windows,
    for a rate (z-test) and for bootstrap-tested figures alike."""
    alpha, seeds = 0.05, 400
    hits = {"accuracy": 0, "roc_auc": 0, "f1": 0, "log_loss": 0}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        a = binary_performance(*_window(rng, 400, 0.0), n_boot=200, seed=seed)
        b = binary_performance(*_window(rng, 400, 0.0), n_boot=200, seed=seed + 10_000)
        by = {x.metric: x for x in compare(a, b)}
        for m in hits:
            hits[m] += by[m].p_worse < alpha
    rates = {m: h / seeds for m, h in hits.items()}
    print(rates)
    # binomial sd at 5 % over 400 seeds is 1.1 %: accept 5 % +- 3 sd
    assert all(0.017 <= r <= 0.083 for r in rates.values()), rates


def test_a_worse_canary_is_detected() -> None:
    rng = np.random.default_rng(1)
    stable = binary_performance(*_window(rng, 2000, 0.0), seed=1)
    canary = binary_performance(*_window(rng, 2000, 0.25), seed=2)
    by = {c.metric: c for c in compare(canary, stable)}
    assert by["accuracy"].delta < -0.05 and by["accuracy"].p_worse < 0.01
    assert by["accuracy"].test == "two_proportion_z" and by["roc_auc"].test == "bootstrap_z"
    assert by["roc_auc"].p_worse < 0.01
    # the other way round it is better, not worse
    back = {c.metric: c for c in compare(stable, canary)}
    assert back["accuracy"].p_worse > 0.99
    assert by["log_loss"].delta > 0 and by["log_loss"].p_worse < 0.01  # lower is better


# --------------------------------------------------------------------------- estimation


def test_isotonic_calibrator_equals_sklearn() -> None:
    rng = np.random.default_rng(3)
    s = rng.random(2000).round(2)  # many ties
    y = rng.random(2000) < s**2
    cal = fit_calibrator(s, y)
    iso = IsotonicRegression(out_of_bounds="clip").fit(s, y.astype(float))
    grid = np.linspace(-0.5, 1.5, 301)
    assert np.allclose(cal(grid), iso.predict(grid), rtol=0, atol=1e-12)


def test_estimate_follows_the_realised_figures_under_covariate_shift() -> None:
    rng = np.random.default_rng(6)

    def draw(n: int, mu: float) -> tuple[np.ndarray, np.ndarray]:
        z = rng.normal(mu, 1.6, n)
        p = 1 / (1 + np.exp(-z))
        return p, rng.random(n) < p  # calibrated scores

    ref_s, ref_y = draw(20_000, -2.0)
    cal = fit_calibrator(ref_s, ref_y)
    for mu in (-2.0, -0.2):
        s, y = draw(20_000, mu)
        est = estimate_binary(cal, s, threshold=0.5)
        real = binary_performance(y, s, threshold=0.5, n_boot=0)
        assert est.accuracy == pytest.approx(real.value("accuracy"), abs=0.015), mu
        assert est.roc_auc == pytest.approx(real.value("roc_auc"), abs=0.015), mu
        assert est.f1 == pytest.approx(real.value("f1"), abs=0.03), mu
    # the shift towards the boundary costs accuracy, and the estimate says so
    low = estimate_binary(cal, draw(5000, -0.2)[0])
    high = estimate_binary(cal, draw(5000, -2.0)[0])
    assert high.accuracy - low.accuracy > 0.05


def test_a_certain_difference_without_bootstrap_spread_is_worse() -> None:
    """Figures that are the same in every bootstrap replicate (a perfect baseline's F1 and
    ROC AUC, a canary that inverts every row; errors all of one size) have standard error
    0: the z-test's z was then 0, so a canary with ROC AUC 0 against 1, or MAE 50 against
    1, was "not worse" (p_worse 0.5). The difference is certain: p_worse 0."""
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.4
    perfect = binary_performance(y, np.where(y, 0.9, 0.1), n_boot=100, seed=1)
    inverted = binary_performance(y, np.where(y, 0.1, 0.9), n_boot=100, seed=2)
    by = {c.metric: c for c in compare(inverted, perfect)}
    assert perfect.figures["roc_auc"].se == 0 and inverted.figures["roc_auc"].se == 0
    for m in ("f1", "roc_auc"):
        assert by[m].delta == -1.0 and by[m].p_worse == 0.0 and by[m].p_value == 0.0, by[m]
    back = {c.metric: c for c in compare(perfect, inverted)}
    assert back["roc_auc"].p_worse == 1.0
    t = np.arange(300, dtype=np.float64)
    base = regression_performance(t, t + 1.0, n_boot=100, seed=1)
    cand = regression_performance(t, t + 50.0, n_boot=100, seed=2)
    mae = {c.metric: c for c in compare(cand, base)}["mae"]
    assert mae.delta == 49.0 and mae.p_worse == 0.0
    same = {c.metric: c for c in compare(perfect, perfect)}["roc_auc"]
    assert same.delta == 0.0 and same.p_worse == 0.5 and same.p_value == 1.0
