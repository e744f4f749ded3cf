"""Column specs, the prepared reference and the per-window view of a column.

Everything here is pure: numpy arrays in, immutable objects out. The reference
is reduced once (:func:`prepare_reference`) to what every drift test and
quality figure needs — sorted finite values, unique values with their counts,
moments, category counts, fixed bins — so that each window only pays for its
own rows.

Missing values: for numerical columns NaN and ±inf are missing for drift (as
Evidently replaces ±inf with NaN and drops NaN); for categorical columns
``None`` and float NaN are missing.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from detectors.spec import ColumnSpec

Kind = Literal["numerical", "categorical"]
BinsMode = Literal["evidently", "fixed"]

KINDS: tuple[str, ...] = ("numerical", "categorical")
BINS_MODES: tuple[str, ...] = ("evidently", "fixed")


# --------------------------------------------------------------------------- helpers


def _is_missing_object(values: np.ndarray) -> np.ndarray:
    return np.asarray(pd.isna(values), dtype=bool)


def _as_float(values: Any) -> np.ndarray:
    """``values`` as a 1-d float64 array (object arrays: anything not a number is NaN)."""
    if type(values) is np.ndarray and values.dtype == np.float64 and values.ndim == 1 and values.flags.c_contiguous:
        return values  # what the conversions below leave of it (the same values, contiguous)
    arr = np.asarray(values)
    if arr.dtype == object:
        arr = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64
        )
    else:
        arr = arr.astype(np.float64, copy=False)
    return arr.ravel()


def clean_numerical(values: Any) -> tuple[np.ndarray, int, int]:
    """Return (finite values as float64, total rows, missing rows). ±inf counts as missing."""
    arr = _as_float(values)
    finite = np.isfinite(arr)
    n_total = int(arr.shape[0])
    if np.count_nonzero(finite) == n_total:
        return arr, n_total, 0
    kept = arr[finite]
    return kept, n_total, n_total - int(kept.shape[0])


def factorize_categories(values: Any) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray, int, int]:
    """Return (categories in first-seen order, counts, codes of the non-missing
    values in their original order, total rows, missing rows)."""
    arr = (
        np.asarray(values, dtype=object).ravel()
        if not isinstance(values, np.ndarray)
        else values.ravel()
    )
    n_total = int(arr.shape[0])
    if n_total == 0:
        return (), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.intp), 0, 0
    codes, uniques = pd.factorize(arr, use_na_sentinel=True)
    present = codes >= 0
    kept = codes if present.all() else codes[present]
    missing = n_total - int(kept.shape[0])
    counts = np.bincount(kept, minlength=len(uniques)).astype(np.int64)
    return tuple(uniques.tolist()), counts, kept.astype(np.intp, copy=False), n_total, missing


try:  # pandas' object hash table: ~3x faster than factorize when categories are known
    from pandas._libs.hashtable import PyObjectHashTable as _ObjectTable
except ImportError:  # pragma: no cover - private API moved: fall back to pd.factorize
    _ObjectTable = None


def category_lookup(categories: tuple[Any, ...]) -> Any:
    """A lookup table for :func:`factorize_known` (None when unavailable)."""
    if _ObjectTable is None or not categories:
        return None
    try:
        table = _ObjectTable(max(len(categories), 8))
        table.map_locations(np.asarray(categories, dtype=object))
    except Exception:  # pragma: no cover - unhashable or odd values: use factorize
        return None
    return table


def factorize_known(
    values: Any, known: tuple[Any, ...], table: Any
) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray, int, int]:
    """:func:`factorize_categories`, fast when most values are among ``known``.

    Known categories present in the window come first (in ``known`` order),
    then new ones in first-seen order; categories with zero count are left out.
    """
    arr = (
        np.asarray(values, dtype=object).ravel()
        if not isinstance(values, np.ndarray)
        else values.ravel()
    )
    if table is None or arr.dtype != object:
        return factorize_categories(arr)
    codes = lookup_codes(arr, table)
    return factorize_looked_up(codes, arr[codes < 0], known)


def lookup_codes(values: np.ndarray, table: Any) -> np.ndarray:
    """Each value's index among the categories of ``table`` (from :func:`category_lookup`),
    -1 for a value that is not one of them (a new category or a missing value)."""
    return table.lookup(values).astype(np.intp, copy=False)


def factorize_looked_up(
    codes: np.ndarray, others: np.ndarray, known: tuple[Any, ...]
) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray, int, int]:
    """:func:`factorize_known` from its two parts, so they can be computed piece by piece
    (a sliding window's panes) and joined: ``codes`` from :func:`lookup_codes` (an intp
    array, overwritten) and ``others``, the values where ``codes`` is -1, in order.

    Returns (categories, counts, codes of the non-missing values, total rows, missing rows).
    """
    n_total = int(codes.shape[0])
    k = len(known)
    n_missing = 0
    new_cats: tuple[Any, ...] = ()
    if others.shape[0]:
        other = np.flatnonzero(codes < 0)
        o_codes, o_uniques = pd.factorize(others, use_na_sentinel=True)
        n_missing = int(np.count_nonzero(o_codes < 0))
        new_cats = tuple(o_uniques.tolist())
        codes[other] = np.where(o_codes >= 0, o_codes + k, -1)
    kept = codes if n_missing == 0 else codes[codes >= 0]
    counts = np.bincount(kept, minlength=k + len(new_cats)).astype(np.int64)
    present = np.flatnonzero(counts)
    if present.shape[0] != counts.shape[0]:  # drop zero-count categories, renumber codes
        remap = np.full(counts.shape[0], -1, dtype=np.intp)
        remap[present] = np.arange(present.shape[0])
        kept = remap[kept]
        counts = counts[present]
    all_cats = known + new_cats
    cats = tuple(all_cats[i] for i in present.tolist())
    return cats, counts, kept, n_total, n_missing


def factorize_counted(
    known_counts: np.ndarray, others: np.ndarray, known: tuple[Any, ...]
) -> tuple[tuple[Any, ...], np.ndarray, int]:
    """The categories and counts of :func:`factorize_looked_up` from counts alone:
    ``known_counts[i]`` values found as ``known[i]`` and ``others``, the values not found
    (new categories and missing values, in row order). Sums of counts are exact, so a
    window's ``known_counts`` may be added up from its pieces in any grouping.

    Returns (categories, counts, missing rows): the same categories in the same order,
    with the same counts, as :func:`factorize_looked_up` on the joined pieces.
    """
    counts = known_counts.astype(np.int64, copy=False)
    n_missing = 0
    new_cats: tuple[Any, ...] = ()
    if others.shape[0]:
        o_codes, o_uniques = pd.factorize(others, use_na_sentinel=True)
        present_o = o_codes[o_codes >= 0]
        n_missing = int(others.shape[0] - present_o.shape[0])
        new_cats = tuple(o_uniques.tolist())
        counts = np.concatenate((counts, np.bincount(present_o, minlength=len(new_cats)).astype(np.int64)))
    present = np.flatnonzero(counts)
    all_cats = known + new_cats
    if present.shape[0] != counts.shape[0]:  # drop zero-count categories
        counts = counts[present]
        return tuple(all_cats[i] for i in present.tolist()), counts, n_missing
    return all_cats, counts, n_missing


def count_categories(values: Any) -> tuple[tuple[Any, ...], np.ndarray, int, int]:
    """Return (categories in first-seen order, counts, total rows, missing rows)."""
    cats, counts, _, n_total, missing = factorize_categories(values)
    return cats, counts, n_total, missing


def _sort_key_list(keys: Sequence[Any]) -> list[Any]:
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=lambda k: (type(k).__name__, str(k)))


# --------------------------------------------------------------------------- reference


@dataclass(frozen=True, eq=False)
class PreparedColumn:
    """Reference state of one column, computed once.

    Numerical columns carry ``values`` (finite values in their original order,
    for the few tests that read them; see :func:`prepare_reference`), ``sorted_values``, the
    number of distinct values and moments; their ``unique_values``,
    ``unique_counts`` and ``unique_cum_right`` are derived from ``sorted_values``
    on first use and kept (only KS and the tests that treat numbers as
    categories read them; Wasserstein, Jensen–Shannon and PSI never do, so a
    model on the default tests does not hold three more reference-length arrays
    per column). Categorical columns carry ``categories``/``counts``. ``n`` is
    the number of non-missing reference values (the size Evidently's ``auto``
    rule compares with 1000).
    """

    spec: ColumnSpec
    n_total: int
    n_missing: int
    n: int
    # numerical
    #: finite values in their original order; None when prepared without them (see
    #: :func:`prepare_reference`), then reading :attr:`values` raises
    ordered: np.ndarray | None = field(default_factory=lambda: np.zeros(0))
    sorted_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: distinct values among ``sorted_values`` (numerical; 0 for categorical columns)
    n_distinct: int = 0
    mean: float = math.nan
    std: float = math.nan  # population std (ddof=0), as np.std
    var1: float = math.nan  # sample variance (ddof=1)
    min: float = math.nan
    max: float = math.nan
    # categorical (also used for numerical "values as categories" tests)
    categories: tuple[Any, ...] = ()
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: category index of each non-missing value, original order (smallest unsigned int type)
    codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint8))
    lookup: Any = None  # hash table of ``categories`` (pandas), for fast window factorisation
    category_index: Mapping[Any, int] = field(default_factory=dict)
    # fixed-bin mode (None when prepared with bins="evidently")
    fixed_edges: np.ndarray | None = None
    fixed_keys: tuple[Any, ...] | None = None
    fixed_ref_counts: np.ndarray | None = None
    #: numerical columns with as many values as others of the reference: the 2-d array whose
    #: row ``block_row`` is ``sorted_values`` (one row per such column, in spec order), so
    #: tests scoring them together read the rows without copying them (None: not shared)
    block: np.ndarray | None = None
    block_row: int = 0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def values(self) -> np.ndarray:
        """Finite values in their original order (numerical columns).

        Raises ``ValueError`` for a column prepared without them: its spec's test does
        not read them (prepare with ``keep_order=True`` to keep them anyway).
        """
        if self.ordered is None:
            raise ValueError(
                f"reference column {self.name!r} was prepared without its values in their original"
                " order (its test does not read them): prepare_reference(..., keep_order=True)"
            )
        return self.ordered

    @property
    def n_unique(self) -> int:
        if self.spec.kind == "numerical":
            return self.n_distinct
        return len(self.categories)

    @cached_property
    def _unique_runs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(distinct values ascending, their counts, cumulative counts) of ``sorted_values``.

        Computed once, on first use (cached on the instance; a race computes it twice,
        identically). Every value distinct (the usual continuous column): the
        values are ``sorted_values`` itself and the counts a read-only view of ones.
        """
        return _runs(self.sorted_values)

    @property
    def unique_values(self) -> np.ndarray:
        return self._unique_runs[0]

    @property
    def unique_counts(self) -> np.ndarray:
        return self._unique_runs[1]

    @property
    def unique_cum_right(self) -> np.ndarray:
        """Number of reference values ``<=`` each distinct value (int64)."""
        return self._unique_runs[2]

    def value_counts(self) -> tuple[tuple[Any, ...], np.ndarray]:
        """Distinct values and their counts (numerical: ascending floats)."""
        if self.spec.kind == "numerical":
            return tuple(self.unique_values.tolist()), self.unique_counts
        return self.categories, self.counts


@dataclass(frozen=True, eq=False)
class PreparedReference:
    """All prepared columns of one reference plus its size and specs."""

    columns: Mapping[str, PreparedColumn]
    rows: int
    specs: tuple[ColumnSpec, ...]
    bins: BinsMode = "evidently"

    def __getitem__(self, name: str) -> PreparedColumn:
        return self.columns[name]


FIXED_MAX_DISCRETE = (
    20  # numerical columns with <= this many reference values get one bin per value
)


def _fixed_numerical_bins(
    col_sorted: np.ndarray, uniques: np.ndarray
) -> tuple[np.ndarray | None, tuple[Any, ...] | None]:
    if col_sorted.shape[0] == 0:
        return None, ()
    if uniques.shape[0] <= FIXED_MAX_DISCRETE:
        return None, tuple(uniques.tolist())
    edges = np.histogram_bin_edges(col_sorted, bins="sturges")
    return edges, None


def fixed_bin_counts(edges: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Counts for the fixed-bin layout: [below min] + reference bins + [above max]."""
    n = sorted_values.shape[0]
    inner_cum = np.concatenate(
        (
            sorted_values.searchsorted(edges[:-1], "left"),
            sorted_values.searchsorted(edges[-1:], "right"),
        )
    )
    below = inner_cum[0]
    above = n - inner_cum[-1]
    return np.concatenate(([below], np.diff(inner_cum), [above])).astype(np.int64)


def _prepare_column(spec: ColumnSpec, values: Any, bins: BinsMode, keep_order: bool) -> PreparedColumn:
    if spec.kind == "numerical":
        clean, n_total, n_missing = clean_numerical(values)
        col = _numerical_column(spec, clean, np.sort(clean), n_total, n_missing, bins)
        if keep_order or _reads_order(spec):
            return col
        return dataclasses.replace(col, ordered=None)
    cats, counts, codes, n_total, n_missing = factorize_categories(values)
    return _categorical_column(spec, cats, counts, codes, n_total, n_missing, bins)


def _runs(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct values, counts, cumulative counts) of the sorted array ``s``; empty arrays
    for an empty ``s``. With no repeated value the distinct values are ``s`` itself (no
    copy) and the counts a zero-memory read-only view of ones."""
    n = int(s.shape[0])
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = _run_starts(s)
    ends = np.append(starts[1:], n)
    cum_right = ends.astype(np.int64)
    if starts.shape[0] == n:
        return s, np.broadcast_to(np.int64(1), (n,)), cum_right
    return s[starts], (ends - starts).astype(np.int64), cum_right


def _run_starts(s: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in the non-empty sorted ``s``."""
    change = np.empty(s.shape[0], dtype=bool)
    change[0] = True
    np.not_equal(s[1:], s[:-1], out=change[1:])
    return np.flatnonzero(change)


def _numerical_column(
    spec: ColumnSpec, clean: np.ndarray, s: np.ndarray, n_total: int, n_missing: int, bins: BinsMode
) -> PreparedColumn:
    n = int(s.shape[0])
    if n:
        n_distinct = int(np.count_nonzero(s[1:] != s[:-1])) + 1
        mean = float(np.mean(clean))
        std = float(np.std(clean))
        var1 = float(np.var(clean, ddof=1)) if n > 1 else math.nan
        lo, hi = float(s[0]), float(s[-1])
    else:
        n_distinct = 0
        mean = std = var1 = lo = hi = math.nan
    fixed_edges = fixed_keys = fixed_counts = None
    if bins == "fixed":
        uniques, ucounts, _ = _runs(s)
        fixed_edges, fixed_keys = _fixed_numerical_bins(s, uniques)
        if fixed_edges is not None:
            fixed_counts = fixed_bin_counts(fixed_edges, s)
        else:
            fixed_counts = np.append(ucounts, 0).astype(np.int64)  # + "other" bucket
    return PreparedColumn(
        spec=spec,
        n_total=n_total,
        n_missing=n_missing,
        n=n,
        ordered=clean,
        sorted_values=s,
        n_distinct=n_distinct,
        mean=mean,
        std=std,
        var1=var1,
        min=lo,
        max=hi,
        fixed_edges=fixed_edges,
        fixed_keys=fixed_keys,
        fixed_ref_counts=fixed_counts,
    )


def _compact_codes(codes: np.ndarray, n_categories: int) -> np.ndarray:
    """``codes`` (all in ``[0, n_categories)``) in the smallest unsigned integer type that holds
    them: a reference keeps one code per row, 1 byte instead of 8 for up to 256 categories."""
    if n_categories <= 1 << 8:
        return codes.astype(np.uint8, copy=False)
    return codes.astype(np.uint16 if n_categories <= 1 << 16 else np.uint32, copy=False)


def _categorical_column(
    spec: ColumnSpec, cats: tuple[Any, ...], counts: np.ndarray, codes: np.ndarray, n_total: int,
    n_missing: int, bins: BinsMode,
) -> PreparedColumn:
    fixed_keys = fixed_counts = None
    if bins == "fixed":
        fixed_keys = cats
        fixed_counts = np.append(counts, 0).astype(np.int64)
    return PreparedColumn(
        spec=spec,
        n_total=n_total,
        n_missing=n_missing,
        n=int(counts.sum()),
        categories=cats,
        counts=counts,
        codes=_compact_codes(codes, len(cats)),
        lookup=category_lookup(cats),
        category_index={c: i for i, c in enumerate(cats)},
        fixed_keys=fixed_keys,
        fixed_ref_counts=fixed_counts,
    )


def _reads_order(spec: ColumnSpec) -> bool:
    """Whether the test of ``spec`` may read the reference's values in their original order
    (``auto`` picks only tests that do not; an unknown name: assume it does)."""
    from detectors.drift.registry import get_test  # noqa: PLC0415 - the registry imports this module

    if spec.method == "auto":
        return False
    try:
        return get_test(spec.method).reads_order
    except KeyError:
        return True


def prepare_reference(
    ref_columns: Mapping[str, Any],
    specs: Sequence[ColumnSpec],
    bins: BinsMode = "evidently",
    *,
    keep_order: bool = False,
) -> PreparedReference:
    """Reduce reference data once to the state every window's tests need.

    ``ref_columns`` maps column names to arrays: numerical columns as float64
    with NaN for missing, categorical columns as object arrays of ``str`` with
    ``None`` (or NaN) for missing. ``bins`` selects how the binned tests (PSI,
    Jensen–Shannon, KL, Hellinger) bin the data:

    - ``"evidently"`` (default): bins recomputed per window on reference and
      current values together, exactly as Evidently does (parity).
    - ``"fixed"``: bins fitted on the reference only (Sturges equal-width
      bins over the reference range for numerical columns with more than 20
      distinct values, one bin per value otherwise, one bin per category for
      categorical columns), plus out-of-range bins (below the reference
      minimum, above the maximum, or an unseen value/category). Figures are
      stable across windows but no longer equal Evidently's.

    A numerical column keeps its values in their original order (``values``) only
    when its spec's test reads them (``DriftTest.reads_order``: the t-test,
    Mann–Whitney, Anderson–Darling, Epps–Singleton; ``auto`` never picks one),
    or with ``keep_order=True`` (needed by :func:`merge_prepared`); otherwise
    only the sorted values, half of a model's reference memory.

    Raises ``KeyError`` if a spec names a column absent from ``ref_columns``
    and ``ValueError`` for duplicate spec names or an unknown ``bins`` mode.
    An all-missing reference column is accepted; its drift scores are NaN.
    """
    if bins not in BINS_MODES:
        raise ValueError(f"bins must be one of {BINS_MODES}, got {bins!r}")
    specs = tuple(specs)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(
            f"duplicate column specs: {sorted({n for n in names if names.count(n) > 1})}"
        )
    cols: dict[str, PreparedColumn] = {}
    rows = 0
    for spec in specs:
        if spec.name not in ref_columns:
            raise KeyError(f"reference has no column {spec.name!r}")
        col = _prepare_column(spec, ref_columns[spec.name], bins, keep_order)
        cols[spec.name] = col
        rows = max(rows, col.n_total)
    if not specs:
        rows = max((len(np.asarray(v)) for v in ref_columns.values()), default=0)
    return PreparedReference(columns=_shared_blocks(cols), rows=rows, specs=specs, bins=bins)


def _shared_blocks(cols: dict[str, PreparedColumn]) -> dict[str, PreparedColumn]:
    """``cols`` with the sorted values of numerical columns of equal size (two or more, in
    their order) moved into the rows of one 2-d array (see :attr:`PreparedColumn.block`):
    the same values, in no more memory."""
    by_size: dict[int, list[str]] = {}
    for name, c in cols.items():
        if c.kind == "numerical" and c.n > 0:
            by_size.setdefault(c.n, []).append(name)
    out = dict(cols)
    for n, names in by_size.items():
        if len(names) < 2:
            continue
        block = np.empty((len(names), n), dtype=np.float64)
        for i, name in enumerate(names):
            block[i] = cols[name].sorted_values
            out[name] = dataclasses.replace(cols[name], sorted_values=block[i], block=block, block_row=i)
    return out


def merge_prepared(parts: Sequence[PreparedReference]) -> PreparedReference:
    """The prepared reference of the union of ``parts``' rows, without their rows.

    Equal to :func:`prepare_reference` on the concatenated rows (in ``parts``
    order): numerical columns merge their already-sorted values (a merge of
    sorted runs, not a sort from scratch), categorical columns add their
    counts. Every part must have the same specs and bins mode and be prepared
    with ``keep_order=True`` (the moments are recomputed in row order); raises
    ``ValueError`` otherwise or when ``parts`` is empty.
    """
    if not parts:
        raise ValueError("merge_prepared needs at least one part")
    first = parts[0]
    if any(p.specs != first.specs or p.bins != first.bins for p in parts):
        raise ValueError("merge_prepared: parts differ in specs or bins")
    if len(parts) == 1:
        return first
    cols: dict[str, PreparedColumn] = {}
    for spec in first.specs:
        pcs = [p.columns[spec.name] for p in parts]
        n_total = sum(c.n_total for c in pcs)
        n_missing = sum(c.n_missing for c in pcs)
        if spec.kind == "numerical":
            clean = np.concatenate([c.values for c in pcs])
            merged = np.sort(np.concatenate([c.sorted_values for c in pcs]), kind="stable")
            cols[spec.name] = _numerical_column(spec, clean, merged, n_total, n_missing, first.bins)
            continue
        index: dict[Any, int] = {}
        cats: list[Any] = []
        codes = []
        for c in pcs:
            remap = np.empty(len(c.categories), dtype=np.intp)
            for i, cat in enumerate(c.categories):
                j = index.get(cat)
                if j is None:
                    j = index[cat] = len(cats)
                    cats.append(cat)
                remap[i] = j
            codes.append(remap[c.codes] if c.codes.shape[0] else c.codes.astype(np.intp))
        all_codes = np.concatenate(codes).astype(np.intp, copy=False)
        counts = np.bincount(all_codes, minlength=len(cats)).astype(np.int64)
        cols[spec.name] = _categorical_column(
            spec, tuple(cats), counts, all_codes, n_total, n_missing, first.bins
        )
    rows = sum(p.rows for p in parts)
    return PreparedReference(columns=_shared_blocks(cols), rows=rows, specs=first.specs, bins=first.bins)


# --------------------------------------------------------------------------- current window


class CurrentColumn:
    """One window's column, cleaned once and shared by every test run on it."""

    def __init__(self, kind: str, values: Any, ref: PreparedColumn | None = None) -> None:
        self.kind = kind
        if kind == "numerical":
            self.values, self.n_total, self.n_missing = clean_numerical(values)
            self.n = int(self.values.shape[0])
            self._raw = values if self.n_missing else None
        else:
            if ref is not None and ref.lookup is not None:
                fact = factorize_known(values, ref.categories, ref.lookup)
            else:
                fact = factorize_categories(values)
            self.categories, self.counts, self.codes, self.n_total, self.n_missing = fact
            self.n = int(self.counts.sum())

    @classmethod
    def looked_up(cls, codes: np.ndarray, others: np.ndarray, ref: PreparedColumn) -> CurrentColumn:
        """A categorical column from its :func:`lookup_codes` against ``ref.lookup`` and the
        values those codes miss (see :func:`factorize_looked_up`); equal to
        ``CurrentColumn("categorical", values, ref)`` on the same values."""
        self = cls.__new__(cls)
        self.kind = "categorical"
        fact = factorize_looked_up(codes, others, ref.categories)
        self.categories, self.counts, self.codes, self.n_total, self.n_missing = fact
        self.n = int(self.counts.sum())
        return self

    @classmethod
    def counted(
        cls, categories: tuple[Any, ...], counts: np.ndarray, n_total: int, n_missing: int,
        codes: Callable[[], np.ndarray],
    ) -> CurrentColumn:
        """A categorical column from its counts (see :func:`factorize_counted`), its
        ``codes`` (row order: only the TVD test reads them) made by ``codes()`` on first read."""
        self = _CountedColumn.__new__(_CountedColumn)
        self.kind = "categorical"
        self.categories, self.counts, self.n_total, self.n_missing = categories, counts, n_total, n_missing
        self.n = int(counts.sum())
        self._make_codes = codes
        return self

    @cached_property
    def n_inf(self) -> int:
        """Numerical columns: how many of the missing values were ±inf (quality counts them
        as out of range, not missing)."""
        if not self.n_missing:
            return 0
        return int(np.count_nonzero(np.isinf(_as_float(self._raw))))

    @cached_property
    def sorted_values(self) -> np.ndarray:
        return np.sort(self.values)

    @cached_property
    def _uniques(self) -> tuple[np.ndarray, np.ndarray]:
        s = self.sorted_values
        n = s.shape[0]
        if n == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(s[1:], s[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        return s[starts], np.diff(np.append(starts, n)).astype(np.int64)

    @property
    def unique_values(self) -> np.ndarray:
        return self._uniques[0]

    @property
    def unique_counts(self) -> np.ndarray:
        return self._uniques[1]

    def value_counts(self) -> tuple[tuple[Any, ...], np.ndarray]:
        if self.kind == "numerical":
            u, c = self._uniques
            return tuple(u.tolist()), c
        return self.categories, self.counts


class _CountedColumn(CurrentColumn):
    """A categorical :class:`CurrentColumn` made by :meth:`CurrentColumn.counted`."""

    _make_codes: Callable[[], np.ndarray]

    @cached_property
    def codes(self) -> np.ndarray:  # type: ignore[override]
        return self._make_codes()


def union_counts(
    ref: PreparedColumn, cur: CurrentColumn
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Distinct non-missing values of reference ∪ current with both count vectors.

    Keys are in a deterministic order: ascending for numerical columns,
    reference order then new current categories for categorical ones.
    """
    if ref.kind == "numerical":
        ru, rc = ref.unique_values, ref.unique_counts
        cu, cc = cur.unique_values, cur.unique_counts
        grid = np.union1d(ru, cu)
        rcount = np.zeros(grid.shape[0], dtype=np.int64)
        ccount = np.zeros(grid.shape[0], dtype=np.int64)
        rcount[np.searchsorted(grid, ru)] = rc
        ccount[np.searchsorted(grid, cu)] = cc
        return grid.tolist(), rcount, ccount
    index = dict(ref.category_index)
    keys: list[Any] = list(ref.categories)
    for c in cur.categories:
        if c not in index:
            index[c] = len(keys)
            keys.append(c)
    rcount = np.zeros(len(keys), dtype=np.int64)
    rcount[: len(ref.counts)] = ref.counts
    ccount = np.zeros(len(keys), dtype=np.int64)
    if cur.categories:
        ccount[[index[c] for c in cur.categories]] = cur.counts
    return keys, rcount, ccount


def n_unique_union(ref: PreparedColumn, cur: CurrentColumn, cap: int | None = None) -> int:
    """Number of distinct non-missing values in reference and current together.

    With ``cap``, any count above ``cap`` may be returned as ``cap + 1``
    (enough for ``auto``'s "at most 2 / at most 5" rules, and much cheaper).
    """
    if cap is not None and ref.n_unique > cap:
        return cap + 1
    if ref.kind == "numerical":
        cu = cur.unique_values
        if cu.shape[0] == 0:
            return ref.n_unique
        ru = ref.unique_values
        if ru.shape[0] == 0:
            return int(cu.shape[0])
        pos = np.searchsorted(ru, cu)
        pos_c = np.minimum(pos, ru.shape[0] - 1)
        new = np.count_nonzero(ru[pos_c] != cu)
        return ref.n_unique + int(new)
    idx = ref.category_index
    return ref.n_unique + sum(1 for c in cur.categories if c not in idx)


sorted_keys = _sort_key_list


def as_current(ref: PreparedColumn, values: Any) -> CurrentColumn:
    """``values`` as a :class:`CurrentColumn` against ``ref`` (already one: as it is, so a
    window's categorical column is factorised once for its quality and its drift)."""
    return values if isinstance(values, CurrentColumn) else CurrentColumn(ref.kind, values, ref)
