from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tests.detectors.drift.helpers import score


@pytest.mark.parametrize(("n1", "n2"), [(10, 10), (37, 120), (800, 12000), (11000, 300)])
def test_ks_equals_scipy_bit_for_bit(n1, n2):
    rng = np.random.default_rng(n1 + n2)
    ref, cur = np.round(rng.normal(size=n1), 2), np.round(rng.normal(0.1, size=n2), 2)  # with ties
    assert score("ks", ref, cur) == stats.ks_2samp(ref, cur).pvalue


def test_ks_hand_values():
    # disjoint samples of 3: D = 1, exact p = 2 / C(6,3) = 0.1
    assert score("ks", [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1, abs=1e-15)
    assert score("ks", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0


def test_cramer_von_mises_equals_scipy():
    rng = np.random.default_rng(1)
    for n1, n2 in ((8, 9), (50, 70)):
        ref, cur = rng.normal(size=n1), rng.normal(0.4, size=n2)
        assert score("cramer_von_mises", ref, cur) == pytest.approx(
            stats.cramervonmises_2samp(ref, cur).pvalue, rel=1e-12, abs=1e-15
        )


def test_anderson_equals_scipy():
    rng = np.random.default_rng(2)
    ref, cur = rng.normal(size=200), rng.normal(0.2, size=150)
    assert score("anderson", ref, cur) == stats.anderson_ksamp([ref, cur])[2]
