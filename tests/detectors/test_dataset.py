"""dataset_drift / column_drift: aggregation, Benjamini–Hochberg, interface."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import (
    Calibration,
    ColumnDrift,
    ColumnSpec,
    DatasetDrift,
    benjamini_hochberg,
    calibrate,
    calibrated_dataset_level,
    column_drift,
    dataset_drift,
    prepare_reference,
)


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(0)
    ref = {f"n{i}": rng.normal(size=2000) for i in range(4)}
    ref["c"] = rng.choice(np.array(list("abc"), dtype=object), 2000)
    specs = [ColumnSpec(f"n{i}", "numerical") for i in range(4)] + [ColumnSpec("c", "categorical")]
    return prepare_reference(ref, specs)


def _window(shift_cols, n=500, seed=1):
    rng = np.random.default_rng(seed)
    cur = {f"n{i}": rng.normal(1.0 if f"n{i}" in shift_cols else 0.0, size=n) for i in range(4)}
    cur["c"] = rng.choice(np.array(list("abc"), dtype=object), n)
    return cur


def test_results_are_frozen_dataclasses(prepared):
    res = dataset_drift(prepared, _window(()))
    assert isinstance(res, DatasetDrift) and isinstance(res.columns[0], ColumnDrift)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.share = 1.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.columns[0].score = 0.0  # type: ignore[misc]


def test_prepared_reference_shape(prepared):
    assert prepared.rows == 2000
    assert [s.name for s in prepared.specs] == ["n0", "n1", "n2", "n3", "c"]
    assert prepared.columns["n0"].n == 2000


@pytest.mark.parametrize(
    ("shifted", "count", "drift"),
    [((), 0, False), (("n0", "n1"), 2, False), (("n0", "n1", "n2"), 3, True)],
)
def test_share_and_verdict(prepared, shifted, count, drift):
    res = dataset_drift(prepared, _window(shifted))
    assert res.drifted_count == count and res.n_columns == 5
    assert res.share == count / 5 and res.dataset_drifted is drift


def test_share_threshold_is_inclusive(prepared):
    res = dataset_drift(prepared, _window(("n0", "n1")), share_threshold=0.4)
    assert res.share == 0.4 and res.dataset_drifted is True


def test_columns_subset(prepared):
    res = dataset_drift(prepared, _window(("n0",)), columns=["n0", "c"])
    assert (
        [c.column for c in res.columns] == ["n0", "c"] and res.share == 0.5 and res.dataset_drifted
    )


def test_column_drift_equals_dataset_entry(prepared):
    cur = _window(("n2",))
    assert column_drift(prepared, "n2", cur["n2"]) == dataset_drift(prepared, cur)["n2"]


def test_missing_current_column_raises_keyerror(prepared):
    cur = _window(())
    del cur["c"]
    with pytest.raises(KeyError, match="'c'"):
        dataset_drift(prepared, cur)


def test_benjamini_hochberg_exact_values():
    adj = benjamini_hochberg([0.01, 0.04, 0.03, np.nan, 0.2])
    # m = 4 defined: sorted 0.01,0.03,0.04,0.2 -> 0.04, 0.06->0.0533.., 0.0533.., 0.2
    assert adj[0] == pytest.approx(0.04)
    assert adj[1] == pytest.approx(0.04 * 4 / 3)
    assert adj[2] == pytest.approx(0.04 * 4 / 3)
    assert np.isnan(adj[3]) and adj[4] == pytest.approx(0.2)


def test_bh_only_adjusts_p_value_tests():
    rng = np.random.default_rng(2)
    ref = {f"x{i}": rng.normal(size=500) for i in range(5)}
    specs = [ColumnSpec(f"x{i}", "numerical", "ks") for i in range(4)] + [
        ColumnSpec("x4", "numerical", "wasserstein")
    ]
    prepared = prepare_reference(ref, specs)
    cur = {f"x{i}": rng.normal(0.12 * i, size=400) for i in range(5)}
    raw = dataset_drift(prepared, cur)
    bh = dataset_drift(prepared, cur, multiple_testing="bh")
    expected = benjamini_hochberg([c.score for c in raw.columns[:4]])
    for c_raw, c_bh, e in zip(raw.columns[:4], bh.columns[:4], expected, strict=True):
        assert c_bh.score == e and c_bh.raw_score == c_raw.score
        assert c_bh.score >= c_raw.score
        assert c_bh.drifted == (c_bh.score <= 0.05)
    assert bh.columns[4] == raw.columns[4]
    assert bh.drifted_count <= raw.drifted_count
    with pytest.raises(ValueError):
        dataset_drift(prepared, cur, multiple_testing="bonferroni")  # type: ignore[arg-type]


def test_identical_distributions_rarely_drift():
    # 40 windows drawn from the reference's own distribution: the dataset verdict
    # (share of 3 columns >= 0.5) may fire by chance, but rarely
    rng = np.random.default_rng(11)
    ref = {"a": rng.normal(size=3000), "b": rng.exponential(size=3000), "c": rng.uniform(size=3000)}
    prepared = prepare_reference(ref, [ColumnSpec(k, "numerical") for k in ref])
    alarms = 0
    for _ in range(40):
        cur = {
            "a": rng.normal(size=2000),
            "b": rng.exponential(size=2000),
            "c": rng.uniform(size=2000),
        }
        alarms += dataset_drift(prepared, cur).dataset_drifted
    assert alarms <= 2


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_order_inside_a_window_does_not_matter(seed, n):
    rng = np.random.default_rng(seed)
    ref = {"a": rng.normal(size=700), "c": rng.choice(np.array(list("xyz"), dtype=object), 700)}
    prepared = prepare_reference(
        ref, [ColumnSpec("a", "numerical"), ColumnSpec("c", "categorical")]
    )
    cur = {"a": rng.normal(size=n), "c": rng.choice(np.array(list("xyzw"), dtype=object), n)}
    perm = rng.permutation(n)
    a = dataset_drift(prepared, cur)
    b = dataset_drift(prepared, {k: v[perm] for k, v in cur.items()})
    for x, y in zip(a.columns, b.columns, strict=True):
        assert x.test == y.test and x.drifted == y.drifted
        assert x.score == pytest.approx(y.score, abs=1e-12)


# --------------------------------------------------------------------------- calibrated level


def _calibration(alpha_column: float, alpha: float, rho: float, m: int) -> Calibration:
    from detectors.calibration import _min_drifted

    table = (0,) + tuple(_min_drifted(j, alpha_column, rho, alpha) for j in range(1, m + 1))
    return Calibration(alpha_column, alpha, {}, table, rho, (1000,), 400)


def test_one_column_cannot_reach_an_alpha_below_alpha_column():
    rng = np.random.default_rng(3)
    cal = calibrate({"x": rng.normal(size=4000)}, [ColumnSpec("x", "numerical", "ks")],
                    sizes=[500], alpha_column=0.01, alpha=0.001, resamples=100, splits=5)
    lv = calibrated_dataset_level(cal, 1)
    # the verdict is "the one column drifted": its level is alpha_column, ten times alpha
    assert (lv.min_drifted, lv.asked, lv.reachable) == (1, 0.001, False)
    assert lv.reached == pytest.approx(0.01)
    assert lv.alpha_column_for_asked == pytest.approx(0.001, rel=1e-6)
    assert calibrated_dataset_level(dataclasses.replace(cal, alpha=0.01), 1).reachable


def test_correlated_columns_reach_only_about_alpha_column():
    lv = calibrated_dataset_level(_calibration(0.01, 0.001, 0.9, 5), 5)
    assert lv.min_drifted == 5 and not lv.reachable
    assert 0.005 < lv.reached < 0.01  # nearly one column's level: they drift together
    # the suggested alpha_column brings "all 5 drifted" down to alpha exactly
    from detectors.calibration import beta_binomial_tail

    assert beta_binomial_tail(5, lv.alpha_column_for_asked, 0.9)[5] == pytest.approx(0.001, rel=1e-6)


def test_independent_columns_reach_alpha_with_a_count_below_all():
    lv = calibrated_dataset_level(_calibration(0.01, 0.001, 0.0, 5), 5)
    assert lv.min_drifted == 2 and lv.reachable
    assert lv.reached == pytest.approx(1 - 0.99**5 - 5 * 0.01 * 0.99**4)
    assert np.isnan(lv.alpha_column_for_asked)
    assert calibrated_dataset_level(_calibration(0.01, 0.001, 0.0, 5), 0).reached == 0.0
