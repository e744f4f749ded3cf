"""The performance of one window once labels have joined: figures with bootstrap intervals.

Three shapes of model, each one function:

- :func:`binary_performance`: a classifier that publishes a score for the class of
  interest; the predicted class is ``score >= threshold``. Accuracy, precision,
  recall, F1, ROC AUC, log loss and Brier score (the last two only when every
  score is a probability in [0, 1]; NaN otherwise).
- :func:`multiclass_performance`: a classifier that publishes a class. Accuracy;
  precision, recall and F1 of the class of interest (one-vs-rest); their macro
  and weighted averages over the classes seen in labels or predictions.
- :func:`regression_performance`: MAE, RMSE, MAPE and R².

Point values equal scikit-learn's on the same rows (checked to 1e-12 in the
tests). Each figure carries a percentile bootstrap interval and the bootstrap
standard error (used by :mod:`detectors.comparison`): all replicates are drawn
as one matrix of multiplicities and evaluated with matrix products, ``chunk``
replicates at a time. Replicates where a figure is undefined (ROC AUC of a
resample holding one class) are left out. ``n_boot = 0`` gives NaN intervals.
Deterministic for a given ``seed``: the caller derives it from the window id,
so a recomputed window gets the same interval from the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from detectors.performance import (
    _binary_from_weights,
    _binary_terms,
    _bootstrap_weights,
    _regression_from_weights,
    _safe_div,
    regression_points,
)

#: figures where a larger value is better; every other performance figure is better smaller
HIGHER_IS_BETTER = frozenset(
    {
        "accuracy", "precision", "recall", "f1", "roc_auc",
        "precision_macro", "recall_macro", "f1_macro",
        "precision_weighted", "recall_weighted", "f1_weighted", "r2",
    }
)
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse", "mape"})
BINARY_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
MULTICLASS_METRICS = (
    "accuracy", "precision", "recall", "f1",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
)
REGRESSION_METRICS = ("mae", "rmse", "mape", "r2")
#: above this many classes the multi-class intervals are left NaN (the one-hot
#: matrices the replicates need would grow with classes x rows); points stay exact
MAX_CLASSES_FOR_INTERVALS = 100
#: bootstrap weights held at once (replicates x rows): a chunk of replicates is made
#: smaller for a large window, so memory stays bounded whatever its rows. Drawing the
#: weights in smaller chunks draws the same numbers (the generator's stream does not
#: depend on how it is cut). Making them takes four arrays of this many 8-byte cells
#: (~128 MB): 100 replicates of a 300,000-row window took ~1 GB at once
MAX_BOOT_CELLS = 1 << 22


@dataclass(frozen=True)
class Figure:
    """One performance figure of one window.

    ``ci_low``/``ci_high``: percentile bootstrap interval at the requested level;
    ``se``: standard deviation of the bootstrap replicates. NaN when undefined.
    """

    metric: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    se: float = math.nan


@dataclass(frozen=True)
class WindowPerformance:
    """The figures of one window's labelled rows.

    ``n``: labelled rows used. ``rates``: for figures that are proportions, the
    (successes, trials) a two-proportion test needs (accuracy: correct of all;
    precision: true positives of predicted positives; recall: true positives of
    actual positives).
    """

    n: int
    figures: dict[str, Figure]
    rates: dict[str, tuple[int, int]] = field(default_factory=dict)

    def value(self, metric: str) -> float:
        f = self.figures.get(metric)
        return math.nan if f is None else f.value


def _intervals(
    names: tuple[str, ...],
    points: dict[str, float],
    compute: Callable[[np.ndarray], dict[str, np.ndarray]],
    n: int,
    *,
    n_boot: int,
    level: float,
    seed: int,
    chunk: int,
) -> dict[str, Figure]:
    if n_boot <= 0 or n == 0:
        return {m: Figure(m, points[m]) for m in names}
    rng = np.random.default_rng(seed)
    reps: dict[str, list[np.ndarray]] = {m: [] for m in names}
    chunk = max(1, min(chunk, MAX_BOOT_CELLS // n))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        vals = compute(_bootstrap_weights(n, k, rng))
        for m in names:
            reps[m].append(vals[m])
    alpha = (1 - level) / 2
    out: dict[str, Figure] = {}
    for m in names:
        v = np.concatenate(reps[m])
        v = v[~np.isnan(v)]
        if v.shape[0] < 2 or math.isnan(points[m]):
            out[m] = Figure(m, points[m])
            continue
        lo, hi = np.quantile(v, [alpha, 1 - alpha])
        out[m] = Figure(m, points[m], float(lo), float(hi), float(np.std(v, ddof=1)))
    return out


# --------------------------------------------------------------------------- binary


def binary_performance(
    is_positive: np.ndarray,
    score: np.ndarray,
    *,
    threshold: float = 0.5,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
    probabilities: bool | None = None,
) -> WindowPerformance:
    """Figures of a score model: ``is_positive`` (bool) says whether each row's label
    is the class of interest, ``score`` its score (finite floats, same length).

    Equal to scikit-learn's ``accuracy_score``, ``precision_score``,
    ``recall_score``, ``f1_score`` on ``score >= threshold``, ``roc_auc_score``
    (NaN when one class only, where sklearn raises), ``log_loss`` with
    ``labels=[0, 1]`` and ``brier_score_loss`` (NaN unless every score is in
    [0, 1]). All NaN for no rows.

    ``probabilities``: whether the model's scores are probabilities. False (a margin):
    log loss and Brier score are NaN, whatever the window holds; True or None: they are
    computed when every score is in [0, 1] (for True the decoder keeps others out).
    """
    y = np.asarray(is_positive, dtype=bool).astype(np.float64)
    s = np.asarray(score, dtype=np.float64)
    n = int(y.shape[0])
    if n == 0:
        return WindowPerformance(0, {m: Figure(m, math.nan) for m in BINARY_METRICS})
    probabilities = probabilities is not False and bool(np.all((s >= 0.0) & (s <= 1.0)))
    terms = _binary_terms(y, s, threshold, probabilities)  # once, for the point and every chunk of replicates
    point = _binary_from_weights(y, s, np.ones((1, n)), threshold, probabilities, terms=terms)
    points = {m: float(v[0]) for m, v in point.items()}
    pred = s >= threshold
    yb = y > 0.5
    tp = int(np.sum(pred & yb))
    rates = {
        "accuracy": (int(np.sum(pred == yb)), n),
        "precision": (tp, int(pred.sum())),
        "recall": (tp, int(yb.sum())),
    }
    figs = _intervals(
        BINARY_METRICS, points,
        lambda w: _binary_from_weights(y, s, w, threshold, probabilities, zero_division=math.nan, terms=terms), n,
        n_boot=n_boot, level=level, seed=seed, chunk=chunk,
    )
    return WindowPerformance(n, figs, rates)


# --------------------------------------------------------------------------- multi-class


def _multiclass_from_counts(
    tp: np.ndarray, true_sum: np.ndarray, pred_sum: np.ndarray, tot: np.ndarray, pos: int | None,
    zero_division: float = 0.0,
) -> dict[str, np.ndarray]:
    """Figures from per-class counts (rows: replicates, columns: classes). ``zero_division``:
    the class of interest's precision, recall and F1 where their denominator is 0 (0 for
    the point figures, as scikit-learn; NaN in bootstrap replicates, left out of the
    intervals). Inside the macro and weighted averages a 0/0 class counts 0, as in
    scikit-learn, so those stay defined."""
    precision = _safe_div(tp, pred_sum)
    recall = _safe_div(tp, true_sum)
    f1 = _safe_div(2 * tp, true_sum + pred_sum)
    present = (true_sum + pred_sum) > 0
    n_present = present.sum(axis=1)
    support = true_sum.sum(axis=1)
    out = {"accuracy": tp.sum(axis=1) / tot}
    for name, per_class in (("precision", precision), ("recall", recall), ("f1", f1)):
        out[f"{name}_macro"] = _safe_div((per_class * present).sum(axis=1), n_present)
        out[f"{name}_weighted"] = _safe_div((per_class * true_sum).sum(axis=1), support)
        out[name] = per_class[:, pos] if pos is not None else np.zeros(tp.shape[0])
    if pos is not None and not zero_division == 0.0:
        for name, den in (("precision", pred_sum), ("recall", true_sum), ("f1", true_sum + pred_sum)):
            out[name] = np.where(den[:, pos] > 0, out[name], zero_division)
    return out


class _ClassSums:
    """Per-class sums of rows of weights: ``self(w)[r, c]`` is the sum of ``w[r, i]`` over
    the rows ``i`` whose class code is ``c`` (0 for a class without rows), as
    ``w @ one_hot(codes, k)`` without the rows x ``k`` matrix."""

    def __init__(self, codes: np.ndarray, k: int) -> None:
        self.k = k
        self.order = np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=k)
        self.present = np.flatnonzero(counts)
        self.starts = (np.cumsum(counts) - counts)[self.present]

    def __call__(self, w: np.ndarray) -> np.ndarray:
        out = np.zeros((w.shape[0], self.k))
        if self.present.shape[0]:
            out[:, self.present] = np.add.reduceat(w[:, self.order], self.starts, axis=1)
        return out


def _class_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct class names of ``values`` (as text, sorted) and each value's index
    among them, as ``np.unique(values.astype(str), return_inverse=True)`` gives them.
    Not that way: ``astype(str)`` makes every row as wide as the longest name, so one
    predicted class of 500,000 characters in a window of 2,000 rows took 8 GB."""
    index: dict[str, int] = {}
    first = np.fromiter((index.setdefault(str(v), len(index)) for v in values.tolist()), dtype=np.intp,
                        count=values.shape[0])
    names = sorted(index)
    rank = np.empty(len(names), dtype=np.intp)
    rank[[index[c] for c in names]] = np.arange(len(names))
    classes = np.empty(len(names), dtype=object)
    classes[:] = names
    return classes, rank[first]


def multiclass_performance(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    positive: str | None = None,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> WindowPerformance:
    """Figures of a model that publishes a class: ``y_true``/``y_pred`` are arrays of
    class names (``str``) of the same length, no missing values.

    Equal to scikit-learn's ``accuracy_score``; ``precision_score``,
    ``recall_score``, ``f1_score`` with ``average="macro"`` / ``"weighted"``
    (over the classes present in either array, zero where a ratio is 0/0);
    ``precision``, ``recall`` and ``f1`` are those of ``positive`` against every
    other class (0.0 when ``positive`` is None or never seen).
    """
    t = np.asarray(y_true, dtype=object)
    p = np.asarray(y_pred, dtype=object)
    n = int(t.shape[0])
    if n == 0:
        return WindowPerformance(0, {m: Figure(m, math.nan) for m in MULTICLASS_METRICS})
    classes, codes = _class_codes(np.concatenate([t, p]))
    ct, cp = codes[:n], codes[n:]
    k = int(classes.shape[0])
    pos_idx = None
    if positive is not None:
        hit = np.nonzero(classes == str(positive))[0]
        pos_idx = int(hit[0]) if hit.shape[0] else None
    hit_rows = ct == cp
    tp = np.bincount(ct[hit_rows], minlength=k).astype(np.float64)[None, :]
    true_sum = np.bincount(ct, minlength=k).astype(np.float64)[None, :]
    pred_sum = np.bincount(cp, minlength=k).astype(np.float64)[None, :]
    point = _multiclass_from_counts(tp, true_sum, pred_sum, np.array([float(n)]), pos_idx)
    points = {m: float(v[0]) for m, v in point.items()}
    rates = {"accuracy": (int(hit_rows.sum()), n)}
    if pos_idx is not None:
        rates["precision"] = (int(tp[0, pos_idx]), int(pred_sum[0, pos_idx]))
        rates["recall"] = (int(tp[0, pos_idx]), int(true_sum[0, pos_idx]))
    if k > MAX_CLASSES_FOR_INTERVALS:
        return WindowPerformance(n, {m: Figure(m, points[m]) for m in MULTICLASS_METRICS}, rates)
    # per-class sums of each replicate's weights, from the rows grouped by class: no
    # rows x classes one-hot matrices (three of 240 MB for 300,000 rows of 100 classes);
    # sums of whole multiplicities, so exactly what those matrices' products gave
    by_true, by_pred = _ClassSums(ct, k), _ClassSums(cp, k)
    by_hit = _ClassSums(ct[hit_rows], k)
    hit_idx = np.flatnonzero(hit_rows)

    def compute(w: np.ndarray) -> dict[str, np.ndarray]:
        return _multiclass_from_counts(by_hit(w[:, hit_idx]), by_true(w), by_pred(w), w.sum(axis=1), pos_idx,
                                       zero_division=math.nan)

    figs = _intervals(MULTICLASS_METRICS, points, compute, n, n_boot=n_boot, level=level, seed=seed, chunk=chunk)
    return WindowPerformance(n, figs, rates)


# --------------------------------------------------------------------------- regression


def regression_performance(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    n_boot: int = 200,
    level: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> WindowPerformance:
    """MAE, RMSE, MAPE (|y| floored at machine epsilon) and R² (NaN below two rows;
    1.0/0.0 for a constant target as sklearn's ``force_finite``), equal to
    scikit-learn's. ``y_true``/``y_pred``: finite floats of the same length."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    n = int(t.shape[0])
    if n == 0:
        return WindowPerformance(0, {m: Figure(m, math.nan) for m in REGRESSION_METRICS})
    points = regression_points(t, p)
    figs = _intervals(
        REGRESSION_METRICS, points, lambda w: _regression_from_weights(t, p, w), n,
        n_boot=n_boot, level=level, seed=seed, chunk=chunk,
    )
    return WindowPerformance(n, figs)
