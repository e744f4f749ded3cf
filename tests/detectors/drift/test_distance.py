from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.detectors.drift.helpers import score

# distances are summed in another order than scipy's: equal to a few ulp
REL = 1e-14


def test_wasserstein_normed_hand_value():
    # W1([0, 1], [1, 2]) = 1; population std of [0, 1] = 0.5
    assert score("wasserstein", [0.0, 1.0], [1.0, 2.0]) == pytest.approx(2.0, rel=REL)
    assert score("wasserstein", [0.0, 1.0], [0.0, 1.0]) == 0.0


def test_wasserstein_std_floor():
    # constant reference: std 0 -> divided by 0.001
    assert score("wasserstein", [3.0, 3.0], [4.0]) == pytest.approx(1000.0, rel=1e-15)


@pytest.mark.parametrize("n", [5, 300, 5000])
def test_wasserstein_and_energy_equal_scipy(n):
    rng = np.random.default_rng(n)
    ref, cur = rng.normal(size=n), np.round(rng.normal(0.3, size=n // 2 + 1), 1)
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert score("wasserstein", ref, cur) == pytest.approx(expected, rel=REL)
    assert score("ed", ref, cur) == pytest.approx(stats.energy_distance(ref, cur), rel=REL)


def test_integer_valued_data_is_exact():
    rng = np.random.default_rng(3)
    ref, cur = rng.integers(-50, 50, 4000).astype(float), rng.integers(-40, 60, 700).astype(float)
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert score("wasserstein", ref, cur) == pytest.approx(expected, rel=1e-15)
    assert score("wasserstein", ref, ref[:1000]) == pytest.approx(
        stats.wasserstein_distance(ref, ref[:1000]) / np.std(ref), rel=1e-15
    )


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e9])
def test_tagging_keeps_ties_and_signs_exact_enough(scale):
    rng = np.random.default_rng(7)
    ref = np.round(rng.normal(size=3000), 1) * scale  # heavy ties, both signs, zeros
    cur = np.round(rng.normal(0.05, size=900), 1) * scale
    cur[:5] = [0.0, -0.0, ref[0], ref[1], -ref[2]]
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert score("wasserstein", ref, cur) == pytest.approx(expected, rel=REL)
    assert score("ed", ref, cur) == pytest.approx(stats.energy_distance(ref, cur), rel=REL)
    assert score("wasserstein", ref, ref) == 0.0


@pytest.mark.parametrize(("n1", "n2"), [(700, 700), (700, 300), (1000, 999), (64, 1500), (9, 6)])
def test_quantile_form_agrees_with_scipy_for_any_sizes(n1, n2):
    rng = np.random.default_rng(n1 * n2)
    ref = np.round(rng.normal(size=n1), 2)
    prepared_scores = []
    for _ in range(3):
        cur = np.round(rng.normal(0.2, size=n2), 2)
        expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
        got = score("wasserstein", ref, cur)
        assert got == pytest.approx(expected, rel=REL)
        prepared_scores.append(got)


@pytest.mark.parametrize("method", ["wasserstein", "ed"])
def test_values_far_from_zero_with_tiny_spread_keep_precision(method):
    rng = np.random.default_rng(9)
    ref = 1e6 + rng.normal(scale=1e-3, size=2511)
    cur = 1e6 + rng.normal(1e-4, 1e-3, size=1018)
    expected = (
        stats.wasserstein_distance(ref, cur) / np.std(ref)
        if method == "wasserstein"
        else stats.energy_distance(ref, cur)
    )
    assert score(method, ref, cur) == pytest.approx(expected, rel=1e-11)
