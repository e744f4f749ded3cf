"""Model performance once labels have joined: classification and regression metrics.

Point figures equal scikit-learn's (same clipping, same edge-case values);
:func:`bootstrap_ci` adds percentile confidence intervals computed for all
replicates at once (bootstrap weights × per-row terms, no Python loop per
replicate).

Binary classification only: ``y_score`` is the score/probability of the
positive class ``pos_label``; the predicted label is ``y_score >= threshold``.
Rows whose label or score is missing (NaN/None) are dropped and counted in
``n_dropped``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
REGRESSION_METRICS = ("mae", "rmse", "mape", "r2")


@dataclass(frozen=True)
class ClassificationMetrics:
    """Binary classification figures of one window.

    Equal to scikit-learn's ``accuracy_score``, ``precision_score``,
    ``recall_score``, ``f1_score`` (0.0 where sklearn's default
    ``zero_division`` gives 0), ``roc_auc_score`` (NaN when only one class is
    present, where sklearn raises), ``log_loss`` with ``labels=[0, 1]`` and
    ``brier_score_loss``. All NaN for an empty window.
    """

    n: int
    n_dropped: int
    positives: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float
    log_loss: float
    brier: float
    threshold: float
    pos_label: Any


@dataclass(frozen=True)
class RegressionMetrics:
    """Regression figures of one window, equal to scikit-learn's
    ``mean_absolute_error``, ``root_mean_squared_error``,
    ``mean_absolute_percentage_error`` (|y| floored at machine epsilon) and
    ``r2_score`` (NaN below two rows; 1.0/0.0 for a constant target, as
    sklearn's ``force_finite``). All NaN for an empty window."""

    n: int
    n_dropped: int
    mae: float
    rmse: float
    mape: float
    r2: float


@dataclass(frozen=True)
class ConfidenceInterval:
    """Percentile bootstrap interval of one metric."""

    metric: str
    estimate: float
    low: float
    high: float
    level: float
    n_boot: int
    n_defined: int  # replicates where the metric was defined (e.g. both classes drawn)


def _binary_inputs(y_true: Any, y_score: Any, pos_label: Any) -> tuple[np.ndarray, np.ndarray, int]:
    t = np.asarray(y_true, dtype=object if np.asarray(y_true).dtype == object else None).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ValueError(f"y_true and y_score differ in length: {t.shape[0]} vs {s.shape[0]}")
    keep = ~(np.asarray(pd.isna(t), dtype=bool) | np.isnan(s))
    dropped = int(t.shape[0] - keep.sum())
    t, s = t[keep], s[keep]
    y = (t == pos_label).astype(np.float64)
    return y, s, dropped


@dataclass(frozen=True)
class _AucPlan:
    """What ROC AUC needs of a window's labels and scores, whatever the weights: the
    positives, the negatives in score order, and where each positive's score falls among
    theirs (made once per window, not once per chunk of replicates)."""

    pos: np.ndarray
    neg_order: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _auc_plan(y: np.ndarray, s: np.ndarray) -> _AucPlan:
    pos = np.flatnonzero(y > 0.5)
    neg = np.flatnonzero(y <= 0.5)
    neg_order = neg[np.argsort(s[neg], kind="stable")]
    neg_scores = s[neg_order]
    lo = np.searchsorted(neg_scores, s[pos], side="left")
    hi = np.searchsorted(neg_scores, s[pos], side="right")
    return _AucPlan(pos, neg_order, lo, hi)


def _auc_from_weights(y: np.ndarray, s: np.ndarray, w: np.ndarray, plan: _AucPlan | None = None) -> np.ndarray:
    """ROC AUC (Mann–Whitney with half credit for ties) for rows of weights ``w`` (k × n);
    ``plan``: :func:`_auc_plan` of ``y`` and ``s`` when already made.

    Each positive scores the negative weight below it plus half the tied one; both come
    from one cumulative sum over the negatives in score order, looked up where each
    positive's score falls (two gathers instead of sums per group of tied scores).
    """
    a = _auc_plan(y, s) if plan is None else plan
    cum = np.zeros((w.shape[0], a.neg_order.shape[0] + 1))
    np.cumsum(w[:, a.neg_order], axis=1, out=cum[:, 1:])
    num = np.sum(w[:, a.pos] * (cum[:, a.lo] + cum[:, a.hi]), axis=1) * 0.5
    den = w[:, a.pos].sum(axis=1) * cum[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _safe_div(num: np.ndarray, den: np.ndarray, zero_division: float = 0.0) -> np.ndarray:
    """``num / den``, ``zero_division`` where ``den`` is 0 (by default 0, scikit-learn's
    ``zero_division`` default; NaN in bootstrap replicates, where 0/0 is undefined)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), zero_division)


@dataclass(frozen=True)
class _BinaryTerms:
    """A window's per-row terms of the binary figures (made once per window; each chunk of
    bootstrap replicates only multiplies its weights by them)."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    correct: np.ndarray
    auc: _AucPlan
    log_loss: np.ndarray | None  # None unless the scores are probabilities
    brier: np.ndarray | None


def _binary_terms(y: np.ndarray, s: np.ndarray, threshold: float, probabilities: bool = True) -> _BinaryTerms:
    pred = (s >= threshold).astype(np.float64)
    ll = sq = None
    if probabilities:
        eps = np.finfo(np.float64).eps
        p = np.clip(s, eps, 1 - eps)
        ll = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        sq = (s - y) ** 2
    return _BinaryTerms(pred * y, pred * (1 - y), (1 - pred) * y, (pred == y).astype(np.float64), _auc_plan(y, s), ll, sq)


def _binary_from_weights(
    y: np.ndarray, s: np.ndarray, w: np.ndarray, threshold: float, probabilities: bool = True,
    zero_division: float = 0.0, terms: _BinaryTerms | None = None,
) -> dict[str, np.ndarray]:
    """Binary figures for each row of bootstrap weights ``w`` (one row of ones: the point
    figures); ``log_loss`` and ``brier`` are NaN unless the scores are ``probabilities``.
    ``zero_division``: precision, recall and F1 where their denominator is 0 (0 for the
    point figures, as scikit-learn; NaN for bootstrap replicates, which the intervals then
    leave out as they do ROC AUC on a one-class resample: a resample without a predicted
    or actual positive says nothing about precision or recall). ``terms``:
    :func:`_binary_terms` of the same arguments when already made."""
    t = _binary_terms(y, s, threshold, probabilities) if terms is None else terms
    tot = w.sum(axis=1)
    tp = w @ t.tp
    fp = w @ t.fp
    fn = w @ t.fn
    correct = w @ t.correct
    nan = np.full(w.shape[0], np.nan)
    out = {
        "accuracy": correct / tot,
        "precision": _safe_div(tp, tp + fp, zero_division),
        "recall": _safe_div(tp, tp + fn, zero_division),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn, zero_division),
        "roc_auc": _auc_from_weights(y, s, w, t.auc),
        "log_loss": nan,
        "brier": nan,
    }
    if t.log_loss is not None and t.brier is not None:
        out["log_loss"] = (w @ t.log_loss) / tot
        out["brier"] = (w @ t.brier) / tot
    return out


def classification_metrics(
    y_true: Any, y_score: Any, *, pos_label: Any = 1, threshold: float = 0.5
) -> ClassificationMetrics:
    """Accuracy, precision, recall, F1, ROC AUC, log loss and Brier score of one window."""
    y, s, dropped = _binary_inputs(y_true, y_score, pos_label)
    n = int(y.shape[0])
    if n == 0:
        nan = math.nan
        return ClassificationMetrics(
            0, dropped, 0, nan, nan, nan, nan, nan, nan, nan, float(threshold), pos_label
        )
    vals = _binary_from_weights(y, s, np.ones((1, n)), threshold)
    # exact sums for the point figures (weights of 1 keep the matrix path exact too)
    return ClassificationMetrics(
        n=n,
        n_dropped=dropped,
        positives=int(y.sum()),
        threshold=float(threshold),
        pos_label=pos_label,
        **{k: float(v[0]) for k, v in vals.items()},
    )


def _regression_inputs(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray, int]:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    keep = np.isfinite(t) & np.isfinite(p)
    return t[keep], p[keep], int(t.shape[0] - keep.sum())


def _regression_from_weights(t: np.ndarray, p: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    tot = w.sum(axis=1)
    err = t - p
    eps = np.finfo(np.float64).eps
    mse = (w @ err**2) / tot
    tc = t - t.mean()  # centre first: Σw(t - m)² = Σw·tc² − W·mean_w(tc)² without cancellation
    mean_tc = (w @ tc) / tot
    ss_tot = w @ (tc**2) - tot * mean_tc**2
    ss_tot = np.maximum(ss_tot, 0.0)
    ss_res = w @ err**2
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(
            ss_tot > 0,
            1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
            np.where(ss_res == 0, 1.0, 0.0),
        )
    r2 = np.where(tot >= 2, r2, np.nan)
    return {
        "mae": (w @ np.abs(err)) / tot,
        "rmse": np.sqrt(mse),
        "mape": (w @ (np.abs(err) / np.maximum(np.abs(t), eps))) / tot,
        "r2": r2,
    }


def regression_metrics(y_true: Any, y_pred: Any) -> RegressionMetrics:
    """MAE, RMSE, MAPE and R² of one window (non-finite rows dropped)."""
    t, p, dropped = _regression_inputs(y_true, y_pred)
    n = int(t.shape[0])
    if n == 0:
        nan = math.nan
        return RegressionMetrics(0, dropped, nan, nan, nan, nan)
    return RegressionMetrics(n=n, n_dropped=dropped, **regression_points(t, p))


def regression_points(t: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``mae``, ``rmse``, ``mape`` and ``r2`` of finite float arrays of one length ≥ 1, as
    scikit-learn computes them (MAPE divides by ``max(|y|, eps)``; R² is NaN for one row,
    1 for a perfect fit of a constant target, else 0 for a constant target)."""
    err = t - p
    eps = np.finfo(np.float64).eps
    if t.shape[0] >= 2:
        ss_res = float(np.sum(err**2))
        ss_tot = float(np.sum((t - np.mean(t)) ** 2))
        r2 = (1 - ss_res / ss_tot) if ss_tot != 0 else (1.0 if ss_res == 0 else 0.0)
    else:
        r2 = math.nan
    return {
        "mae": float(np.mean(np.abs(err))),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / np.maximum(np.abs(t), eps))),
        "r2": float(r2),
    }


def _bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + (np.arange(n_boot) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def bootstrap_ci(
    metric: str,
    y_true: Any,
    y_other: Any,
    *,
    task: Literal["classification", "regression"] | None = None,
    pos_label: Any = 1,
    threshold: float = 0.5,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 250,
) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of one metric.

    ``metric`` is one of the classification metrics (``y_other`` = scores) or
    regression metrics (``y_other`` = predictions). All ``n_boot`` resamples
    are drawn as a matrix of multiplicities and evaluated with matrix
    products, ``chunk`` replicates at a time. Deterministic for a given
    ``seed``. Replicates where the metric is undefined (ROC AUC on a resample
    with one class, precision without a predicted positive, recall without an
    actual one) are left out; ``n_defined`` says how many remain. An
    empty window gives NaN bounds.
    """
    if task is None:
        task = "classification" if metric in CLASSIFICATION_METRICS else "regression"
    compute: Callable[[np.ndarray], dict[str, np.ndarray]]
    if task == "classification":
        if metric not in CLASSIFICATION_METRICS:
            raise ValueError(
                f"unknown classification metric {metric!r}; known: {CLASSIFICATION_METRICS}"
            )
        y, s, _ = _binary_inputs(y_true, y_other, pos_label)
        n = y.shape[0]
        point = getattr(
            classification_metrics(y_true, y_other, pos_label=pos_label, threshold=threshold),
            metric,
        )

        def compute(w: np.ndarray) -> dict[str, np.ndarray]:
            if metric == "roc_auc":
                return {"roc_auc": _auc_from_weights(y, s, w)}
            return _binary_from_weights(y, s, w, threshold, zero_division=math.nan)
    else:
        if metric not in REGRESSION_METRICS:
            raise ValueError(f"unknown regression metric {metric!r}; known: {REGRESSION_METRICS}")
        t, p, _ = _regression_inputs(y_true, y_other)
        n = t.shape[0]
        point = getattr(regression_metrics(y_true, y_other), metric)

        def compute(w: np.ndarray) -> dict[str, np.ndarray]:
            return _regression_from_weights(t, p, w)

    if n == 0:
        return ConfidenceInterval(metric, math.nan, math.nan, math.nan, level, n_boot, 0)
    rng = np.random.default_rng(seed)
    reps = []
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        reps.append(compute(_bootstrap_weights(n, k, rng))[metric])
    values = np.concatenate(reps)
    defined = values[~np.isnan(values)]
    if defined.shape[0] == 0:
        return ConfidenceInterval(metric, float(point), math.nan, math.nan, level, n_boot, 0)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(defined, [alpha, 1 - alpha])
    return ConfidenceInterval(
        metric, float(point), float(lo), float(hi), level, n_boot, int(defined.shape[0])
    )
