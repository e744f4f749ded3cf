"""Column and dataset drift: run the configured test per column and aggregate."""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from detectors._columns import CurrentColumn, PreparedColumn, PreparedReference, as_current
from detectors._fast_init import fast_init
from detectors.calibration import Calibration, beta_binomial_tail, effective_size
from detectors.drift.auto import auto_test_name
from detectors.drift.binned import jensenshannon, jensenshannon_many
from detectors.drift.distance import wasserstein, wasserstein_many
from detectors.drift.registry import DriftTest, get_test

ScoreKind = Literal["p_value", "distance"]


@fast_init
@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """Drift verdict for one column in one window.

    ``score`` is a p-value (``score_kind="p_value"``, drift when low) or a
    distance (drift when high); ``threshold`` is the one actually applied.
    ``score`` is NaN — and ``drifted`` False — when the test is undefined
    (no non-missing values on either side, too few values for the test).
    When Benjamini–Hochberg correction was applied, ``score`` is the adjusted
    p-value and ``raw_score`` the unadjusted one; otherwise ``raw_score``
    equals ``score``.
    """

    column: str
    kind: str
    test: str
    score: float
    threshold: float
    drifted: bool
    score_kind: ScoreKind
    raw_score: float = math.nan
    reference_n: int = 0
    current_n: int = 0
    #: calibrated p-value (``thresholds="calibrated"``): how often a stationary
    #: window of this size scores at least this badly; NaN otherwise
    calibrated_p: float = math.nan
    #: whether ``threshold`` was calibrated on the reference (``thresholds="calibrated"``)
    calibrated: bool = False

    @property
    def defined(self) -> bool:
        return not math.isnan(self.score)


@dataclass(frozen=True)
class DatasetDrift:
    """Per-column verdicts and the dataset-level share.

    ``n_columns`` counts columns with a defined score; columns whose score is
    NaN (see :class:`ColumnDrift`) are listed in ``undefined_columns`` and left
    out of the share. ``dataset_drifted`` is ``share >= share_threshold`` (as
    Evidently compares); with no defined column the share is 0.0 and nothing
    drifts.
    """

    columns: tuple[ColumnDrift, ...]
    drifted_count: int
    n_columns: int
    share: float
    share_threshold: float
    dataset_drifted: bool
    multiple_testing: str | None = None
    undefined_columns: tuple[str, ...] = ()
    #: "evidently" (fixed thresholds, a share of columns) or "calibrated"
    thresholds: str = "evidently"
    #: verdicts of :func:`dataset_drift`'s ``also`` columns, in that order: each as
    #: :func:`column_drift` gives it alone, outside the share and any adjustment
    also: tuple[ColumnDrift, ...] = ()

    def __getitem__(self, column: str) -> ColumnDrift:
        for c in self.columns:
            if c.column == column:
                return c
        raise KeyError(column)

    @property
    def drifted_columns(self) -> tuple[ColumnDrift, ...]:
        return tuple(c for c in self.columns if c.drifted)


def _resolve_test_name(ref: PreparedColumn, cur: CurrentColumn) -> str:
    method = ref.spec.method
    return auto_test_name(ref, cur) if method == "auto" else get_test(method).name


def _column_drift(
    ref: PreparedColumn, cur: CurrentColumn, bins: str, test: DriftTest | None = None,
    score: float | None = None,
) -> ColumnDrift:
    """The verdict of ``test`` (default: the column's, resolved) on one column; ``score``
    when the caller already computed it (:func:`_batched_scores`)."""
    if test is None:
        test = get_test(_resolve_test_name(ref, cur))
    threshold = test.default_threshold if ref.spec.threshold is None else float(ref.spec.threshold)
    if ref.n == 0 or cur.n == 0:
        score = math.nan
    elif score is None:
        with np.errstate(all="ignore"):
            score = test.score(ref, cur, bins)
    return ColumnDrift(
        column=ref.name,
        kind=ref.kind,
        test=test.name,
        score=score,
        threshold=threshold,
        drifted=test.is_drift(score, threshold),
        score_kind=test.score_kind,
        raw_score=score,
        reference_n=ref.n,
        current_n=cur.n,
    )


#: Wasserstein columns are scored together when reference and window each have at most this
#: many values: the per-column overhead they save dominates small windows, while for large
#: ones copying both sides into 2-d arrays costs more than it saves
BATCH_MAX_VALUES = 8192


def _batch_key(ref: PreparedColumn, cur: CurrentColumn, test: DriftTest, bins: str) -> tuple[Any, ...] | None:
    """The group a column is scored in by :func:`_batched_scores` (None: alone). Wasserstein
    columns group by reference and window sizes (both at most :data:`BATCH_MAX_VALUES`);
    categorical Jensen–Shannon columns binned per window (not on fixed bins) all together
    (:func:`jensenshannon_many` groups them by their number of categories)."""
    if ref.n == 0 or cur.n == 0:
        return None
    if test.func is wasserstein:
        return ("w", ref.n, cur.n) if ref.n <= BATCH_MAX_VALUES and cur.n <= BATCH_MAX_VALUES else None
    if test.func is jensenshannon and ref.kind == "categorical" and (bins != "fixed" or ref.fixed_ref_counts is None):
        return ("js",)
    return None


def _batched_scores(jobs: Sequence[tuple[PreparedColumn, CurrentColumn, DriftTest]], bins: str) -> dict[int, float]:
    """Scores of the columns computed together, by job index: columns of the same group
    (:func:`_batch_key`) are scored in one 2-d pass (:func:`wasserstein_many`,
    :func:`jensenshannon_many`, each identical to one column at a time). Columns in no
    group of two or more are left to :func:`_column_drift`."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, (ref, cur, test) in enumerate(jobs):
        key = _batch_key(ref, cur, test, bins)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out: dict[int, float] = {}
    for key, idx in groups.items():
        if len(idx) < 2:
            continue
        with np.errstate(all="ignore"):
            if key[0] == "w":
                got = wasserstein_many([jobs[i][0] for i in idx], [jobs[i][1].values for i in idx])
            else:
                got = jensenshannon_many([jobs[i][0] for i in idx], [jobs[i][1] for i in idx])
        out.update(zip(idx, got, strict=True))
    return out


def column_drift(prepared: PreparedReference, column: str, values: Any) -> ColumnDrift:
    """Drift of one column of a window against the prepared reference.

    ``values``: float64 array (NaN = missing, ±inf dropped like NaN) for a
    numerical column, object array (None/NaN = missing) for a categorical one.
    Never raises on data: an empty or all-missing window (or reference) gives
    ``score=NaN, drifted=False`` where Evidently would raise; ``auto`` still
    names the test it would have chosen. Raises ``KeyError`` for a column
    that has no spec.
    """
    ref = prepared.columns[column]
    return _column_drift(ref, as_current(ref, values), prepared.bins)


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (NaN entries stay NaN, excluded from m)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="stable")
    ranked = pv[order] * m / np.arange(1, m + 1)
    adj = np.minimum.accumulate(ranked[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return out


_EXECUTORS: dict[int, ThreadPoolExecutor] = {}
_EXECUTORS_LOCK = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    with _EXECUTORS_LOCK:
        ex = _EXECUTORS.get(workers)
        if ex is None:
            ex = _EXECUTORS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="detectors")
        return ex


def run_jobs(jobs: Sequence[Callable[[], Any]], workers: int) -> list[Any]:
    """Run independent jobs, on a shared thread pool when ``workers > 1``.

    numpy releases the GIL in sorts and array arithmetic, so per-column work
    on large windows runs truly in parallel; results keep the jobs' order.
    """
    if workers <= 1 or len(jobs) < 2:
        return [job() for job in jobs]
    return list(_executor(workers).map(lambda job: job(), jobs))


def dataset_drift(
    prepared: PreparedReference,
    current_columns: Mapping[str, Any],
    columns: Sequence[str] | None = None,
    share_threshold: float = 0.5,
    multiple_testing: Literal["bh"] | None = None,
    *,
    workers: int = 1,
    also: Sequence[str] = (),
) -> DatasetDrift:
    """Drift of every (or the named) spec column and the share of drifted columns.

    ``columns=None`` tests every spec in spec order. ``multiple_testing="bh"``
    replaces the p-values of p-value tests by Benjamini–Hochberg adjusted ones
    (controlling the false discovery rate across the window's columns) before
    comparing with each column's threshold; distance tests are unaffected.
    The default ``None`` equals Evidently's DataDriftPreset. ``workers > 1``
    computes columns on a shared thread pool of that size (worth it from about
    10k rows per window; results are identical). ``also``: more columns scored with
    these (batched with them, see :func:`_batched_scores`) but left out of the share and
    of the adjustment, their verdicts in :attr:`DatasetDrift.also`, each equal to
    :func:`column_drift` on it (a model's prediction column). Raises
    ``KeyError`` for a named column without spec or a spec column missing from
    ``current_columns``, ``ValueError`` for an unknown ``multiple_testing``.
    """
    if multiple_testing not in (None, "bh"):
        raise ValueError(f"multiple_testing must be None or 'bh', got {multiple_testing!r}")
    names = [s.name for s in prepared.specs] if columns is None else list(columns)
    n_shared = len(names)
    names += also
    jobs: list[tuple[PreparedColumn, CurrentColumn, DriftTest]] = []
    for name in names:
        ref = prepared.columns[name]
        if name not in current_columns:
            raise KeyError(f"current window has no column {name!r}")
        cur = as_current(ref, current_columns[name])
        jobs.append((ref, cur, get_test(_resolve_test_name(ref, cur))))
    scores = _batched_scores(jobs, prepared.bins)
    results: list[ColumnDrift] = run_jobs(
        [
            functools.partial(_column_drift, ref, cur, prepared.bins, test, scores.get(i))
            for i, (ref, cur, test) in enumerate(jobs)
        ],
        workers,
    )
    extra = tuple(results[n_shared:])
    del results[n_shared:]
    if multiple_testing == "bh":
        idx = [i for i, r in enumerate(results) if r.score_kind == "p_value" and r.defined]
        adj = benjamini_hochberg([results[i].score for i in idx])
        for i, a in zip(idx, adj.tolist(), strict=True):
            r = results[i]
            test = get_test(r.test)
            results[i] = replace(r, score=a, drifted=test.is_drift(a, r.threshold))
    defined = [r for r in results if r.defined]
    drifted = sum(1 for r in defined if r.drifted)
    n = len(defined)
    share = drifted / n if n else 0.0
    return DatasetDrift(
        columns=tuple(results),
        drifted_count=drifted,
        n_columns=n,
        share=share,
        share_threshold=float(share_threshold),
        dataset_drifted=bool(n > 0 and share >= share_threshold),
        multiple_testing=multiple_testing,
        undefined_columns=tuple(r.column for r in results if not r.defined),
        also=extra,
    )


def calibrated_dataset_drift(
    prepared: PreparedReference,
    calibration: Calibration,
    current_columns: Mapping[str, Any],
    columns: Sequence[str] | None = None,
    multiple_testing: Literal["bh"] | None = None,
) -> DatasetDrift:
    """Drift with thresholds calibrated on the reference (see :mod:`detectors.calibration`).

    Each column is scored with its spec's (concrete) test; its threshold is
    the calibrated one at the window's effective size, in the test's own
    units, and ``calibrated_p`` its calibrated p-value. A column drifts when
    ``calibrated_p <= alpha_column`` (equivalently: its score crosses the
    threshold); with ``multiple_testing="bh"`` the calibrated p-values of all
    columns (distances included) are Benjamini–Hochberg adjusted first (and
    ``calibrated_p`` holds the adjusted value). The dataset drifts when at
    least ``calibration.dataset_threshold(m)`` of the ``m`` defined columns
    drift (after any adjustment, which only removes verdicts, so the false
    alarm rate stays at most ``alpha``); ``share_threshold`` is that count
    over ``m``.
    Columns without a null model (all missing in the reference) are undefined.
    """
    if multiple_testing not in (None, "bh"):
        raise ValueError(f"multiple_testing must be None or 'bh', got {multiple_testing!r}")
    names = [s.name for s in prepared.specs] if columns is None else list(columns)
    a = calibration.alpha_column
    results: list[ColumnDrift] = []
    for name in names:
        ref = prepared.columns[name]
        if name not in current_columns:
            raise KeyError(f"current window has no column {name!r}")
        cur = as_current(ref, current_columns[name])
        test = get_test(_resolve_test_name(ref, cur))
        model = calibration.columns.get(name)
        if ref.n == 0 or cur.n == 0 or model is None:
            score = p = thr = math.nan
        else:
            with np.errstate(all="ignore"):
                score = test.score(ref, cur, prepared.bins)
            n_eff = effective_size(ref.n, cur.n)
            thr = model.threshold(n_eff, a)
            p = model.p_value(n_eff, score)
        results.append(
            ColumnDrift(
                column=name, kind=ref.kind, test=test.name, score=score, threshold=thr,
                drifted=bool(p <= a), score_kind=test.score_kind, raw_score=score,
                reference_n=ref.n, current_n=cur.n, calibrated_p=p, calibrated=True,
            )
        )
    if multiple_testing == "bh":
        idx = [i for i, r in enumerate(results) if r.defined]
        adj = benjamini_hochberg([results[i].calibrated_p for i in idx])
        for i, q in zip(idx, adj.tolist(), strict=True):
            results[i] = replace(results[i], drifted=bool(q <= a), calibrated_p=q)
    defined = [r for r in results if r.defined]
    drifted = sum(1 for r in defined if r.drifted)
    n = len(defined)
    k = calibration.dataset_threshold(n)
    return DatasetDrift(
        columns=tuple(results),
        drifted_count=drifted,
        n_columns=n,
        share=drifted / n if n else 0.0,
        share_threshold=k / n if n else 1.0,
        dataset_drifted=bool(n > 0 and drifted >= k),
        multiple_testing=multiple_testing,
        undefined_columns=tuple(r.column for r in results if not r.defined),
        thresholds="calibrated",
    )


@dataclass(frozen=True)
class DatasetLevel:
    """The false-alarm level a calibrated dataset verdict reaches, against the one asked.

    ``asked`` is ``calibration.alpha``; ``reached`` the modelled probability that a
    stationary window with ``columns`` defined columns is judged drifted (at least
    ``min_drifted`` of them drifted), both per window, in [0, 1]. ``reachable`` is
    ``reached <= asked``. ``alpha_column_for_asked`` is the largest per-column level at
    which even "all ``columns`` drifted" stays within ``asked`` under the same column
    dependence (only set when the asked level is not reachable; NaN otherwise).
    """

    columns: int
    min_drifted: int
    asked: float
    reached: float
    alpha_column: float
    rho: float
    alpha_column_for_asked: float = math.nan

    @property
    def reachable(self) -> bool:
        """``reached <= asked`` (up to rounding: a level equal to ``asked`` is reached)."""
        return self.reached <= self.asked * (1 + 1e-9)


def calibrated_dataset_level(calibration: Calibration, columns: int) -> DatasetLevel:
    """What the dataset verdict's count threshold gives with ``columns`` defined columns.

    The count of drifted columns in a stationary window is modelled (as in
    :func:`detectors.calibration.calibrate`) as beta-binomial with mean
    ``columns * alpha_column`` and intra-class correlation ``rho``. When no count
    reaches ``alpha``, the verdict falls back to "all columns drifted", whose level
    ``P(C >= columns)`` is above ``alpha``: e.g. one column gives ``alpha_column``
    whatever ``alpha`` says, and strongly correlated columns give nearly
    ``alpha_column`` too. ``columns <= 0``: no verdict, level 0 (reachable).
    """
    a, rho, alpha = calibration.alpha_column, calibration.rho, calibration.alpha
    if columns <= 0:
        return DatasetLevel(0, 0, alpha, 0.0, a, rho)
    k = calibration.dataset_threshold(columns)
    reached = float(min(beta_binomial_tail(columns, a, rho)[k], 1.0))
    level = DatasetLevel(columns, k, alpha, reached, a, rho)
    if level.reachable:
        return level
    # the largest alpha_column whose "all columns drifted" tail is within alpha (bisection
    # on a log scale: the tail grows with alpha_column)
    lo, hi = math.log(1e-12), math.log(a)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if beta_binomial_tail(columns, math.exp(mid), rho)[columns] <= alpha:
            lo = mid
        else:
            hi = mid
    return replace(level, alpha_column_for_asked=math.exp(lo))
