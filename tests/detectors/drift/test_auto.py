"""``auto`` follows Evidently 0.7's ``_get_default_stattest`` table exactly."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import ColumnSpec, auto_test_name, column_drift, prepare_reference
from detectors._columns import CurrentColumn


def _name(kind: str, ref, cur) -> str:
    prepared = prepare_reference({"x": ref}, [ColumnSpec("x", kind)])
    return auto_test_name(prepared["x"], CurrentColumn(kind, cur))


@pytest.mark.parametrize(
    ("n_ref", "n_values", "expected"),
    [
        (1000, 2, "z"),
        (1000, 3, "chisquare"),
        (1000, 5, "chisquare"),
        (1000, 6, "ks"),
        (1001, 2, "jensenshannon"),
        (1001, 5, "jensenshannon"),
        (1001, 6, "wasserstein"),
    ],
)
def test_numerical_table(n_ref, n_values, expected):
    ref = np.arange(n_ref, dtype=float) % n_values
    assert _name("numerical", ref, np.array([0.0, 1.0])) == expected


@pytest.mark.parametrize(
    ("n_ref", "n_values", "expected"),
    [(1000, 1, "z"), (1000, 2, "z"), (1000, 3, "chisquare"), (1001, 2, "jensenshannon")],
)
def test_categorical_table(n_ref, n_values, expected):
    ref = np.array([f"c{i % n_values}" for i in range(n_ref)], dtype=object)
    assert _name("categorical", ref, np.array(["c0"], dtype=object)) == expected


def test_distinct_values_count_reference_and_current_together():
    ref = np.array([0.0, 1.0] * 100)
    assert _name("numerical", ref, np.array([0.0, 1.0])) == "z"
    assert _name("numerical", ref, np.array([2.0])) == "chisquare"
    assert _name("numerical", ref, np.array([2.0, 3.0, 4.0, 5.0])) == "ks"


def test_reference_size_counts_non_missing_values_only():
    ref = np.concatenate([np.arange(1000.0), [np.nan, np.inf, -np.inf]])  # 1003 rows, 1000 finite
    assert _name("numerical", ref, np.arange(10.0)) == "ks"
    ref2 = np.concatenate([np.arange(1001.0), [np.nan]])
    assert _name("numerical", ref2, np.arange(10.0)) == "wasserstein"


def test_auto_threshold_follows_the_chosen_test():
    ref = np.random.default_rng(0).normal(size=2000)
    prepared = prepare_reference({"x": ref}, [ColumnSpec("x", "numerical")])
    assert column_drift(prepared, "x", ref[:100]).threshold == 0.1
    prepared = prepare_reference({"x": ref[:500]}, [ColumnSpec("x", "numerical")])
    assert column_drift(prepared, "x", ref[:100]).threshold == 0.05
    prepared = prepare_reference({"x": ref[:500]}, [ColumnSpec("x", "numerical", threshold=0.2)])
    assert column_drift(prepared, "x", ref[:100]).threshold == 0.2
