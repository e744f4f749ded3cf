"""Performance estimated before labels arrive, from calibrated scores (confidence-based).

The method is NannyML's CBPE (confidence-based performance estimation) for binary
classifiers: once the scores are calibrated probabilities, each row with
probability ``p`` of the class of interest and predicted class ``ŷ`` contributes
``p`` to the expected true positives if ``ŷ = 1`` (and ``1 - p`` to the false
positives), ``p`` to the false negatives if ``ŷ = 0`` (``1 - p`` to the true
negatives). Accuracy, precision, recall and F1 follow from that expected
confusion matrix; ROC AUC from the expected ROC curve (rows sorted by score, the
expected true/false positive counts accumulated, tied scores taken together).

Calibration: an isotonic regression fitted once on the reference data's scores
and labels (:func:`fit_calibrator`, equal to scikit-learn's
``IsotonicRegression(out_of_bounds="clip")``). The estimate is right as long as
the relation between score and label holds (covariate shift); it cannot see a
change of that relation (concept drift), which only the labels reveal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


@dataclass(frozen=True)
class Calibrator:
    """A monotone step-and-ramp map from score to probability (isotonic regression)."""

    x: np.ndarray
    y: np.ndarray

    def __call__(self, score: np.ndarray) -> np.ndarray:
        """Calibrated probabilities; scores outside the fitted range take the end values."""
        return np.interp(np.asarray(score, dtype=np.float64), self.x, self.y)


def fit_calibrator(score: np.ndarray, is_positive: np.ndarray) -> Calibrator:
    """Isotonic (non-decreasing) least-squares fit of ``is_positive`` on ``score``.

    Pool-adjacent-violators over the distinct scores, each weighted by how often
    it occurs. Raises ``ValueError`` for no rows.
    """
    s = np.asarray(score, dtype=np.float64)
    y = np.asarray(is_positive, dtype=np.float64)
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    if s.shape[0] == 0:
        raise ValueError("no finite scores to calibrate on")
    xs, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=y, minlength=xs.shape[0])
    # pool adjacent violators: blocks of (sum, weight, length)
    b_sum: list[float] = []
    b_w: list[float] = []
    b_len: list[int] = []
    for total, w in zip(sums.tolist(), counts.tolist(), strict=True):
        b_sum.append(total)
        b_w.append(float(w))
        b_len.append(1)
        while len(b_sum) > 1 and b_sum[-2] / b_w[-2] >= b_sum[-1] / b_w[-1]:
            total2, w2, l2 = b_sum.pop(), b_w.pop(), b_len.pop()
            b_sum[-1] += total2
            b_w[-1] += w2
            b_len[-1] += l2
    fitted = np.repeat(np.array(b_sum) / np.array(b_w), b_len)
    return Calibrator(xs, fitted)


@dataclass(frozen=True)
class Estimate:
    """Estimated figures of one window (NaN where undefined, e.g. no rows)."""

    n: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float

    def as_dict(self) -> dict[str, float]:
        return {m: getattr(self, m) for m in ESTIMATED_METRICS}


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def estimate_binary(calibrator: Calibrator, score: np.ndarray, *, threshold: float = 0.5) -> Estimate:
    """Expected accuracy, precision, recall, F1 and ROC AUC of a window's scores
    (non-finite scores are left out)."""
    s = np.asarray(score, dtype=np.float64)
    s = s[np.isfinite(s)]
    n = int(s.shape[0])
    if n == 0:
        nan = math.nan
        return Estimate(0, nan, nan, nan, nan, nan)
    p = calibrator(s)
    pred = s >= threshold
    tp = float(np.sum(p[pred]))
    fp = float(np.sum(1.0 - p[pred]))
    fn = float(np.sum(p[~pred]))
    tn = float(np.sum(1.0 - p[~pred]))
    return Estimate(
        n=n,
        accuracy=(tp + tn) / n,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(tp, tp + 0.5 * (fp + fn)),
        roc_auc=_expected_auc(s, p),
    )


def _expected_auc(score: np.ndarray, p: np.ndarray) -> float:
    """Area under the expected ROC curve; NaN when the expected positives or negatives are 0."""
    order = np.argsort(-score, kind="stable")
    s, q = score[order], p[order]
    tps = np.cumsum(q)
    fps = np.cumsum(1.0 - q)
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each run of tied scores
    tps = np.r_[0.0, tps[last]]
    fps = np.r_[0.0, fps[last]]
    if tps[-1] <= 0 or fps[-1] <= 0:
        return math.nan
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))
