from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.detectors.drift.helpers import score

# the merge tags each value's origin in its last mantissa bit (see drift.distance):
# distances agree with scipy to a few ulp, not always bit for bit
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
