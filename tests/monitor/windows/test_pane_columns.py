"""A window's columns assembled from its chunks equal the same computation on the joined rows."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import ColumnSpec, prepare_reference
from detectors._columns import CurrentColumn
from monitor.ingest.batch import ColumnBatch
from monitor.windows.arrival import ARRIVAL, arrival_order
from monitor.windows.pane_columns import WindowColumns, categorical_column


def chunk(values: list[object], x: list[float] | None = None) -> ColumnBatch:
    n = len(values)
    obj = np.empty(n, dtype=object)
    obj[:] = values
    return ColumnBatch(
        model="m",
        ts_ms=np.zeros(n, dtype=np.int64),
        partition=np.zeros(n, dtype=np.int32),
        offset=np.arange(n, dtype=np.int64),
        event_id=obj.copy(),
        version=obj.copy(),
        segments={},
        columns={"c": obj, "x": np.array(x if x is not None else [0.0] * n)},
    )


def reference(cats: list[object]):
    return prepare_reference({"c": np.array(cats, dtype=object)}, [ColumnSpec("c", "categorical")])[
        "c"
    ]


def same(a: CurrentColumn, b: CurrentColumn) -> None:
    assert (a.categories, a.counts.tolist(), a.codes.tolist(), a.n_total, a.n_missing, a.n) == (
        b.categories,
        b.counts.tolist(),
        b.codes.tolist(),
        b.n_total,
        b.n_missing,
        b.n,
    )


@pytest.mark.parametrize(
    "parts",
    [
        [["a", "b"], ["b", "a", "a"]],  # known categories only
        [["a", "new", None], [float("nan"), "other", "b"]],  # new categories and missing values
        [["z"], ["a"], [None, None]],  # chunks without known values, all-missing chunk
        [["b", "a", "b"]],  # one chunk
    ],
)
def test_categorical_column_equals_factorising_the_joined_rows(parts: list[list[object]]) -> None:
    ref = reference(["a", "b", "c", "a"])
    chunks = [chunk(p) for p in parts]
    joined = np.concatenate([ch.columns["c"] for ch in chunks])
    got = categorical_column(chunks, "c", ref)
    same(got, CurrentColumn("categorical", joined, ref))
    # a second window sharing the chunks reads their kept codes: same column again
    same(categorical_column(chunks, "c", ref), got)
    assert all("c" in ch.derived for ch in chunks)


def test_a_new_reference_looks_chunks_up_again() -> None:
    chunks = [chunk(["a", "b"]), chunk(["c", "b"])]
    first = reference(["a", "b"])
    categorical_column(chunks, "c", first)
    second = reference(["c", "b", "a"])
    joined = np.concatenate([ch.columns["c"] for ch in chunks])
    same(categorical_column(chunks, "c", second), CurrentColumn("categorical", joined, second))


def test_window_columns_join_on_read() -> None:
    chunks = [chunk(["a"], [1.0]), chunk(["b", "c"], [2.0, 3.0])]
    cols = WindowColumns(chunks)
    assert list(cols) == ["c", "x"] and len(cols) == 2 and "x" in cols and "y" not in cols
    assert cols["x"].tolist() == [1.0, 2.0, 3.0]
    assert cols["x"] is cols["x"]  # joined once
    with pytest.raises(KeyError):
        cols["y"]
    single = WindowColumns(chunks[:1])
    assert single["x"] is chunks[0].columns["x"]
    assert len(WindowColumns([])) == 0


def numbered(values: list[object], arrival: list[int]) -> ColumnBatch:
    """A chunk of a sliding window: its rows' arrival numbers kept on it."""
    ch = chunk(values, [float(a) for a in arrival])
    ch.derived[ARRIVAL] = np.array(arrival, dtype=np.int64)
    return ch


def test_columns_of_chunks_out_of_arrival_order_are_read_in_arrival_order() -> None:
    """A sliding window gets a batch's rows pane by pane: its chunks may hold them out of
    the order they came in. Its columns, codes and new categories (first seen first) are
    those of the rows in arrival order."""
    chunks = [numbered(["a", "new", "b"], [0, 4, 5]), numbered(["other", None, "new"], [1, 2, 6]),
              numbered(["b", "last"], [3, 7])]
    order = arrival_order(chunks)
    assert order is not None and order.tolist() == [0, 3, 4, 6, 1, 2, 5, 7]
    in_order = np.array(["a", "other", None, "b", "new", "b", "new", "last"], dtype=object)
    cols = WindowColumns(chunks, order)
    assert cols["x"].tolist() == list(map(float, range(8)))
    assert cols["c"].tolist() == in_order.tolist()
    ref = reference(["a", "b"])
    got = categorical_column(chunks, "c", ref, order)
    assert got.categories == ("a", "b", "other", "new", "last")
    same(got, CurrentColumn("categorical", in_order, ref))
    numbers = reference([1.0, 2.0])  # a column of numbers: joined, then factorised
    same(categorical_column(chunks, "x", numbers, order), CurrentColumn("categorical", cols["x"], numbers))


def test_chunks_in_arrival_order_or_without_numbers_are_read_as_they_are() -> None:
    assert arrival_order([numbered(["a"], [0]), numbered(["b", "c"], [3, 9])]) is None
    assert arrival_order([numbered(["a", "b"], [5, 6])]) is None
    assert arrival_order([chunk(["a"]), chunk(["b"])]) is None  # tumbling and count windows
