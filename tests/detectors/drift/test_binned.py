from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial import distance

from tests.detectors.drift.helpers import score

REF = np.array(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
CUR = np.array(["a"] * 40 + ["b"] * 40 + ["c"] * 20, dtype=object)


def test_psi_hand_value():
    expected = (0.5 - 0.4) * math.log(0.5 / 0.4) + (0.3 - 0.4) * math.log(0.3 / 0.4)
    assert score("psi", REF, CUR, "categorical") == pytest.approx(expected, abs=1e-15)


def test_psi_substitutes_empty_bins():
    # reference lacks "c": its share 0 -> 0.0001 (the smallest non-zero share 0.5 > 1e-4)
    ref = np.array(["a", "b"] * 50, dtype=object)
    cur = np.array(["a"] * 40 + ["b"] * 40 + ["c"] * 20, dtype=object)
    r = np.array([0.5, 0.5, 0.0001])
    c = np.array([0.4, 0.4, 0.2])
    assert score("psi", ref, cur, "categorical") == pytest.approx(
        float(np.sum((r - c) * np.log(r / c))), abs=1e-15
    )


def test_kl_hand_value():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.4, 0.4, 0.2])
    assert score("kl_div", REF, CUR, "categorical") == pytest.approx(
        float(np.sum(p * np.log(p / q))), abs=1e-15
    )


def test_jensenshannon_equals_scipy():
    assert score("jensenshannon", REF, CUR, "categorical") == pytest.approx(
        distance.jensenshannon([0.5, 0.3, 0.2], [0.4, 0.4, 0.2]), abs=1e-15
    )


def test_hellinger_hand_value():
    bc = math.sqrt(0.5 * 0.4) + math.sqrt(0.3 * 0.4) + math.sqrt(0.2 * 0.2)
    assert score("hellinger", REF, CUR, "categorical") == pytest.approx(
        math.sqrt(1 - bc), abs=1e-15
    )


def test_identical_distributions_score_zero():
    for m in ("psi", "kl_div", "jensenshannon", "hellinger"):
        assert score(m, REF, REF, "categorical") == 0.0


def test_numerical_histogram_uses_combined_sturges_bins():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(size=2000), rng.normal(0.5, size=500)
    combined = np.concatenate([ref, cur])
    edges = np.histogram_bin_edges(combined, bins="sturges")
    p = np.histogram(ref, edges)[0] / len(ref)
    q = np.histogram(cur, edges)[0] / len(cur)
    assert score("jensenshannon", ref, cur) == distance.jensenshannon(p, q)


class TestFixedBins:
    def test_out_of_range_values_land_in_their_own_bins(self):
        ref = np.linspace(0, 1, 1000)
        cur_in = np.linspace(0.2, 0.8, 500)
        cur_out = np.linspace(2.0, 3.0, 500)
        assert (
            score("psi", ref, cur_out, bins="fixed") > score("psi", ref, cur_in, bins="fixed") > 0
        )
        # disjoint supports: the natural-log JS distance reaches its maximum sqrt(ln 2)
        assert score("jensenshannon", ref, cur_out, bins="fixed") == pytest.approx(
            math.sqrt(math.log(2)), abs=1e-12
        )

    def test_bins_do_not_move_with_the_window(self):
        rng = np.random.default_rng(1)
        ref = rng.normal(size=3000)
        a = rng.normal(size=400)
        # one far outlier stretches Evidently's combined bins until the bulk shares
        # one bin (PSI drops); the fixed bins keep their resolution and put the
        # outlier in the above-range bin (PSI rises)
        b = np.append(a, 1e6)
        fixed_a, fixed_b = score("psi", ref, a, bins="fixed"), score("psi", ref, b, bins="fixed")
        ev_a, ev_b = score("psi", ref, a), score("psi", ref, b)
        assert fixed_b > fixed_a
        assert ev_b < ev_a / 2

    def test_unseen_category_goes_to_other_bucket(self):
        ref = np.array(["a", "b"] * 50, dtype=object)
        same = np.array(["a", "b"] * 10, dtype=object)
        new = np.array(["a", "b", "zz", "yy"] * 10, dtype=object)
        assert score("psi", ref, same, "categorical", bins="fixed") == 0.0
        assert score("psi", ref, new, "categorical", bins="fixed") > 0.5
