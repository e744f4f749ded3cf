"""Multivariate drift by a domain classifier.

Train a classifier to tell reference rows from current rows; if it cannot
(cross-validated ROC AUC ≈ 0.5) the joint distributions match, and the
further the AUC rises above 0.5 the more they differ — including changes in
the relations between columns that per-column tests miss.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors._columns import factorize_categories
from detectors.spec import ColumnSpec

DEFAULT_AUC_THRESHOLD = 0.55
#: boosting iterations of the domain classifier (enough to see shifts a window can show)
MAX_ITER = 50


@dataclass(frozen=True, eq=False)
class PreparedDomainReference:
    """A row-aligned, encoded sample of the reference for the domain classifier."""

    specs: tuple[ColumnSpec, ...]
    matrix: np.ndarray  # rows × columns, float64, NaN for missing
    categories: Mapping[str, Mapping[Any, int]]
    rows: int


@dataclass(frozen=True)
class MultivariateDrift:
    """Cross-validated ROC AUC of the domain classifier and the verdict.

    ``roc_auc`` is NaN (and ``drifted`` False) when either side has fewer
    rows than ``folds``.
    """

    roc_auc: float
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    folds: int


def _encode(
    columns: Mapping[str, Any],
    specs: Sequence[ColumnSpec],
    categories: Mapping[str, Mapping[Any, int]],
    n: int,
) -> np.ndarray:
    out = np.full((n, len(specs)), np.nan)
    for j, spec in enumerate(specs):
        values = columns.get(spec.name)
        if values is None:
            continue
        if spec.kind == "numerical":
            x = np.asarray(values, dtype=np.float64).ravel()[:n]
            out[: x.shape[0], j] = np.where(np.isfinite(x), x, np.nan)
        else:
            index = categories[spec.name]
            unseen = float(len(index))  # all unseen categories share one code
            arr = np.asarray(values, dtype=object).ravel()[:n]
            import pandas as pd

            miss = np.asarray(pd.isna(arr), dtype=bool)
            out[: arr.shape[0], j] = [
                math.nan if m else float(index.get(v, unseen))
                for v, m in zip(arr, miss, strict=True)
            ]
    return out


def _sample_rows(n: int, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= max_rows else np.sort(rng.choice(n, max_rows, replace=False))


def prepare_domain_reference(
    ref_columns: Mapping[str, Any],
    specs: Sequence[ColumnSpec],
    *,
    max_rows: int = 5000,
    seed: int = 0,
) -> PreparedDomainReference:
    """Encode (and subsample to ``max_rows``) the reference once.

    Numerical columns keep their values (NaN/±inf as NaN, which the
    gradient-boosting classifier handles natively); categorical columns become
    integer codes learned from the reference, every unseen category sharing
    one extra code.
    """
    specs = tuple(specs)
    n = max((len(np.asarray(ref_columns[s.name])) for s in specs), default=0)
    rows = _sample_rows(n, max_rows, np.random.default_rng(seed))
    cats: dict[str, dict[Any, int]] = {}
    sampled: dict[str, Any] = {}
    for s in specs:
        arr = np.asarray(
            ref_columns[s.name], dtype=object if s.kind == "categorical" else np.float64
        )
        sampled[s.name] = arr[rows]
        if s.kind == "categorical":
            uniques = factorize_categories(arr)[0]
            cats[s.name] = {c: i for i, c in enumerate(uniques)}
    return PreparedDomainReference(
        specs, _encode(sampled, specs, cats, rows.shape[0]), cats, int(rows.shape[0])
    )


def multivariate_drift(
    prepared: PreparedDomainReference,
    current_columns: Mapping[str, Any],
    *,
    threshold: float = DEFAULT_AUC_THRESHOLD,
    folds: int = 5,
    max_rows: int = 5000,
    seed: int = 0,
) -> MultivariateDrift:
    """Domain-classifier drift: stratified ``folds``-fold cross-validated ROC AUC.

    The classifier is scikit-learn's ``HistGradientBoostingClassifier`` (fixed
    seed, :data:`MAX_ITER` iterations, one thread); at most ``max_rows`` current rows are used (a
    seeded sample). Drift when ``roc_auc > threshold`` (0.55 by default, as
    Evidently's domain-classifier method). Deterministic for a given seed.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    specs = prepared.specs
    n_cur = max(
        (len(np.asarray(current_columns[s.name])) for s in specs if s.name in current_columns),
        default=0,
    )
    rng = np.random.default_rng(seed + 1)
    rows = _sample_rows(n_cur, max_rows, rng)
    sampled = {
        s.name: np.asarray(
            current_columns[s.name], dtype=object if s.kind == "categorical" else np.float64
        )[rows]
        for s in specs
        if s.name in current_columns
    }
    cur = _encode(sampled, specs, prepared.categories, rows.shape[0])
    n_ref, n_c = prepared.matrix.shape[0], cur.shape[0]
    if min(n_ref, n_c) < folds or not specs:
        return MultivariateDrift(math.nan, float(threshold), False, n_ref, n_c, folds)
    from threadpoolctl import threadpool_limits

    x = np.vstack((prepared.matrix, cur))
    y = np.r_[np.zeros(n_ref), np.ones(n_c)]
    clf = HistGradientBoostingClassifier(max_iter=MAX_ITER, random_state=seed)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    # OpenMP threads fighting over a small machine cost 10x: one thread is fastest here
    with threadpool_limits(limits=1):
        auc = float(np.mean(cross_val_score(clf, x, y, cv=cv, scoring="roc_auc")))
    return MultivariateDrift(auc, float(threshold), bool(auc > threshold), n_ref, n_c, folds)


def auc_null_sd(n_ref: int, n_cur: int) -> float:
    """Standard deviation of the ROC AUC of an uninformative score (Mann–Whitney, no ties)."""
    if n_ref <= 0 or n_cur <= 0:
        return math.nan
    return math.sqrt((n_ref + n_cur + 1) / (12.0 * n_ref * n_cur))


@dataclass(frozen=True)
class DomainCalibration:
    """The domain classifier's AUC under no change, calibrated on the reference.

    The null AUC is modelled as normal with mean ``0.5 + offset`` and standard
    deviation ``dispersion * auc_null_sd(n_ref, n_cur)``: the Mann–Whitney
    spread scaled by how much wider the cross-validated classifier's spread was
    in the reference resamples (at least 1), so one calibration serves every
    window size.
    """

    alpha: float
    offset: float
    dispersion: float
    resamples: int

    def threshold(self, n_ref: int, n_cur: int) -> float:
        from scipy.stats import norm

        z = float(norm.isf(self.alpha))
        return 0.5 + self.offset + z * self.dispersion * auc_null_sd(n_ref, n_cur)


def calibrate_domain(
    ref_columns: Mapping[str, Any],
    specs: Sequence[ColumnSpec],
    *,
    size: int,
    alpha: float,
    resamples: int = 8,
    folds: int = 5,
    max_rows: int = 5000,
    seed: int = 0,
) -> DomainCalibration:
    """Null AUCs of ``resamples`` reference splits: a window of ``size`` rows drawn from
    one random half against the other half (each a full domain-classifier fit, so
    this costs about ``resamples`` windows' worth of time, once per reference)."""
    specs = tuple(specs)
    n = max((len(np.asarray(ref_columns[s.name])) for s in specs), default=0)
    rng = np.random.default_rng(seed)
    aucs: list[float] = []
    sds: list[float] = []
    for i in range(resamples):
        perm = rng.permutation(n)
        half, pool = perm[: n // 2], perm[n // 2 :]
        take = pool[: min(size, pool.shape[0])]
        ref = {s.name: np.asarray(ref_columns[s.name])[half] for s in specs}
        cur = {s.name: np.asarray(ref_columns[s.name])[take] for s in specs}
        prepared = prepare_domain_reference(ref, specs, max_rows=max_rows, seed=seed + i)
        res = multivariate_drift(prepared, cur, folds=folds, max_rows=max_rows, seed=seed + i)
        if not math.isnan(res.roc_auc):
            aucs.append(res.roc_auc)
            sds.append(auc_null_sd(res.reference_rows, res.current_rows))
    if len(aucs) < 2:
        return DomainCalibration(alpha, 0.0, 1.0, len(aucs))
    a = np.asarray(aucs)
    z = (a - a.mean()) / np.asarray(sds)
    dispersion = max(float(np.std(z, ddof=1)), 1.0)
    return DomainCalibration(alpha, max(float(a.mean()) - 0.5, 0.0), dispersion, len(aucs))
