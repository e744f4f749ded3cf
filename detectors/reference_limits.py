"""What a reference says about the limits of calibrated thresholds on its columns.

Calibration (:mod:`detectors.calibration`) draws its "no change" windows from the
reference itself, so it cannot draw what the reference does not hold. Two kinds of
column break that, measured in the README's "Choosing thresholds":

- **heavy tails** (tail index under about 2): a real window brings extremes beyond
  the reference's, so Wasserstein distances cross their calibrated thresholds more
  often than ``alpha_column`` (energy distance and Jensen–Shannon measured within it,
  see :data:`HEAVY_TAIL_TESTS`). :func:`tail_index` estimates the
  index from the reference's largest deviations (Hill's estimator).
- **sparse tails under chi-square**: a window holding a value the reference lacks
  scores p = 0. :func:`sparse_tail` counts the reference's rare values.

Pure functions: numpy in, frozen dataclasses out; cheap (a partial sort of the
values, or the counts the prepared reference already holds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from detectors._columns import PreparedReference

#: Hill's estimate below which a column's tail counts as heavy. Measured on 200
#: references per size (500 to 100,000 rows; see ``tests/detectors/test_reference_limits.py``
#: and the README): normal, uniform and exponential columns never went below 2.4
#: (exponential, 1,000 rows), t(1.5), Pareto 1.5 and log-normal sigma 2 stayed under
#: 1.9 from 10,000 rows on (under 2 for most references of 1,000 rows)
HEAVY_TAIL_INDEX = 2.0
#: the top order statistics Hill's estimator reads: this share of the values ...
TAIL_SHARE = 0.02
#: ... and at least this many
MIN_TAIL_POINTS = 10
#: fewest finite values to estimate a tail from (below, 10 points are over 2 % of the
#: values, and an exponential column's estimate falls under 2 for some references)
MIN_TAIL_ROWS = 500


@dataclass(frozen=True)
class TailIndex:
    """Hill's tail-index estimate of one numerical column.

    ``index``: the estimate (larger is lighter; ``inf`` for a column whose top
    deviations are all equal, e.g. a bounded or mostly constant column; NaN when
    not estimated: fewer than :data:`MIN_TAIL_ROWS` finite values). ``points``: the
    order statistics it used. ``rows``: finite values read.
    """

    index: float
    points: int
    rows: int

    @property
    def heavy(self) -> bool:
        """Whether the tail is heavier than :data:`HEAVY_TAIL_INDEX` (False when not estimated)."""
        return not math.isnan(self.index) and self.index < HEAVY_TAIL_INDEX


def tail_index(sorted_values: np.ndarray) -> TailIndex:
    """Hill's estimate of the tail index of ``|x - median|`` (both tails at once).

    ``sorted_values``: the column's finite values in ascending order (a prepared
    reference's ``sorted_values``; NaN and infinities must be removed). With ``k =
    max(10, 2 % of n)``: ``1 / mean(ln(d_i / d_(k+1)))`` over the ``k`` largest
    deviations ``d_i`` from the median, ``d_(k+1)`` the next one, where ``n`` counts
    only the values off the median (a point mass at the median is no tail). Reads only
    the ``k + 1`` values at each end (no full sort). A column whose ``k + 1`` largest
    deviations are equal (or zero), or with at most :data:`MIN_TAIL_POINTS` values off
    its median, gives ``inf``: no tail to speak of; NaN (not estimated) when fewer than
    :data:`MIN_TAIL_ROWS` values are off the median.
    """
    s = np.asarray(sorted_values, dtype=np.float64)
    n = int(s.shape[0])
    if n < MIN_TAIL_ROWS:
        return TailIndex(math.nan, 0, n)
    mid = n // 2
    median = float(s[mid]) if n % 2 else 0.5 * (float(s[mid - 1]) + float(s[mid]))
    # the tail is a share of the values off the median: a point mass there (counts of rare
    # events, mostly-zero amounts) would otherwise put the bulk's few small values among
    # the "largest" deviations, and a light tail would read as heavy
    off = n - int(s.searchsorted(median, "right") - s.searchsorted(median, "left"))
    if off < MIN_TAIL_ROWS:
        return TailIndex(math.inf if off <= MIN_TAIL_POINTS else math.nan, 0, n)
    k = max(MIN_TAIL_POINTS, int(off * TAIL_SHARE))
    # the k + 1 largest deviations are among the k + 1 values at either end
    ends = np.concatenate((median - s[: k + 1], s[-(k + 1):] - median))
    top = np.sort(ends)[-(k + 1):]
    u = top[0]
    if not u > 0:
        return TailIndex(math.inf, k, n)
    g = float(np.mean(np.log(top[1:] / u)))
    return TailIndex(1.0 / g if g > 0 else math.inf, k, n)


@dataclass(frozen=True)
class SparseTail:
    """How many of a column's reference values are rare, and what that means for a window.

    ``rows``: non-missing reference values; ``distinct``: distinct values among them;
    ``singletons`` / ``doubletons``: distinct values seen exactly once / twice;
    ``window_rows``: the window size ``unseen_chance`` is for.
    """

    rows: int
    distinct: int
    singletons: int
    doubletons: int
    window_rows: int

    @property
    def singleton_share(self) -> float:
        """Share of the distinct values seen once (0 for an empty column)."""
        return self.singletons / self.distinct if self.distinct else 0.0

    @property
    def unseen_chance(self) -> float:
        """Good–Turing's chance that a window of ``window_rows`` rows holds at least one
        value the reference lacks: each row is one with probability ``singletons / rows``.
        1 when every value was seen once; 0 without singletons (then Good–Turing sees no unseen mass, though a column whose
        rarest values were seen a few times may still have one: see :attr:`sparse`)."""
        if not self.rows or not self.singletons:
            return 0.0
        if self.singletons >= self.rows:  # every value seen once: log1p(-1) is a domain error
            return 1.0
        return float(-math.expm1(self.window_rows * math.log1p(-self.singletons / self.rows)))

    @property
    def sparse(self) -> bool:
        """Whether any value was seen only once or twice: a bootstrap of the reference
        then often lacks it while its pseudo-window holds it (chi-square p = 0)."""
        return self.singletons + self.doubletons > 0


def sparse_tail(counts: np.ndarray, window_rows: int) -> SparseTail:
    """Count the rare values among a column's reference value counts.

    ``counts``: how often each distinct non-missing value occurs (a prepared
    column's ``counts`` or ``unique_counts``; zeros are ignored); ``window_rows``:
    the rows of a window (at least 1; for time windows pass a typical size).
    """
    c = np.asarray(counts, dtype=np.int64)
    c = c[c > 0]
    return SparseTail(
        rows=int(c.sum()), distinct=int(c.shape[0]), singletons=int(np.count_nonzero(c == 1)),
        doubletons=int(np.count_nonzero(c == 2)), window_rows=max(int(window_rows), 1),
    )


#: tests whose calibrated thresholds heavy tails break (measured: Wasserstein; Jensen–Shannon's
#: shared bins shrink with a new extreme, so its false alarms stay under ``alpha_column``;
#: KS reads ranks only)
HEAVY_TAIL_TESTS: frozenset[str] = frozenset({"wasserstein"})
#: tests scoring p = 0 for a window holding a value the reference lacks
SPARSE_TAIL_TESTS: frozenset[str] = frozenset({"chisquare"})


@dataclass(frozen=True)
class ColumnLimit:
    """A column whose calibrated threshold cannot hold ``alpha_column``: ``tail`` for a
    heavy tail under a test of :data:`HEAVY_TAIL_TESTS`, ``sparse`` for rare values
    under one of :data:`SPARSE_TAIL_TESTS` (exactly one of them is set)."""

    column: str
    test: str
    tail: TailIndex | None = None
    sparse: SparseTail | None = None


def column_limits(prepared: PreparedReference, window_rows: int) -> tuple[ColumnLimit, ...]:
    """The columns of ``prepared`` (its specs naming concrete tests: ``auto`` resolved,
    see :func:`detectors.resolve_specs`) whose test the reference breaks, in spec order.

    ``window_rows``: rows of a window (what the chance of an unseen value is for).
    Columns under other tests, empty columns and references too small to estimate a
    tail from (:data:`MIN_TAIL_ROWS`) give nothing. Cost: a sort of ``2 k + 2``
    values per distance column, a pass over the counts per chi-square column.
    """
    out: list[ColumnLimit] = []
    for spec in prepared.specs:
        col = prepared.columns[spec.name]
        if col.n == 0:
            continue
        if spec.method in HEAVY_TAIL_TESTS and col.kind == "numerical":
            t = tail_index(col.sorted_values)
            if t.heavy:
                out.append(ColumnLimit(spec.name, spec.method, tail=t))
        elif spec.method in SPARSE_TAIL_TESTS:
            counts = col.unique_counts if col.kind == "numerical" else col.counts
            s = sparse_tail(counts, window_rows)
            if s.sparse:
                out.append(ColumnLimit(spec.name, spec.method, sparse=s))
    return tuple(out)
