"""Edge cases are part of the contract: a defined result, never an exception."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from detectors import (
    ColumnSpec,
    column_drift,
    data_quality,
    dataset_drift,
    get_test,
    list_tests,
    prepare_reference,
)

NUM_WINDOWS = {
    "empty": np.array([]),
    "all_nan": np.full(4, np.nan),
    "all_inf": np.array([np.inf, -np.inf]),
    "constant": np.full(10, 2.0),
    "one_row": np.array([0.3]),
    "two_rows": np.array([0.1, 0.9]),
    "five_rows": np.array([0.1, 0.2, 0.2, 0.4, 5.0]),
    "with_inf": np.array([np.inf, -np.inf, 0.5, 1.5, np.nan, 0.1]),
    "ties": np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0]),
}
CAT_WINDOWS = {
    "empty": np.array([], dtype=object),
    "all_missing": np.array([None, np.nan], dtype=object),
    "one_category": np.array(["a"] * 6, dtype=object),
    "unseen": np.array(["zz", "a", "zz"], dtype=object),
    "one_row": np.array(["b"], dtype=object),
}
NUM_REFS = {
    "normal_large": np.random.default_rng(0).normal(size=1500),
    "small": np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    "constant": np.full(40, 2.0),
    "single": np.array([1.0]),
    "all_nan": np.full(5, np.nan),
}
CAT_REFS = {
    "abc": np.array(list("abcabcaab"), dtype=object),
    "one": np.array(["a"] * 20, dtype=object),
    "all_missing": np.array([None] * 3, dtype=object),
}


def _methods(kind):
    return ["auto"] + [n for n in list_tests() if kind in get_test(n).kinds]


@pytest.mark.parametrize("bins", ["evidently", "fixed"])
@pytest.mark.parametrize("method", _methods("numerical"))
def test_numerical_edges_never_raise(method, bins):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray RuntimeWarnings either
        for rname, ref in NUM_REFS.items():
            prepared = prepare_reference(
                {"x": ref}, [ColumnSpec("x", "numerical", method)], bins=bins
            )
            for wname, cur in NUM_WINDOWS.items():
                res = column_drift(prepared, "x", cur)
                assert isinstance(res.drifted, bool), (rname, wname)
                if math.isnan(res.score):
                    assert res.drifted is False


@pytest.mark.parametrize("bins", ["evidently", "fixed"])
@pytest.mark.parametrize("method", _methods("categorical"))
def test_categorical_edges_never_raise(method, bins):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ref in CAT_REFS.values():
            prepared = prepare_reference(
                {"x": ref}, [ColumnSpec("x", "categorical", method)], bins=bins
            )
            for cur in CAT_WINDOWS.values():
                res = column_drift(prepared, "x", cur)
                assert isinstance(res.drifted, bool)


def test_empty_window_is_nan_not_drifted_and_names_the_auto_test():
    prepared = prepare_reference({"x": NUM_REFS["normal_large"]}, [ColumnSpec("x", "numerical")])
    res = column_drift(prepared, "x", np.array([]))
    assert math.isnan(res.score) and res.drifted is False
    assert res.test == "wasserstein" and res.current_n == 0


def test_all_missing_reference_gives_nan():
    prepared = prepare_reference({"x": NUM_REFS["all_nan"]}, [ColumnSpec("x", "numerical")])
    res = column_drift(prepared, "x", np.arange(5.0))
    assert math.isnan(res.score) and res.reference_n == 0


def test_infinities_are_dropped_like_nan():
    prepared = prepare_reference({"x": NUM_REFS["small"]}, [ColumnSpec("x", "numerical", "ks")])
    a = column_drift(prepared, "x", np.array([np.inf, 1.0, 2.0, -np.inf, np.nan]))
    b = column_drift(prepared, "x", np.array([1.0, 2.0]))
    assert a.score == b.score and a.current_n == 2


def test_constant_column_same_value_does_not_drift():
    prepared = prepare_reference({"x": NUM_REFS["constant"]}, [ColumnSpec("x", "numerical")])
    res = column_drift(prepared, "x", np.full(10, 2.0))
    assert (res.test, res.score, res.drifted) == ("z", 1.0, False)


def test_one_category_each_side_different_drifts():
    prepared = prepare_reference({"x": CAT_REFS["one"]}, [ColumnSpec("x", "categorical")])
    res = column_drift(prepared, "x", np.array(["b"] * 20, dtype=object))
    assert res.test == "z" and res.drifted is True


def test_unseen_category_drives_chisquare_to_zero():
    prepared = prepare_reference({"x": CAT_REFS["abc"]}, [ColumnSpec("x", "categorical")])
    res = column_drift(prepared, "x", CAT_WINDOWS["unseen"])
    assert (res.test, res.score, res.drifted) == ("chisquare", 0.0, True)


def test_dataset_with_only_empty_columns():
    specs = [ColumnSpec("x", "numerical"), ColumnSpec("c", "categorical")]
    prepared = prepare_reference({"x": NUM_REFS["small"], "c": CAT_REFS["abc"]}, specs)
    res = dataset_drift(prepared, {"x": np.array([]), "c": np.array([], dtype=object)})
    assert (res.n_columns, res.drifted_count, res.share, res.dataset_drifted) == (0, 0, 0.0, False)
    assert res.undefined_columns == ("x", "c")
    q = data_quality(prepared, {"x": np.array([]), "c": np.array([], dtype=object)})
    assert q.row_count == 0 and math.isnan(q["x"].missing_share)


def test_window_order_does_not_matter():
    rng = np.random.default_rng(5)
    ref, cur = rng.normal(size=1500), np.round(rng.normal(size=300), 1)
    for method in ("ks", "wasserstein", "psi", "jensenshannon", "ed", "hellinger"):
        prepared = prepare_reference({"x": ref}, [ColumnSpec("x", "numerical", method)])
        a = column_drift(prepared, "x", cur).score
        b = column_drift(prepared, "x", rng.permutation(cur)).score
        assert a == pytest.approx(b, abs=1e-12), method
