"""Reading reference columns: the vectorised category path equals the value-by-value one."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from monitor.references.load import _categorical_slow, categorical_values

cell = st.one_of(st.none(), st.just(math.nan), st.text(max_size=5), st.booleans(), st.integers(-5, 5),
                 st.floats(allow_nan=False, allow_infinity=False, width=16))


@given(st.lists(cell, max_size=40))
def test_categorical_values_equal_the_value_by_value_reading(values: list[object]) -> None:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    slow = _categorical_slow(list(values), np.empty(len(values), dtype=object))
    assert categorical_values(arr).tolist() == slow.tolist()


def test_text_with_gaps_and_numbers_read_as_the_decoder_reads_json() -> None:
    arr = np.array(["pro", math.nan, None, "basic", 1.0, 2.5, True], dtype=object)
    assert categorical_values(arr).tolist() == ["pro", None, None, "basic", "1", "2.5", "true"]
    only_text = np.array(["a", math.nan, "b"], dtype=object)
    assert categorical_values(only_text).tolist() == ["a", None, "b"]
