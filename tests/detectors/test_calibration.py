"""Calibrated thresholds: false-alarm rates on stationary data match the levels asked for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import (
    ColumnSpec,
    calibrate,
    calibrated_dataset_drift,
    calibration_sizes,
    effective_size,
    merge_prepared,
    prepare_reference,
    resolve_specs,
)
from detectors.calibration import beta_binomial_tail

CATS = np.array(list("abcde"), dtype=object)


def block(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    cols = {f"x{i}": rng.normal(shift if i < 3 else 0.0, 1.0, n) for i in range(5)}
    cols["c"] = rng.choice(CATS, n, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    return cols


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(21)
    ref = block(rng, 4000)
    specs = [ColumnSpec(f"x{i}", "numerical") for i in range(5)] + [ColumnSpec("c", "categorical")]
    specs = resolve_specs(prepare_reference(ref, specs))
    prepared = prepare_reference(ref, specs)
    cal = calibrate(ref, specs, sizes=calibration_sizes(400, 4000, 30), alpha_column=0.05, alpha=0.02)
    return prepared, cal


def test_stationary_false_alarms_within_binomial_tolerance(setup) -> None:
    prepared, cal = setup
    rng = np.random.default_rng(5)
    windows, hits, dataset = 600, 0, 0
    for _ in range(windows):
        res = calibrated_dataset_drift(prepared, cal, block(rng, 400))
        hits += sum(c.drifted for c in res.columns)
        dataset += res.dataset_drifted
    trials = windows * 6
    rate = hits / trials
    # binomial sd, inflated 3x in variance for the calibration's own noise and the fixed
    # reference (each column's rate is conditional on its reference sample)
    sd = math.sqrt(3 * 0.05 * 0.95 / trials)
    assert abs(rate - 0.05) <= 3 * sd, rate
    # the dataset verdict: at most alpha (plus binomial tolerance); it may be quieter,
    # since the count of drifted columns is discrete
    assert dataset / windows <= 0.02 + 3 * math.sqrt(0.02 * 0.98 / windows)


def test_a_half_sd_shift_in_half_the_columns_is_found_at_once(setup) -> None:
    prepared, cal = setup
    rng = np.random.default_rng(6)
    found = [calibrated_dataset_drift(prepared, cal, block(rng, 400, shift=0.5)).dataset_drifted
             for _ in range(20)]
    assert all(found)
    assert cal.dataset_threshold(6) == 3  # of 6 columns at alpha_column 0.05, alpha 0.02


def test_thresholds_follow_the_effective_size(setup) -> None:
    _, cal = setup
    m = cal.columns["x0"]
    assert m.test == "wasserstein"
    small, big = m.threshold(effective_size(4000, 100), 0.05), m.threshold(effective_size(4000, 2000), 0.05)
    assert small > 2 * big  # noise of a distance shrinks like 1/sqrt(n_eff)
    assert m.threshold(300, 0.01) > m.threshold(300, 0.05)
    # the calibrated p-value at the threshold is the level
    t = m.threshold(300, 0.01)
    assert m.p_value(300, t) == pytest.approx(0.01, rel=1e-6)


def test_beta_binomial_tail_is_the_binomial_without_dependence() -> None:
    from scipy.stats import binom

    tail = beta_binomial_tail(10, 0.05, 0.0)
    assert tail[3] == pytest.approx(binom.sf(2, 10, 0.05))
    assert beta_binomial_tail(10, 0.05, 0.3)[3] > tail[3]  # dependence fattens the tail


def test_merge_prepared_equals_preparing_the_union() -> None:
    rng = np.random.default_rng(2)
    parts = [block(rng, 300), block(rng, 200), block(rng, 250)]
    specs = [ColumnSpec(f"x{i}", "numerical") for i in range(5)] + [ColumnSpec("c", "categorical")]
    merged = merge_prepared([prepare_reference(p, specs, keep_order=True) for p in parts])
    union = prepare_reference({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, specs)
    for s in specs:
        a, b = merged.columns[s.name], union.columns[s.name]
        assert a.n == b.n
        if s.kind == "numerical":
            assert np.array_equal(a.sorted_values, b.sorted_values) and a.mean == pytest.approx(b.mean)
        else:
            assert dict(zip(a.categories, a.counts.tolist(), strict=True)) == dict(zip(b.categories, b.counts.tolist(), strict=True))
    with pytest.raises(ValueError, match="keep_order=True"):  # the moments need the rows in order
        merge_prepared([prepare_reference(p, specs) for p in parts])


def test_sizes_are_not_capped_at_half_the_reference() -> None:
    # count windows: the size and its neighbours, however they compare with the reference
    assert calibration_sizes(3000, 600, 30) == (1500, 3000, 6000)
    assert calibration_sizes(40, 600, 30) == (30, 40, 80)
    # time windows: a grid up to 4x the reference, or the row cap
    assert calibration_sizes(None, 600, 30) == (30, 120, 480, 1920, 2400)
    assert calibration_sizes(None, 100_000, 30)[-1] == 50_000
    # start-up cost: no size above 50,000 rows, and two sizes to extrapolate from
    assert calibration_sizes(40_000, 100_000, 30) == (20_000, 25_000, 40_000, 50_000)
    assert calibration_sizes(1_000_000, 100_000, 30) == (25_000, 50_000)


def test_draws_at_half_the_reference_are_distinct() -> None:
    # drawing windows of half the reference from one fixed half gave the same rows in every
    # draw of a split: 400 scores, 50 distinct
    import detectors.calibration as C

    seen: list[float] = []
    orig = C.badness

    def spy(score: float, kind):  # type: ignore[no-untyped-def]
        seen.append(score)
        return orig(score, kind)

    rng = np.random.default_rng(0)
    C.badness = spy
    try:
        calibrate({"x": rng.standard_normal(2000)}, [ColumnSpec("x", "numerical", "wasserstein")], sizes=[1000])
    finally:
        C.badness = orig
    assert len(seen) >= 400
    assert len(np.unique(np.round(seen, 12))) == len(seen)


def test_ks_threshold_is_the_level_when_the_window_outnumbers_the_reference() -> None:
    # KS p-values are uniform under no change, so the calibrated threshold at 0.01 is ~0.01
    # whatever the window / reference ratio (before: median 0.018, up to 0.21 at 3000 / 600)
    rng = np.random.default_rng(3)
    cols = [f"x{i}" for i in range(6)]
    ref = {c: rng.standard_normal(600) for c in cols}
    cal = calibrate(ref, [ColumnSpec(c, "numerical", "ks") for c in cols], sizes=calibration_sizes(3000, 600, 30))
    th = np.array([cal.columns[c].threshold(effective_size(600, 3000), 0.01) for c in cols])
    assert 0.006 <= float(np.median(th)) <= 0.015, th
    assert th.min() >= 0.003 and th.max() <= 0.03, th


def test_chisquare_threshold_follows_windows_larger_than_the_reference() -> None:
    # Evidently's chi-square takes the reference shares as exact: with no change its
    # statistic is about (1 + n / n_ref) times a chi-square of (categories - 1) degrees
    from scipy.stats import chi2

    rng = np.random.default_rng(4)
    levels, p = np.array(list("abcd"), dtype=object), [0.5, 0.3, 0.15, 0.05]
    ref = {"c": rng.choice(levels, 800, p=p)}
    cal = calibrate(ref, [ColumnSpec("c", "categorical", "chisquare")], sizes=calibration_sizes(5000, 800, 30))
    got = -math.log(cal.columns["c"].threshold(effective_size(800, 5000), 0.01))
    want = -chi2.logsf((1 + 5000 / 800) * chi2.isf(0.01, 3), 3)  # ~38 (before: ~7, from half the reference)
    assert 0.75 * want <= got <= 1.33 * want, (got, want)


def test_p_value_badness_grows_beyond_the_largest_size_but_never_shrinks() -> None:
    from detectors.calibration import NullModel

    grow = NullModel("c", "chisquare", "p_value", (100.0, 200.0), ((1, 2, 3, 4, 5, 6), (2, 3, 4, 5, 6, 7)), (1.0, 1.0))
    flat = NullModel("c", "ks", "p_value", (100.0, 200.0), ((2, 3, 4, 5, 6, 7), (1, 2, 3, 4, 5, 6)), (1.0, 1.0))
    # one more doubling of n_eff: one more step of growth (was held at the largest size)
    assert grow.badness_threshold(400.0, 0.1) == pytest.approx(8.0)
    assert flat.badness_threshold(400.0, 0.1) == pytest.approx(6.0)
    assert grow.badness_threshold(50.0, 0.1) == pytest.approx(6.0)  # held below the smallest
