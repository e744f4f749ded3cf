from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import ColumnSpec, DataQuality, data_quality, prepare_reference
from detectors._columns import CurrentColumn


@pytest.fixture(scope="module")
def prepared():
    ref = {
        "age": np.array([18.0, 30.0, 45.0, 60.0, np.nan]),
        "plan": np.array(["free", "pro", "pro", None, "team"], dtype=object),
    }
    return prepare_reference(
        ref, [ColumnSpec("age", "numerical"), ColumnSpec("plan", "categorical")]
    )


def test_exact_figures(prepared):
    cur = {
        "age": np.array([17.0, 20.0, np.nan, 61.0, np.inf, 60.0, 18.0, np.nan]),
        "plan": np.array(["pro", "vip", None, "vip", "ent", np.nan, "free", "pro"], dtype=object),
    }
    q = data_quality(prepared, cur, type_violations={"age": 3})
    assert isinstance(q, DataQuality) and q.row_count == 8
    age, plan = q["age"], q["plan"]
    assert age.missing_share == 2 / 8
    assert age.out_of_range_share == 3 / 6  # 17, 61, inf outside [18, 60]
    assert age.new_category_share is None and age.type_violations == 3
    assert plan.missing_share == 2 / 8
    assert plan.new_category_share == 3 / 6
    assert plan.new_categories == ("vip", "ent")
    assert plan.out_of_range_share is None and plan.type_violations == 0


def test_absent_column_is_all_missing(prepared):
    q = data_quality(prepared, {"age": np.array([20.0, 21.0])})
    assert q["plan"].missing_share == 1.0 and math.isnan(q["plan"].new_category_share)


def test_order_of_columns_follows_specs(prepared):
    q = data_quality(prepared, {"plan": np.array(["pro"], dtype=object), "age": np.array([20.0])})
    assert [c.column for c in q.columns] == ["age", "plan"]


@pytest.mark.parametrize("sort_first", [False, True])
@pytest.mark.parametrize(
    "values",
    [
        [17.0, 20.0, np.nan, 61.0, np.inf, 60.0, 18.0, np.nan, -np.inf],  # NaN missing, ±inf out of range
        [20.0, 18.0, 60.0, 30.0],  # every value finite and in range
        [np.nan, np.nan],  # all missing
        [np.inf, -np.inf, 5.0],  # no NaN, only infinities missing for drift
        list(np.linspace(0.0, 100.0, 5000)),  # a big window (no 2-d batch)
    ],
)
def test_a_cleaned_column_gives_the_quality_of_its_raw_values(prepared, values, sort_first):
    """A numerical column passed as a CurrentColumn (the figures clean it once for quality
    and drift) counts exactly as its raw values do, its sorted values read or not."""
    raw = np.array(values)
    cur = CurrentColumn("numerical", raw)
    if sort_first:
        _ = cur.sorted_values
    ours, theirs = data_quality(prepared, {"age": cur})["age"], data_quality(prepared, {"age": raw})["age"]
    assert (ours.rows, ours.missing_count) == (theirs.rows, theirs.missing_count)
    for a, b in ((ours.missing_share, theirs.missing_share), (ours.out_of_range_share, theirs.out_of_range_share)):
        assert a == b or (math.isnan(a) and math.isnan(b))
