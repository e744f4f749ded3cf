from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tests.detectors.drift.helpers import score

REF = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
CUR = np.array(["a"] * 20 + ["b"] * 20 + ["c"] * 10, dtype=object)


def test_chisquare_equals_scipy_with_scaled_expectation():
    expected = stats.chisquare([20, 20, 10], [25.0, 15.0, 10.0]).pvalue
    assert score("chisquare", REF, CUR, "categorical") == pytest.approx(expected, abs=1e-15)


def test_chisquare_unseen_category_is_p_zero():
    cur = np.array(["a", "zz"], dtype=object)
    assert score("chisquare", REF, cur, "categorical") == 0.0


def test_z_hand_value():
    ref = np.array(["x"] * 60 + ["y"] * 40, dtype=object)
    cur = np.array(["x"] * 40 + ["y"] * 60, dtype=object)
    p1, p2, pp = 0.4, 0.6, 0.5
    z = (p1 - p2) / math.sqrt(pp * (1 - pp) * (2 / 100))
    assert score("z", ref, cur, "categorical") == pytest.approx(
        2 * (1 - stats.norm.cdf(abs(z))), abs=1e-15
    )


def test_z_same_single_value_is_one():
    one = np.array(["k"] * 5, dtype=object)
    assert score("z", one, one[:2], "categorical") == 1.0


def test_fisher_equals_scipy_any_sizes():
    ref = np.array(["x"] * 30 + ["y"] * 10, dtype=object)
    cur = np.array(["x"] * 5 + ["y"] * 9, dtype=object)
    assert (
        score("fisher_exact", ref, cur, "categorical") == stats.fisher_exact([[9, 5], [10, 30]])[1]
    )
    assert math.isnan(score("fisher_exact", REF, CUR, "categorical"))  # not binary


def test_g_test_equals_scipy():
    expected = stats.power_divergence(
        [20, 20, 10], [25.0, 15.0, 10.0], lambda_="log-likelihood"
    ).pvalue
    assert score("g_test", REF, CUR, "categorical") == pytest.approx(expected, abs=1e-15)


def test_tvd_permutation_p_value():
    assert score("TVD", REF, REF[::5], "categorical") > 0.1
    far = np.array(["c"] * 40, dtype=object)
    assert score("TVD", REF, far, "categorical") == 0.0
