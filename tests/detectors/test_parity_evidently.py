"""Parity with Evidently 0.7 itself: every score within 1e-9 and the same verdict.

Per-column cases go through Evidently's per-column code path (the one
``ValueDrift`` in ``DataDriftPreset`` uses); whole datasets go through
``Report([DataDriftPreset()])``. Reference sizes straddle the 1000-row switch
of ``auto``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors import (
    ColumnSpec,
    column_drift,
    dataset_drift,
    get_test,
    list_tests,
    prepare_reference,
)
from tests.detectors import datagen
from tests.detectors.evidently_oracle import evidently_column, evidently_report

pytestmark = pytest.mark.evidently

TOL = 1e-9
REF_SIZES = (8, 60, 999, 1000, 1001, 2500)
CUR_SIZES = (1, 5, 40, 700, 3000)
# tests whose Evidently implementation works on general input
NUM_TESTS = (
    "ks",
    "wasserstein",
    "psi",
    "jensenshannon",
    "kl_div",
    "hellinger",
    "ed",
    "anderson",
    "cramer_von_mises",
    "mannw",
    "t_test",
    "es",
    "chisquare",
    "z",
)
CAT_TESTS = ("chisquare", "z", "psi", "jensenshannon", "kl_div", "hellinger")


def _assert_same(ours, theirs, label: str) -> None:
    name, score, drifted = theirs
    assert ours.test == name, label
    if math.isnan(score):
        assert math.isnan(ours.score), label
    else:
        assert abs(ours.score - score) <= TOL, f"{label}: ours {ours.score!r} evidently {score!r}"
    assert ours.drifted == drifted, label


def _check(
    kind: str, ref: np.ndarray, cur: np.ndarray, method: str | None, threshold: float | None = None
):
    try:
        theirs = evidently_column(ref, cur, kind, method, threshold)
    except Exception:  # Evidently raises on this input; ours must not (edge-case tests cover it)
        theirs = None
    prepared = prepare_reference({"x": ref}, [ColumnSpec("x", kind, method or "auto", threshold)])
    ours = column_drift(prepared, "x", cur)
    if theirs is not None:
        _assert_same(ours, theirs, f"{kind} {method} n_ref={len(ref)} n_cur={len(cur)}")
    return ours, theirs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    style=st.sampled_from(datagen.NUM_STYLES),
    n_ref=st.sampled_from(REF_SIZES),
    n_cur=st.sampled_from(CUR_SIZES),
    missing=st.sampled_from((0.0, 0.1)),
)
def test_auto_numerical_matches_evidently(seed, style, n_ref, n_cur, missing):
    rng = np.random.default_rng(seed)
    ref = datagen.numerical(rng, style, n_ref, missing=missing)
    cur = datagen.numerical(rng, style, n_cur, current=True, missing=missing)
    _check("numerical", ref, cur, None)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    style=st.sampled_from(datagen.CAT_STYLES),
    n_ref=st.sampled_from(REF_SIZES),
    n_cur=st.sampled_from(CUR_SIZES),
    missing=st.sampled_from((0.0, 0.1)),
)
def test_auto_categorical_matches_evidently(seed, style, n_ref, n_cur, missing):
    rng = np.random.default_rng(seed)
    ref = datagen.categorical(rng, style, n_ref, missing=missing)
    cur = datagen.categorical(rng, style, n_cur, current=True, missing=missing)
    _check("categorical", ref, cur, None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(NUM_TESTS),
    style=st.sampled_from(("normal", "shifted", "rounded", "heavy_tail", "discrete3")),
    n_ref=st.sampled_from((30, 999, 1001, 2500)),
    n_cur=st.sampled_from((25, 400, 1500)),
)
def test_every_numerical_test_matches_evidently(seed, method, style, n_ref, n_cur):
    rng = np.random.default_rng(seed)
    ref = datagen.numerical(rng, style, n_ref, missing=0.05)
    cur = datagen.numerical(rng, style, n_cur, current=True, missing=0.05)
    _check("numerical", ref, cur, method)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    method=st.sampled_from(CAT_TESTS),
    style=st.sampled_from(("few", "binary", "many", "unseen")),
    n_ref=st.sampled_from((30, 999, 1001, 2500)),
    n_cur=st.sampled_from((5, 400, 1500)),
)
def test_every_categorical_test_matches_evidently(seed, method, style, n_ref, n_cur):
    rng = np.random.default_rng(seed)
    ref = datagen.categorical(rng, style, n_ref, missing=0.05)
    cur = datagen.categorical(rng, style, n_cur, current=True, missing=0.05)
    _check("categorical", ref, cur, method)


@pytest.mark.parametrize("method", ["g_test", "fisher_exact"])
@pytest.mark.parametrize("seed", range(4))
def test_equal_size_binary_tests_match_evidently(method, seed):
    # Evidently's G-test and Fisher test only work when both sides have the same size
    rng = np.random.default_rng(seed)
    ref = datagen.categorical(rng, "binary", 300)
    cur = datagen.categorical(rng, "binary", 300, current=True)
    ours, theirs = _check("categorical", ref, cur, method)
    assert theirs is not None


@pytest.mark.parametrize("threshold", [0.01, 0.2, 0.5])
@pytest.mark.parametrize("n_ref", [500, 1500])
def test_custom_thresholds_match_evidently(threshold, n_ref):
    rng = np.random.default_rng(n_ref)
    ref = datagen.numerical(rng, "normal", n_ref)
    cur = datagen.numerical(rng, "shifted", 400, current=True)
    ours, theirs = _check("numerical", ref, cur, None, threshold)
    assert theirs is not None and ours.threshold == threshold


def test_threshold_equal_to_score_uses_evidentlys_comparison():
    # KS is p <= t, Wasserstein d >= t: set the threshold to the score itself
    rng = np.random.default_rng(3)
    for n_ref, name in ((400, "ks"), (1500, "wasserstein")):
        ref = datagen.numerical(rng, "normal", n_ref)
        cur = datagen.numerical(rng, "shifted", 300, current=True)
        _, score, _ = evidently_column(ref, cur, "numerical")
        ours, theirs = _check("numerical", ref, cur, None, score)
        assert ours.test == name and ours.drifted is True and theirs[2] is True


def test_chisquare_equal_threshold_is_not_drift():
    # identical shares give p == 1.0 exactly; chi-square's p < t is then False at t = 1
    rng = np.random.default_rng(4)
    ref = datagen.categorical(rng, "few", 300)
    cur = np.concatenate([ref, ref])
    ours, theirs = _check("categorical", ref, cur, None, 1.0)
    assert ours.score == 1.0 and theirs[1] == 1.0
    assert ours.drifted is False and theirs[2] is False


@pytest.mark.parametrize(
    "cur",
    [
        np.array([0.5]),
        np.array([1.0, 1.0, 1.0]),
        np.array([np.inf, 2.0, np.nan, 3.0]),
        np.array([5.0, 5.0, 6.0, 6.0, 7.0]),
    ],
)
@pytest.mark.parametrize("n_ref", [50, 1200])
def test_tiny_windows_match_evidently(cur, n_ref):
    rng = np.random.default_rng(n_ref)
    ref = datagen.numerical(rng, "rounded", n_ref)
    _, theirs = _check("numerical", ref, cur, None)
    assert theirs is not None


@pytest.mark.parametrize("n_ref", [400, 4000])
def test_report_datadriftpreset_matches(n_ref):
    """The whole preset: 6 numerical and 3 categorical columns, scores and share."""
    rng = np.random.default_rng(n_ref)
    kinds: dict[str, str] = {}
    ref: dict[str, np.ndarray] = {}
    cur: dict[str, np.ndarray] = {}
    for i, style in enumerate(
        ("normal", "shifted", "discrete3", "binary", "rounded", "heavy_tail")
    ):
        name = f"n{i}"
        kinds[name] = "numerical"
        ref[name] = datagen.numerical(rng, style, n_ref, missing=0.02)
        cur[name] = datagen.numerical(rng, style, 800, current=True, missing=0.02)
    for i, style in enumerate(("few", "binary", "unseen")):
        name = f"c{i}"
        kinds[name] = "categorical"
        ref[name] = datagen.categorical(rng, style, n_ref, missing=0.02)
        cur[name] = datagen.categorical(rng, style, 800, current=True, missing=0.02)
    scores, count, share = evidently_report(ref, cur, kinds)
    prepared = prepare_reference(ref, [ColumnSpec(k, v) for k, v in kinds.items()])
    result = dataset_drift(prepared, cur)
    assert {c.column for c in result.columns} == set(scores)
    for c in result.columns:
        assert abs(c.score - scores[c.column]) <= TOL, c
    assert result.drifted_count == count
    assert result.share == share


def test_every_evidently_named_test_exists_in_evidently():
    from evidently.legacy.calculations.stattests.registry import _registered_stat_tests

    for name in list_tests():
        ev = get_test(name).evidently_name
        if ev is not None:
            st_ = next(iter(_registered_stat_tests[ev].values()))
            assert math.isclose(st_.default_threshold, get_test(name).default_threshold), name


@pytest.mark.parametrize("seed", range(3))
def test_tvd_permutation_pvalue_matches_evidently(seed):
    # same seeded permutations; Evidently's float comparison of equal distances
    # (summed in set order) can count a few splits differently: allow 5/1000
    rng = np.random.default_rng(seed)
    ref = datagen.categorical(rng, "few", 120, missing=0.05)
    cur = datagen.categorical(rng, "few", 80, current=True, missing=0.05)
    name, score, drifted = evidently_column(ref, cur, "categorical", "TVD")
    prepared = prepare_reference({"x": ref}, [ColumnSpec("x", "categorical", "TVD")])
    ours = column_drift(prepared, "x", cur)
    assert ours.test == name and abs(ours.score - score) <= 0.005
