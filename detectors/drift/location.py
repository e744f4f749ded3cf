"""Location / shape tests: t-test, Mann–Whitney U, Epps–Singleton."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from detectors._columns import CurrentColumn, PreparedColumn
from detectors.drift.registry import register_test


@register_test(
    "t_test",
    score_kind="p_value",
    default_threshold=0.05,
    kinds=("numerical",),
    inclusive=False,
    evidently_name="t_test",
    aliases=("ttest",),
)
def t_test(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Student's two-sample t-test with pooled variance (scipy ``ttest_ind``);
    score is the two-sided p-value. Drift when ``p < threshold``. Undefined
    cases (one value in total on a side and none elsewhere, zero variance on
    both sides) give NaN, as scipy does."""
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.ttest_ind(ref.values, cur.values)[1])


@register_test(
    "mannw",
    score_kind="p_value",
    default_threshold=0.05,
    kinds=("numerical",),
    inclusive=False,
    evidently_name="mannw",
    aliases=("mann_whitney",),
)
def mann_whitney(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Mann–Whitney U test (scipy ``mannwhitneyu``, alternative "less" as in
    Evidently: reference stochastically smaller than current); score is the
    p-value. Drift when ``p < threshold``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.mannwhitneyu(ref.values, cur.values, alternative="less")[1])


@register_test(
    "es",
    score_kind="p_value",
    default_threshold=0.05,
    kinds=("numerical",),
    inclusive=False,
    evidently_name="es",
    aliases=("epps_singleton",),
)
def epps_singleton(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Epps–Singleton test on the empirical characteristic functions (scipy
    ``epps_singleton_2samp``); score is the p-value. Drift when
    ``p < threshold``. Zero inter-quartile range of the pooled data (where
    Evidently raises) or fewer than 5 values on a side: NaN."""
    if ref.n < 5 or cur.n < 5:
        return math.nan
    pooled = np.hstack((ref.values, cur.values))
    if stats.iqr(pooled) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(stats.epps_singleton_2samp(ref.values, cur.values)[1])
        except (ValueError, np.linalg.LinAlgError):
            return math.nan
