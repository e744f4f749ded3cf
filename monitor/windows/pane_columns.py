"""A closed window's columns, assembled from its chunks (a sliding window's panes) at close.

A window holds its rows as chunks, each shared by every overlapping window that
received it whole (see :class:`monitor.windows.model_windows._Panes`). What the
figures derive from a chunk's rows alone is computed once per chunk and kept on
it (:attr:`ColumnBatch.derived`), so a row in 12 overlapping windows is looked
up once, not 12 times:

- categorical columns: how many values have each of the reference's categories,
  each value's code (1 byte per row up to 126 categories) and the values the
  reference does not know (new categories, missing): at close the counts are
  added up into the same :class:`CurrentColumn` as factorising the concatenated
  column gives (its codes in row order joined only if a test reads them).

Columns are concatenated only when something reads them (:class:`WindowColumns`), in
consumption order (the window's ``order``, see :mod:`monitor.windows.arrival`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from detectors._columns import (
    CurrentColumn,
    PreparedColumn,
    factorize_counted,
    factorize_looked_up,
    lookup_codes,
)
from monitor.ingest.batch import ColumnBatch
from monitor.windows.arrival import arrival_numbers, joined_in_order


class WindowColumns(Mapping[str, np.ndarray]):
    """The window's rows as one array per column, each concatenated on first read (then
    kept); a window of one chunk reads that chunk's arrays as they are. ``order``: the
    positions of the rows in consumption order in the concatenated chunks (None: as they
    are; see :meth:`monitor.windows.model_windows.OpenWindow.order`)."""

    def __init__(self, chunks: list[ColumnBatch], order: np.ndarray | None = None) -> None:
        self._chunks = chunks
        self._order = order
        self._names = tuple(chunks[0].columns) if chunks else ()
        self._joined: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        got = self._joined.get(name)
        if got is None:
            if name not in self._names:
                raise KeyError(name)
            got = self._joined[name] = joined_in_order([ch.columns[name] for ch in self._chunks], self._order)
        return got

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def joined(self) -> dict[str, np.ndarray]:
        """The columns read so far (each the window's whole column, rows in order)."""
        return dict(self._joined)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


def categorical_column(
    chunks: list[ColumnBatch], name: str, ref: PreparedColumn, order: np.ndarray | None = None
) -> CurrentColumn:
    """Column ``name`` of the window made of ``chunks`` (at least one), factorised against the
    categorical reference column ``ref``: equal to ``CurrentColumn("categorical", values, ref)``
    on the window's values in consumption order (``order``: see :class:`WindowColumns`), from
    each chunk's lookup (done once, kept on the chunk): the window adds up the chunks' counts
    and orders only the values the reference does not know (new categories are listed in the
    order they were first seen); its codes in row order are joined only if read."""
    if ref.lookup is None or any(ch.columns[name].dtype != object for ch in chunks):
        return CurrentColumn("categorical", WindowColumns(chunks, order)[name], ref)
    parts = []
    for ch in chunks:
        got = ch.derived.get(name)
        if got is None or got[0] is not ref.lookup:  # a new reference: look up again
            got = ch.derived[name] = _chunk_codes(ch.columns[name], ref)
        parts.append(got)
    counts = parts[0][3]
    if len(parts) > 1:
        counts = np.sum([p[3] for p in parts], axis=0)
    others = parts[0][2] if len(parts) == 1 else np.concatenate([p[2] for p in parts])
    if order is not None and others.shape[0] > 1:
        others = others[np.argsort(arrival_numbers(chunks, [p[1] < 0 for p in parts]), kind="stable")]
    cats, cat_counts, n_missing = factorize_counted(counts, others, ref.categories)

    def codes() -> np.ndarray:
        # a fresh intp array (factorize_looked_up overwrites it), one chunk or several
        joined = np.concatenate([p[1] for p in parts], dtype=np.intp)
        if order is not None:
            joined = joined[order]
        return factorize_looked_up(joined, others, ref.categories)[2]

    n_total = sum(int(p[1].shape[0]) for p in parts)
    return CurrentColumn.counted(cats, cat_counts, n_total, n_missing, codes)


def _chunk_codes(
    values: np.ndarray, ref: PreparedColumn
) -> tuple[object, np.ndarray, np.ndarray, np.ndarray, int | None]:
    """(the lookup table used, codes in the smallest signed type, the values coded -1, how
    many values have each known code, the longest known category's length (None: one is
    not a ``str``))."""
    codes = lookup_codes(values, ref.lookup)
    k = len(ref.categories)
    small = codes.astype(np.int8 if k < 127 else np.int32)
    known = np.bincount(codes + 1, minlength=k + 1)[1:]  # code -1 counted apart, dropped
    longest = None
    if all(type(c) is str for c in ref.categories):
        longest = max(map(len, ref.categories), default=0)
    return ref.lookup, small, values[codes < 0], known, longest


def short_texts(chunks: list[ColumnBatch], name: str, limit: int) -> bool:
    """Whether column ``name`` of ``chunks`` is known, from the lookups its figures made, to
    hold only ``str`` of at most ``limit`` characters and ``None``: a value the lookup found
    is one of the reference's categories; the few it did not find are checked here. False
    when a chunk was not looked up (then nothing is known)."""
    for ch in chunks:
        got = ch.derived.get(name)
        if got is None or got[4] is None or got[4] > limit:
            return False
        for v in got[2].tolist():
            if v is not None and (type(v) is not str or len(v) > limit):
                return False
    return True
