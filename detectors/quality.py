"""Data quality of a window against the prepared reference."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors._columns import CurrentColumn, PreparedReference, factorize_known
from detectors._fast_init import fast_init

#: at most this many new categories are listed per column (most frequent first)
MAX_NEW_CATEGORIES = 50

#: numerical columns of windows up to this many rows get their quality counts in one 2-d pass;
#: above it the copy into a 2-d array costs more than the per-column calls it saves
BATCH_MAX_ROWS = 4096


@fast_init
@dataclass(frozen=True, slots=True)
class ColumnQuality:
    """Quality figures of one column in one window.

    - ``missing_share``: missing values / rows (NaN and None; ±inf is not
      missing here, it is out of range). NaN for a window of 0 rows.
    - ``out_of_range_share`` (numerical only, else None): share of the
      non-missing values outside [reference min, reference max], ±inf
      included. NaN when the window has no non-missing value or the
      reference has none (no range).
    - ``new_category_share`` (categorical only, else None): share of the
      non-missing values whose category never occurs in the reference; NaN
      when the window has no non-missing value.
    - ``new_categories``: those categories as strings, most frequent first
      (ties by name), at most 50.
    - ``type_violations``: the count passed in by the caller (values that
      could not be decoded into the column's type), 0 by default.
    """

    column: str
    missing_share: float
    out_of_range_share: float | None
    new_category_share: float | None
    new_categories: tuple[str, ...]
    type_violations: int
    rows: int = 0
    missing_count: int = 0


@dataclass(frozen=True)
class DataQuality:
    """Row count of the window and one :class:`ColumnQuality` per spec column."""

    row_count: int
    columns: tuple[ColumnQuality, ...]

    def __getitem__(self, column: str) -> ColumnQuality:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)


def _share_outside(n: int, missing: int, outside: int, lo: float) -> tuple[int, int, float]:
    """(rows, missing rows, share of the present values outside the reference range); the
    share is NaN with no present value or no reference range (``lo`` NaN)."""
    present = n - missing
    return n, missing, math.nan if present == 0 or math.isnan(lo) else outside / present


def _numerical_quality(values: Any, lo: float, hi: float) -> tuple[int, int, float]:
    arr = np.asarray(values)
    if arr.dtype == object:
        import pandas as pd

        arr = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64
        )
    arr = arr.astype(np.float64, copy=False).ravel()
    n = int(arr.shape[0])
    nan = np.isnan(arr)
    missing = int(nan.sum())
    if missing == n or math.isnan(lo):
        return _share_outside(n, missing, 0, lo)
    vals = arr[~nan] if missing else arr
    return _share_outside(n, missing, int(np.count_nonzero((vals < lo) | (vals > hi))), lo)


def _current_quality(cur: CurrentColumn, lo: float, hi: float) -> tuple[int, int, float]:
    """:func:`_numerical_quality` of the values ``cur`` was made from (the same counts):
    NaN is missing and ±inf out of range. Counted with two binary searches when the
    column's sorted values are already there (a window that ran its drift tests first)."""
    n, n_inf = cur.n_total, cur.n_inf
    missing = cur.n_missing - n_inf
    if missing == n or math.isnan(lo):
        return _share_outside(n, missing, 0, lo)
    if "sorted_values" in cur.__dict__:
        s = cur.sorted_values
        outside = int(s.searchsorted(lo, "left")) + int(s.shape[0] - s.searchsorted(hi, "right"))
    else:
        v = cur.values
        outside = int(np.count_nonzero((v < lo) | (v > hi)))
    return _share_outside(n, missing, outside + n_inf, lo)


def _numerical_batch(
    prepared: PreparedReference, current_columns: Mapping[str, Any]
) -> dict[str, tuple[int, int, float]]:
    """:func:`_numerical_quality` of every numerical spec column given as a 1-d float64 array
    of the most common length, computed for all of them at once (one 2-d pass instead of a
    few numpy calls per column: most of a small window's quality time). The counts are
    the same integers, so the shares are identical. Other columns, and every column of a
    window over :data:`BATCH_MAX_ROWS` rows, are left out (empty dict)."""
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for spec in prepared.specs:
        v = current_columns.get(spec.name)
        if isinstance(v, CurrentColumn) and v.kind == "numerical" and v.n_missing == 0:
            v = v.values  # every value finite: the cleaned values are the values
        if spec.kind == "numerical" and isinstance(v, np.ndarray) and v.dtype == np.float64 and v.ndim == 1:
            names.append(spec.name)
            arrays.append(v)
    if len(arrays) < 2:
        return {}
    n = max({a.shape[0] for a in arrays}, key=[a.shape[0] for a in arrays].count)
    keep = [i for i, a in enumerate(arrays) if a.shape[0] == n]
    if len(keep) < 2 or n == 0 or n > BATCH_MAX_ROWS:
        return {}
    names = [names[i] for i in keep]
    m = np.array([arrays[i] for i in keep])  # np.stack's copy, without its Python wrapper (rows of one length)
    lo = np.array([prepared.columns[c].min for c in names])[:, None]
    hi = np.array([prepared.columns[c].max for c in names])[:, None]
    # counted as np.count_nonzero(..., axis=1) counts, without its Python wrapper
    missing = np.add.reduce(np.isnan(m), axis=1, dtype=np.intp).tolist()
    outside = np.add.reduce((m < lo) | (m > hi), axis=1, dtype=np.intp).tolist()  # NaN compares False
    return {
        c: _share_outside(n, miss, off, prepared.columns[c].min)
        for c, miss, off in zip(names, missing, outside, strict=True)
    }


def data_quality(
    prepared: PreparedReference,
    current_columns: Mapping[str, Any],
    type_violations: Mapping[str, int] | None = None,
) -> DataQuality:
    """Missing share, out-of-range share, new categories and type violations per column.

    A column may be passed as a :class:`CurrentColumn`: a categorical one made against
    the reference is not factorised again; a numerical one is counted from its cleaned
    values (with two binary searches once they are sorted), the same figures.
    ``row_count`` is the length of the longest column passed (all columns of a window
    normally have the same length); a spec column absent from ``current_columns`` is
    reported as entirely missing. Never raises on data.
    """
    tv = dict(type_violations or {})
    lengths = [
        v.n_total if isinstance(v, CurrentColumn)
        else int(v.shape[0]) if isinstance(v, np.ndarray)
        else int(np.asarray(v, dtype=object).shape[0])
        for v in current_columns.values()
    ]
    row_count = max(lengths, default=0)
    batched = _numerical_batch(prepared, current_columns)
    out: list[ColumnQuality] = []
    for spec in prepared.specs:
        ref = prepared.columns[spec.name]
        values = current_columns.get(spec.name)
        if values is None:
            out.append(
                ColumnQuality(
                    column=spec.name,
                    missing_share=1.0 if row_count else math.nan,
                    out_of_range_share=math.nan if spec.kind == "numerical" else None,
                    new_category_share=None if spec.kind == "numerical" else math.nan,
                    new_categories=(),
                    type_violations=int(tv.get(spec.name, 0)),
                    rows=row_count,
                    missing_count=row_count,
                )
            )
            continue
        if spec.kind == "numerical":
            got = batched.get(spec.name)
            if got is not None:
                n, missing, oor = got
            elif isinstance(values, CurrentColumn):
                n, missing, oor = _current_quality(values, ref.min, ref.max)
            else:
                n, missing, oor = _numerical_quality(values, ref.min, ref.max)
            out.append(
                ColumnQuality(
                    column=spec.name,
                    missing_share=missing / n if n else math.nan,
                    out_of_range_share=oor,
                    new_category_share=None,
                    new_categories=(),
                    type_violations=int(tv.get(spec.name, 0)),
                    rows=n,
                    missing_count=missing,
                )
            )
            continue
        if isinstance(values, CurrentColumn):  # factorised already (shared with the drift tests)
            cats, counts, n, missing = values.categories, values.counts, values.n_total, values.n_missing
        else:
            cats, counts, _, n, missing = factorize_known(values, ref.categories, ref.lookup)
        present = n - missing
        idx = ref.category_index
        new = [(c, int(k)) for c, k in zip(cats, counts.tolist(), strict=True) if c not in idx]
        new_total = sum(k for _, k in new)
        new.sort(key=lambda ck: (-ck[1], str(ck[0])))
        out.append(
            ColumnQuality(
                column=spec.name,
                missing_share=missing / n if n else math.nan,
                out_of_range_share=None,
                new_category_share=new_total / present if present else math.nan,
                new_categories=tuple(str(c) for c, _ in new[:MAX_NEW_CATEGORIES]),
                type_violations=int(tv.get(spec.name, 0)),
                rows=n,
                missing_count=missing,
            )
        )
    return DataQuality(row_count=row_count, columns=tuple(out))
