from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.detectors.drift.helpers import score


def test_wasserstein_normed_hand_value():
    # W1([0, 1], [1, 2]) = 1; population std of [0, 1] = 0.5
    assert score("wasserstein", [0.0, 1.0], [1.0, 2.0]) == 2.0


def test_wasserstein_std_floor():
    # constant reference: std 0 -> divided by 0.001
    assert score("wasserstein", [3.0, 3.0], [4.0]) == pytest.approx(1000.0, rel=1e-15)


@pytest.mark.parametrize("n", [5, 300, 5000])
def test_wasserstein_and_energy_equal_scipy(n):
    rng = np.random.default_rng(n)
    ref, cur = rng.normal(size=n), np.round(rng.normal(0.3, size=n // 2 + 1), 1)
    assert score("wasserstein", ref, cur) == stats.wasserstein_distance(ref, cur) / max(
        np.std(ref), 0.001
    )
    assert score("ed", ref, cur) == stats.energy_distance(ref, cur)
