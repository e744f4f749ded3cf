"""A window's columns assembled from its chunks equal the same computation on the joined rows."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import ColumnSpec, prepare_reference
from detectors._columns import CurrentColumn
from monitor.ingest.batch import ColumnBatch
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
