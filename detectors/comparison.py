"""Is one model version worse than another on the same window? (A/B tests, canaries)

For each figure both versions have, :func:`compare` returns the difference
(candidate minus baseline) and two p-values:

- rates (accuracy, precision, recall: proportions with known trials): the
  two-proportion z-test with pooled variance;
- every other figure (F1, ROC AUC, log loss, Brier, macro/weighted averages,
  regression errors): a z-test on the difference with the bootstrap standard
  errors of the two windows (independent resamples, so the variances add);
  when both are 0 a non-zero difference is certain (p-values 0 or 1).

``p_worse`` is one-sided: the probability, under "no difference", of a
difference at least this far in the figure's bad direction (lower for
accuracy, higher for MAE). A rule ``accuracy_worse_p < 0.01`` therefore fires
when the candidate is worse than the baseline at the 1 % level; with equal
versions it fires in about 1 % of windows (tested over many seeds).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.window_performance import HIGHER_IS_BETTER, WindowPerformance


@dataclass(frozen=True)
class Comparison:
    """One figure of a candidate version against the baseline version in one window."""

    metric: str
    delta: float
    #: two-sided p-value of "no difference"
    p_value: float
    #: one-sided p-value of "the candidate is not worse"
    p_worse: float
    test: str


def _phi(z: float) -> float:
    """The standard normal distribution function."""
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def two_proportion_z(x1: int, n1: int, x2: int, n2: int) -> float:
    """z statistic of p1 - p2 with pooled variance; NaN without trials, 0 when both are 0 or 1."""
    if n1 <= 0 or n2 <= 0:
        return math.nan
    p1, p2 = x1 / n1, x2 / n2
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 0.0
    return (p1 - p2) / math.sqrt(var)


def _z(delta: float, se: float) -> float:
    """``delta / se``; with ``se == 0`` (both figures the same in every bootstrap replicate:
    a perfect baseline's F1 or ROC AUC, errors all of one size) the difference is certain,
    so ±inf, or 0 when there is none. It was 0: a canary whose ROC AUC was 0 against a
    baseline's 1 was "not worse" (``p_worse`` 0.5)."""
    if se == 0:
        return 0.0 if delta == 0 else math.copysign(math.inf, delta)
    return delta / se


def compare(candidate: WindowPerformance, baseline: WindowPerformance) -> list[Comparison]:
    """Every figure present in both, as candidate minus baseline with its tests."""
    out: list[Comparison] = []
    for metric, fc in candidate.figures.items():
        fb = baseline.figures.get(metric)
        if fb is None or math.isnan(fc.value) or math.isnan(fb.value):
            continue
        delta = fc.value - fb.value
        if metric in candidate.rates and metric in baseline.rates:
            (x1, n1), (x2, n2) = candidate.rates[metric], baseline.rates[metric]
            z = two_proportion_z(x1, n1, x2, n2)
            test = "two_proportion_z"
        else:
            se = math.sqrt(fc.se**2 + fb.se**2)
            if math.isnan(se):
                continue
            z = _z(delta, se)
            test = "bootstrap_z"
        if math.isnan(z):
            continue
        lower = _phi(z)
        p_worse = lower if metric in HIGHER_IS_BETTER else 1.0 - lower
        p_two = min(1.0, 2.0 * min(lower, 1.0 - lower))
        out.append(Comparison(metric, delta, p_two, p_worse, test))
    return out
