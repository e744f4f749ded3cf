"""Column preparation: cleaning, counting, fast factorisation against known categories."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import ColumnSpec, prepare_reference
from detectors._columns import (
    CurrentColumn,
    category_lookup,
    factorize_categories,
    factorize_counted,
    factorize_known,
    lookup_codes,
)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.sampled_from(["a", "b", "c", "new", "zz", None, float("nan"), ""]), max_size=60
    ),
    known=st.lists(st.sampled_from(["a", "b", "c", "q"]), unique=True, max_size=4),
)
def test_factorize_known_counts_like_factorize(values, known):
    arr = np.array(values, dtype=object)
    cats_a, counts_a, codes_a, n_a, miss_a = factorize_categories(arr)
    cats_b, counts_b, codes_b, n_b, miss_b = factorize_known(
        arr, tuple(known), category_lookup(tuple(known))
    )
    assert dict(zip(cats_a, counts_a.tolist(), strict=True)) == dict(
        zip(cats_b, counts_b.tolist(), strict=True)
    )
    assert (n_a, miss_a) == (n_b, miss_b)
    assert [cats_a[c] for c in codes_a] == [cats_b[c] for c in codes_b]  # same values, same order
    assert all(c > 0 for c in counts_b.tolist())
    known_present = [c for c in cats_b if c in known]
    assert known_present == [
        k for k in known if k in known_present
    ]  # known ones first, in known order


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.sampled_from(["a", "b", "c", "new", "zz", None, float("nan"), ""]), max_size=60),
    known=st.lists(st.sampled_from(["a", "b", "c", "q"]), unique=True, min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 60), max_size=4),
)
def test_counts_added_up_piece_by_piece_factorise_like_the_joined_values(values, known, cuts):
    """A window's categorical column from its chunks' counts (a sliding window adds up its
    panes'): the categories, in the same order, with the same counts and missing rows."""
    arr = np.array(values, dtype=object)
    table = category_lookup(tuple(known))
    cats, counts, _, n, missing = factorize_known(arr, tuple(known), table)
    pieces = np.split(arr, sorted(min(c, len(arr)) for c in cuts))
    known_counts = np.zeros(len(known), dtype=np.int64)
    others = []
    for piece in pieces:
        codes = lookup_codes(piece, table)
        known_counts += np.bincount(codes + 1, minlength=len(known) + 1)[1:]
        others.append(piece[codes < 0])
    got = factorize_counted(known_counts, np.concatenate(others), tuple(known))
    assert (got[0], got[1].tolist(), got[2]) == (cats, counts.tolist(), missing)


def test_numerical_cleaning_and_reference_state():
    p = prepare_reference(
        {"x": np.array([3.0, np.nan, 1.0, np.inf, 1.0, -np.inf, 2.0])},
        [ColumnSpec("x", "numerical")],
    )
    col = p["x"]
    assert (col.n_total, col.n_missing, col.n) == (7, 3, 4)
    assert col.sorted_values.tolist() == [1.0, 1.0, 2.0, 3.0]
    assert col.unique_values.tolist() == [1.0, 2.0, 3.0] and col.unique_counts.tolist() == [2, 1, 1]
    assert col.unique_cum_right.tolist() == [2, 3, 4]
    assert (col.min, col.max, col.mean) == (1.0, 3.0, 1.75)
    assert col.std == pytest.approx(np.std([3.0, 1.0, 1.0, 2.0]))


def test_object_numbers_are_coerced():
    cur = CurrentColumn("numerical", np.array(["1.5", None, 2, "x"], dtype=object))
    assert cur.values.tolist() == [1.5, 2.0] and cur.n_missing == 2


def test_prepare_validation():
    with pytest.raises(KeyError):
        prepare_reference({}, [ColumnSpec("x", "numerical")])
    with pytest.raises(ValueError, match="duplicate"):
        prepare_reference(
            {"x": np.zeros(2)}, [ColumnSpec("x", "numerical"), ColumnSpec("x", "numerical")]
        )
    with pytest.raises(ValueError, match="bins"):
        prepare_reference({"x": np.zeros(2)}, [ColumnSpec("x", "numerical")], bins="quantile")  # type: ignore[arg-type]


def test_values_in_order_are_kept_only_for_tests_that_read_them() -> None:
    x = np.array([3.0, 1.0, 2.0])
    specs = [ColumnSpec("a", "numerical"), ColumnSpec("w", "numerical", "wasserstein"),
             ColumnSpec("t", "numerical", "t_test"), ColumnSpec("k", "numerical", "anderson")]
    p = prepare_reference({"a": x, "w": x, "t": x, "k": x}, specs)
    assert p["t"].values.tolist() == p["k"].values.tolist() == [3.0, 1.0, 2.0]
    for name in ("a", "w"):  # auto and Wasserstein read sorted values only
        assert p[name].sorted_values.tolist() == [1.0, 2.0, 3.0] and p[name].std == p["t"].std
        with pytest.raises(ValueError, match="keep_order=True"):
            p[name].values  # noqa: B018
    kept = prepare_reference({"a": x}, specs[:1], keep_order=True)
    assert kept["a"].values.tolist() == [3.0, 1.0, 2.0]
