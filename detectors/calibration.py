"""Thresholds calibrated on the reference itself, at a chosen false-alarm level.

Evidently's thresholds (0.05 for p-values, 0.1 for distances) are the same for
every column and every window size, so how often a stationary window crosses
them depends on the data: a distance's noise shrinks like ``1/sqrt(n)``, ties
make p-values conservative, and a dataset verdict "half the columns drifted"
ignores how many columns there are and how they move together.

:func:`calibrate` estimates, once per reference, each column's score
distribution under "no change" and sets thresholds from it:

1. **Resamples.** Under "no change" the reference and a window are two
   independent samples of one distribution, of ``n_ref`` and ``n`` rows. The
   best estimate of that distribution is the reference itself, so each draw
   is a pooled bootstrap of the real comparison: a pseudo-reference of
   ``n_ref`` rows and a pseudo-window of ``n`` rows, both drawn *with
   replacement* from the reference, scored with the column's test. Sizes are
   the real ones, so the null distribution is the real test's, whatever the
   ratio ``n / n_ref`` (windows larger than the reference included; a test
   whose no-change score grows with ``n / n_ref``, like Evidently's
   chi-square, which takes the reference shares as exact, is calibrated
   where it is used). Each pseudo-reference is scored against a few
   pseudo-windows per size: up to ``resamples / splits`` for windows much
   smaller than the reference, two for windows larger than it (there most
   of a score's noise is the reference's own, so many draws sharing one
   pseudo-reference would be nearly copies: the flaw of drawing windows from a
   fixed half of the reference, which left 50 distinct scores of 400); the
   count keeps the draws' design effect at most 2. Every draw scores
   all columns on the *same* rows, so the dependence between columns is kept.
2. **Per-column null model.** Scores are turned into a *badness* (the
   distance itself, or ``-ln p`` for p-value tests). Per calibration size the
   model keeps the badness quantiles down to the upper 10 % and, beyond, an
   exponential tail fitted to the excesses over the 90th percentile
   (``-ln p`` of an exact p-value is exactly exponential; for distances,
   whose tails are lighter, it errs on the quiet side). Thresholds and
   calibrated p-values for any window size are interpolated in the
   *effective size* ``n_eff = n_ref * n_cur / (n_ref + n_cur)`` (log-log for
   distances), which is what the noise of a two-sample score depends on; so
   the same model serves the full reference, time windows of any size, and a
   rolling reference of any size.
3. **Dataset verdict.** With each column at false-alarm level
   ``alpha_column``, the number of drifted columns among ``m`` is modelled as
   beta-binomial: mean ``m * alpha_column``, over-dispersion (intra-class
   correlation ``rho``) estimated from the resamples' counts. The dataset
   drifts when at least ``k`` columns drift, ``k`` the smallest count whose
   tail probability is at most ``alpha``; when no count reaches ``alpha``
   (e.g. one column with ``alpha_column > alpha``), ``k = m``.

Limits: resampling cannot draw a value more extreme than the reference holds,
so for heavy-tailed columns (tail index below ~2) a window's extremes make
distances larger than any draw and the false-alarm rate exceeds
``alpha_column`` (see the README's "Choosing thresholds";
:func:`detectors.reference_limits.column_limits` names such columns, and chi-square
columns with rare values, from the reference). A reference of fewer
than :data:`MIN_CALIBRATION_ROWS` rows is refused: its bootstrap is too coarse.

Everything is seeded: the same reference and settings give the same
thresholds, before and after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import betaln, gammaln

from detectors._columns import (
    BinsMode,
    CurrentColumn,
    PreparedColumn,
    PreparedReference,
    prepare_reference,
)
from detectors.drift.auto import auto_test_name
from detectors.drift.registry import ScoreKind, get_test
from detectors.spec import ColumnSpec

#: upper-tail probabilities of the stored body quantiles (the tail starts at the last)
BODY_PROBS: tuple[float, ...] = (0.99, 0.9, 0.75, 0.5, 0.25, 0.1)
TAIL_START = BODY_PROBS[-1]
#: fewest reference rows calibration accepts. Measured (README "Choosing thresholds"):
#: below ~100 rows a binary or rare category is absent from many bootstrap draws and
#: the per-column false alarms of z-test / chi-square / KS run 2-20x ``alpha_column``
MIN_CALIBRATION_ROWS = 100
#: time windows (size unknown): the calibration grid stops at this many times the
#: reference's rows (beyond, a score's no-change distribution barely moves for tests
#: of the effective size, which tends to ``n_ref``) ...
GRID_REFERENCE_MULTIPLE = 4
#: ... and at this many rows (start-up cost), count windows too; larger windows are extrapolated
GRID_MAX_ROWS = 50_000
_TINY = 1e-12
_MIN_P = 1e-300


def badness(score: float, score_kind: ScoreKind) -> float:
    """A score as "larger is worse": the distance itself, or ``-ln p`` (NaN stays NaN)."""
    if math.isnan(score):
        return math.nan
    if score_kind == "p_value":
        return -math.log(min(max(score, _MIN_P), 1.0))
    return max(score, 0.0)


def effective_size(n_ref: int, n_cur: int) -> float:
    """``n_ref * n_cur / (n_ref + n_cur)``: the two-sample size a score's noise follows."""
    if n_ref <= 0 or n_cur <= 0:
        return 0.0
    return n_ref * n_cur / (n_ref + n_cur)


@dataclass(frozen=True)
class NullModel:
    """One column's score distribution under no change, at several effective sizes.

    ``n_eff`` ascending; per size ``body`` holds the badness quantiles at
    :data:`BODY_PROBS` and ``tail_beta`` the mean excess over the last one (the
    exponential tail). ``score_kind`` is the test's: thresholds come back in the
    test's own units (a p-value or a distance).
    """

    column: str
    test: str
    score_kind: ScoreKind
    n_eff: tuple[float, ...]
    body: tuple[tuple[float, ...], ...]
    tail_beta: tuple[float, ...]

    def _log_scale(self) -> bool:
        return self.score_kind == "distance"

    def _at(self, n_eff: float) -> tuple[np.ndarray, float]:
        """Body quantiles and tail scale interpolated at ``n_eff`` (log n axis).

        Outside the calibrated sizes distances extrapolate log-log from the nearest
        two; p-value badness is held below the smallest size and, above the largest,
        continues the last step's growth (never a decrease).
        """
        sizes = np.log(np.asarray(self.n_eff))
        body = np.asarray(self.body)
        beta = np.log(np.maximum(np.asarray(self.tail_beta), _TINY))
        x = math.log(max(n_eff, 1.0))
        tr = np.log(np.maximum(body, _TINY)) if self._log_scale() else body
        if sizes.shape[0] == 1:
            q, b = tr[0], beta[0]
            if self._log_scale():  # one size only: distances scale like 1/sqrt(n_eff)
                q = q - 0.5 * (x - sizes[0])
                b = b - 0.5 * (x - sizes[0])
        else:
            if x <= sizes[0]:
                i = 0
            elif x >= sizes[-1]:
                i = sizes.shape[0] - 2
            else:
                i = int(np.searchsorted(sizes, x)) - 1
            w = (x - sizes[i]) / (sizes[i + 1] - sizes[i])
            if not self._log_scale() and w > 1.0:
                # p-value badness above the largest size: the last step's growth goes on
                # (chi-square's no-change score grows with window / reference rows), a
                # decrease does not (KS's is flat: any slope there is noise)
                q = tr[i + 1] + (w - 1.0) * np.maximum(tr[i + 1] - tr[i], 0.0)
                b = beta[i + 1] + (w - 1.0) * max(beta[i + 1] - beta[i], 0.0)
            else:
                if not self._log_scale():
                    w = max(w, 0.0)  # p-value badness: no extrapolation below the smallest size
                q = tr[i] + w * (tr[i + 1] - tr[i])
                b = beta[i] + w * (beta[i + 1] - beta[i])
        q = np.maximum.accumulate(q)  # quantiles must not decrease
        if self._log_scale():
            q = np.exp(q)
        return q, float(math.exp(b))

    def badness_threshold(self, n_eff: float, alpha: float) -> float:
        """Badness crossed with probability ``alpha`` by a stationary window."""
        q, beta = self._at(n_eff)
        if alpha >= TAIL_START:
            probs = np.log(np.asarray(BODY_PROBS))
            return float(np.interp(-math.log(alpha), -probs, q))
        return float(q[-1] + beta * math.log(TAIL_START / alpha))

    def threshold(self, n_eff: float, alpha: float) -> float:
        """The score threshold in the test's own units (a p-value or a distance)."""
        b = self.badness_threshold(n_eff, alpha)
        return math.exp(-b) if self.score_kind == "p_value" else b

    def p_value(self, n_eff: float, score: float) -> float:
        """Calibrated p-value: how often a stationary window scores at least this badly."""
        b = badness(score, self.score_kind)
        if math.isnan(b):
            return math.nan
        q, beta = self._at(n_eff)
        if b >= q[-1]:
            return float(TAIL_START * math.exp(-(b - q[-1]) / max(beta, _TINY)))
        if b <= q[0]:
            return 1.0
        logp = np.log(np.asarray(BODY_PROBS))
        return float(math.exp(np.interp(b, q, logp)))


@dataclass(frozen=True)
class Calibration:
    """Per-column null models and the dataset verdict's count table.

    ``min_drifted[m]`` is the number of drifted columns (among ``m`` with a
    defined score) from which the dataset drifts; index 0 is unused.
    ``rho`` is the estimated intra-class correlation of the columns' false
    alarms (0: independent). ``sizes`` are the window sizes drawn.
    """

    alpha_column: float
    alpha: float
    columns: Mapping[str, NullModel]
    min_drifted: tuple[int, ...]
    rho: float
    sizes: tuple[int, ...]
    resamples: int

    def dataset_threshold(self, m: int) -> int:
        """Drifted columns needed among ``m`` defined ones (0 when ``m`` is 0)."""
        if m <= 0:
            return 0
        if m < len(self.min_drifted):
            return self.min_drifted[m]
        return _min_drifted(m, self.alpha_column, self.rho, self.alpha)


#: the version of :func:`calibrate`'s method and defaults (bump it when either changes): a
#: stored calibration (see :func:`calibration_to_dict`) of another version is not reused
CALIBRATION_VERSION = 2


def calibration_to_dict(cal: Calibration) -> dict[str, Any]:
    """``cal`` as plain JSON-able values (floats, ints, strings, lists), with
    :data:`CALIBRATION_VERSION`; :func:`calibration_from_dict` reads it back equal."""
    return {
        "version": CALIBRATION_VERSION,
        "alpha_column": cal.alpha_column, "alpha": cal.alpha, "rho": cal.rho,
        "min_drifted": list(cal.min_drifted), "sizes": list(cal.sizes), "resamples": cal.resamples,
        "columns": [
            {"column": m.column, "test": m.test, "score_kind": m.score_kind, "n_eff": list(m.n_eff),
             "body": [list(b) for b in m.body], "tail_beta": list(m.tail_beta)}
            for m in cal.columns.values()
        ],
    }


def calibration_from_dict(data: Mapping[str, Any]) -> Calibration:
    """The :class:`Calibration` :func:`calibration_to_dict` wrote; ``ValueError`` when
    ``data`` is not one of this :data:`CALIBRATION_VERSION` (or malformed)."""
    try:
        if data["version"] != CALIBRATION_VERSION:
            raise ValueError(f"calibration version {data['version']!r}, expected {CALIBRATION_VERSION}")
        columns = {
            c["column"]: NullModel(
                column=str(c["column"]), test=str(c["test"]), score_kind=c["score_kind"],
                n_eff=tuple(float(x) for x in c["n_eff"]),
                body=tuple(tuple(float(x) for x in b) for b in c["body"]),
                tail_beta=tuple(float(x) for x in c["tail_beta"]),
            )
            for c in data["columns"]
        }
        return Calibration(
            alpha_column=float(data["alpha_column"]), alpha=float(data["alpha"]), columns=columns,
            min_drifted=tuple(int(x) for x in data["min_drifted"]), rho=float(data["rho"]),
            sizes=tuple(int(x) for x in data["sizes"]), resamples=int(data["resamples"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a stored calibration: {exc!r}") from None


def beta_binomial_tail(m: int, a: float, rho: float) -> np.ndarray:
    """``P(C >= k)`` for k = 0..m, C beta-binomial with mean ``m*a`` and
    intra-class correlation ``rho`` (``rho = 0``: binomial)."""
    k = np.arange(m + 1)
    a = min(max(a, 1e-12), 1 - 1e-12)
    if rho <= 1e-9:
        logpmf = (
            gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
            + k * math.log(a) + (m - k) * math.log1p(-a)
        )
    else:
        s = (1.0 - rho) / rho
        al, be = a * s, (1 - a) * s
        logpmf = (
            gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
            + betaln(k + al, m - k + be) - betaln(al, be)
        )
    pmf = np.exp(logpmf - np.max(logpmf))
    pmf /= pmf.sum()
    return np.cumsum(pmf[::-1])[::-1]


def _min_drifted(m: int, a: float, rho: float, alpha: float) -> int:
    tail = beta_binomial_tail(m, a, rho)
    ok = np.flatnonzero(tail[1:] <= alpha)
    return int(ok[0]) + 1 if ok.shape[0] else m


def resolve_specs(prepared: PreparedReference) -> tuple[ColumnSpec, ...]:
    """The specs with ``auto`` replaced by the test Evidently picks for the reference
    itself, so calibration and every window use one fixed test per column."""
    out = []
    for spec in prepared.specs:
        if spec.method != "auto":
            out.append(spec)
            continue
        ref = prepared.columns[spec.name]
        values: Any = ref.sorted_values if ref.kind == "numerical" else np.asarray(ref.categories, dtype=object)
        name = auto_test_name(ref, CurrentColumn(ref.kind, values, ref))
        out.append(ColumnSpec(spec.name, spec.kind, name, spec.threshold))
    return tuple(out)


def calibration_sizes(window_rows: int | None, reference_rows: int, min_rows: int) -> tuple[int, ...]:
    """Window sizes (rows) to calibrate at; each is drawn at its own size, so any size works.

    A known window size (count windows) gives that size and two neighbours, half
    and twice it (a rolling reference or a short window interpolates between
    them), none above :data:`GRID_MAX_ROWS` (sizes beyond it are replaced by it
    and half of it, and extrapolated). Otherwise (time windows) a geometric grid (factor 4) from ``min_rows``
    (at least 2) up to :data:`GRID_REFERENCE_MULTIPLE` times ``reference_rows``,
    capped at :data:`GRID_MAX_ROWS` (start-up cost), the cap included as the
    last size; larger windows are extrapolated (:meth:`NullModel.threshold`).
    """
    lo = max(min_rows, 2)
    if window_rows:
        cands = {max(c, lo) for c in (window_rows // 2, window_rows, window_rows * 2)}
        if max(cands) > GRID_MAX_ROWS:  # start-up cost: extrapolate from the cap and half of it
            cands = {min(c, GRID_MAX_ROWS) for c in cands} | {max(GRID_MAX_ROWS // 2, lo)}
        return tuple(sorted(cands))
    hi = max(min(GRID_REFERENCE_MULTIPLE * max(reference_rows, 1), GRID_MAX_ROWS), lo)
    cands = []
    n = lo
    while n < hi:
        cands.append(n)
        n *= 4
    cands.append(hi)
    return tuple(sorted(set(cands)))


def _spread(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Per row, the interval a resampled copy of a continuous column's value is drawn in.

    A numerical column whose finite reference values are all distinct is continuous
    data: a real window would not repeat a reference value, but a draw with
    replacement does, and ties make rank and distribution-function tests (KS above
    all) score smaller than the real comparison, most when the window outnumbers the
    reference. Such a column is drawn from the reference's linearly interpolated
    distribution function instead: each drawn row's value uniformly within halfway
    to its sorted neighbours (never beyond the reference's range). Returns
    ``(low, width)`` per row (NaN for missing values), or ``None`` for a column with
    ties (ties are then the data's own, kept) or fewer than 2 finite values.
    """
    x = np.asarray(values, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(x))
    if finite.shape[0] < 2:
        return None
    order = finite[np.argsort(x[finite], kind="stable")]
    s = x[order]
    if not np.all(np.diff(s) > 0):
        return None
    mid = (s[1:] + s[:-1]) / 2
    lo_s = np.concatenate(([s[0]], mid))
    hi_s = np.concatenate((mid, [s[-1]]))
    low = np.full(x.shape[0], np.nan)
    width = np.full(x.shape[0], np.nan)
    low[order] = lo_s
    width[order] = hi_s - lo_s
    return low, width


def calibrate(
    ref_columns: Mapping[str, Any],
    specs: Sequence[ColumnSpec],
    *,
    sizes: Sequence[int],
    alpha_column: float = 0.01,
    alpha: float = 0.01,
    bins: BinsMode = "evidently",
    resamples: int = 400,
    splits: int = 25,
    seed: int = 0,
) -> Calibration:
    """Calibrate every spec column on the reference (see the module documentation).

    ``specs`` must name concrete tests (see :func:`resolve_specs`). ``sizes``
    are window row counts; each gets about ``resamples`` draws, at most
    ``resamples / splits`` against each pseudo-reference (a bootstrap sample of
    the reference at its own size), fewer as the window nears the reference's
    size (down to two each for windows larger than the reference: their
    score's noise is mostly the reference's). Cost: ``len(sizes) * resamples``
    scorings per column (about 0.1 ms each at 1,000 rows, growing like
    ``n log n``), plus one preparation of the reference's size per
    pseudo-reference (``splits`` to ``resamples / 2``).
    Raises ``ValueError`` for levels outside (0, 0.5], no sizes, a reference
    of fewer than 4 rows or an ``auto`` spec.
    """
    if not (0 < alpha_column <= 0.5 and 0 < alpha <= 0.5):
        raise ValueError("alpha_column and alpha must be in (0, 0.5]")
    if any(s.method == "auto" for s in specs):
        raise ValueError("calibrate needs concrete tests; resolve 'auto' first (resolve_specs)")
    specs = tuple(specs)
    n_rows = max((len(np.asarray(ref_columns[s.name])) for s in specs), default=0)
    if n_rows < 4 or not sizes:
        raise ValueError("calibration needs at least 4 reference rows and one size")
    rng = np.random.default_rng(seed)
    sizes = tuple(sorted(set(int(s) for s in sizes)))
    per_ref = max(1, math.ceil(resamples / splits))
    names = [s.name for s in specs]
    # bad[size][column] -> list of badness values; neff[size][column] -> list of n_eff
    bad = {n: {c: [] for c in names} for n in sizes}  # type: dict[int, dict[str, list[float]]]
    neff = {n: {c: [] for c in names} for n in sizes}  # type: dict[int, dict[str, list[float]]]
    tests = {s.name: get_test(s.method) for s in specs}
    values = {s.name: np.asarray(ref_columns[s.name]) for s in specs}
    spread = {s.name: sp for s in specs if s.kind == "numerical" and (sp := _spread(values[s.name])) is not None}

    def draw(idx: np.ndarray) -> dict[str, np.ndarray]:
        # one uniform per row serves every smoothed column: it only places a value
        # within its own gap, so sharing it costs nothing but a fifth of the draw's time
        u = rng.random(idx.shape[0]) if spread else np.empty(0)
        out = {}
        for name, v in values.items():
            sp = spread.get(name)
            out[name] = v[idx] if sp is None else sp[0][idx] + u * sp[1][idx]
        return out

    # draws per pseudo-reference: a window's score shares the share n / (n_rows + n) of
    # its no-change variance with the others of its pseudo-reference (n_eff / n_ref), so
    # windows as large as the reference need a pseudo-reference each, small ones share
    # one; the count keeps the design effect 1 + (k - 1) * share at most 2
    per_size = {n: max(1, min(per_ref, 1 + int((n_rows + n) / n))) for n in sizes}
    wanted = {n: math.ceil(resamples / k) for n, k in per_size.items()}
    for j in range(max(splits, *wanted.values())):
        # a pseudo-reference of the reference's own size, drawn with replacement
        ref = prepare_reference(draw(rng.integers(0, n_rows, n_rows)), specs, bins=bins)
        for n in sizes:
            if j >= wanted[n]:
                continue
            for _ in range(per_size[n]):
                cols = draw(rng.integers(0, n_rows, n))  # a pseudo-window, independent of it
                for s in specs:
                    col: PreparedColumn = ref.columns[s.name]
                    cur = CurrentColumn(s.kind, cols[s.name], col)
                    if col.n == 0 or cur.n == 0:
                        continue
                    with np.errstate(all="ignore"):
                        score = tests[s.name].score(col, cur, ref.bins)
                    b = badness(score, tests[s.name].score_kind)
                    if math.isnan(b):
                        continue
                    bad[n][s.name].append(b)
                    neff[n][s.name].append(effective_size(col.n, cur.n))
    models: dict[str, NullModel] = {}
    for s in specs:
        grid, body, beta = [], [], []
        for n in sizes:
            values = np.asarray(bad[n][s.name])
            if values.shape[0] < 10:
                continue
            qs = np.quantile(values, [1 - p for p in BODY_PROBS])
            u = qs[-1]
            excess = values[values > u] - u
            grid.append(float(np.median(neff[n][s.name])))
            body.append(tuple(float(v) for v in qs))
            beta.append(float(excess.mean()) if excess.shape[0] else _TINY)
        if not grid:
            continue  # an all-missing (or constant) column: no model, never drifts
        order = [int(i) for i in np.argsort(grid, kind="stable")]
        # sizes whose draws have the same effective size (a column mostly missing): keep one
        order = [i for j, i in enumerate(order) if j == 0 or grid[i] > grid[order[j - 1]]]
        models[s.name] = NullModel(
            column=s.name,
            test=tests[s.name].name,
            score_kind=tests[s.name].score_kind,
            n_eff=tuple(grid[i] for i in order),
            body=tuple(body[i] for i in order),
            tail_beta=tuple(beta[i] for i in order),
        )
    rho = _dependence(bad, neff, models, sizes, alpha_column)
    m = len(specs)
    table = (0,) + tuple(_min_drifted(j, alpha_column, rho, alpha) for j in range(1, m + 1))
    return Calibration(alpha_column, alpha, models, table, rho, sizes, resamples)


def _dependence(
    bad: Mapping[int, Mapping[str, list[float]]],
    neff: Mapping[int, Mapping[str, list[float]]],
    models: Mapping[str, NullModel],
    sizes: Sequence[int],
    alpha_column: float,
) -> float:
    """Intra-class correlation of the columns' exceedances, pooled over sizes.

    Per draw, count the columns whose badness exceeds their threshold at a
    level generous enough to see co-movement (``max(alpha_column, 0.1)``);
    ``rho`` follows from the variance of that count against the binomial's.
    Exceedances at the generous level estimate the dependence at
    ``alpha_column`` (the usual working assumption of a constant correlation).
    """
    cols = [c for c in models if all(len(bad[n][c]) for n in sizes)]
    m = len(cols)
    if m < 2:
        return 0.0
    level = max(alpha_column, TAIL_START)
    rhos, weights = [], []
    for n in sizes:
        lengths = {len(bad[n][c]) for c in cols}
        if len(lengths) != 1:  # some draws undefined for some columns: not aligned
            continue
        hits = np.zeros(lengths.pop())
        for c in cols:
            b = np.asarray(bad[n][c])
            t = models[c].badness_threshold(float(np.median(neff[n][c])), level)
            hits += b > t
        a = hits.mean() / m
        if not (0 < a < 1):
            continue
        r = (hits.var() / (m * a * (1 - a)) - 1.0) / (m - 1)
        rhos.append(r)
        weights.append(hits.shape[0])
    if not rhos:
        return 0.0
    return float(min(max(np.average(rhos, weights=weights), 0.0), 0.99))
