"""Tests on category counts: chi-square, proportion z-test, Fisher exact, G-test.

Numerical columns are accepted too; their distinct values act as categories
(Evidently's ``auto`` does this for numerical columns with at most five
distinct values).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from scipy.special import chdtrc, ndtr, xlogy

from detectors._columns import CurrentColumn, PreparedColumn, sorted_keys, union_counts
from detectors.drift.registry import register_test


@register_test(
    "chisquare",
    score_kind="p_value",
    default_threshold=0.05,
    kinds=("categorical", "numerical"),
    inclusive=False,
    evidently_name="chisquare",
    aliases=("chi2", "chi_square"),
    reads_order=False,
)
def chisquare(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Pearson chi-square goodness of fit of the current counts against the
    reference shares scaled to the window size (degrees of freedom: distinct
    values − 1); score is the p-value. A category absent from the reference
    gives p = 0. Drift when ``p < threshold``. One distinct value: NaN."""
    _, rc, cc = union_counts(ref, cur)
    k_norm = cur.n / ref.n
    f_exp = rc * k_norm
    f_obs = cc.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.sum((f_obs - f_exp) ** 2 / f_exp)
    return float(chdtrc(len(rc) - 1, stat))


@register_test(
    "z",
    score_kind="p_value",
    default_threshold=0.05,
    kinds=("categorical", "numerical"),
    inclusive=False,
    evidently_name="z",
    aliases=("ztest", "proportions_z"),
    reads_order=False,
)
def z_test(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Two-proportion z-test on the share of the first value (in sorted order)
    of reference ∪ current versus all others; score is the two-sided p-value.
    Both sides holding the same single value: p = 1. Drift when
    ``p < threshold``."""
    rkeys, rcounts = ref.value_counts()
    ckeys, ccounts = cur.value_counts()
    if len(rkeys) == 1 and len(ckeys) == 1 and rkeys[0] == ckeys[0]:
        return 1.0
    keys, rc, cc = union_counts(ref, cur)
    first = sorted_keys(keys)[0]
    i = keys.index(first)
    n1, n2 = ref.n, cur.n
    p1 = float(n1 - int(rc[i])) / n1
    p2 = float(n2 - int(cc[i])) / n2
    big_p = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(big_p * (1 - big_p) * (1.0 / n1 + 1.0 / n2))
    return float(2 * (1 - ndtr(np.abs(z))))


@register_test(
    "fisher_exact",
    score_kind="p_value",
    default_threshold=0.1,
    kinds=("categorical", "numerical"),
    inclusive=False,
    evidently_name="fisher_exact",
    aliases=("fisher",),
    reads_order=False,
)
def fisher_exact(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Fisher's exact test on the 2×2 table (current, reference) × (value A,
    value B); score is the two-sided p-value. Needs binary data: more than two
    distinct values in reference ∪ current gives NaN. Unlike Evidently, the
    two sides need not have the same size. Drift when ``p < threshold``."""
    _, rc, cc = union_counts(ref, cur)
    if len(rc) > 2:
        return math.nan
    if len(rc) == 1:
        return 1.0
    table = np.array([[int(cc[1]), int(cc[0])], [int(rc[1]), int(rc[0])]])
    return float(stats.fisher_exact(table)[1])


@register_test(
    "g_test",
    score_kind="p_value",
    default_threshold=0.1,
    kinds=("categorical", "numerical"),
    inclusive=False,
    evidently_name="g_test",
    aliases=("g",),
    reads_order=False,
)
def g_test(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """G-test (log-likelihood ratio) of the current counts against the
    reference shares scaled to the window size; score is the p-value.
    Evidently passes unscaled reference counts, which scipy rejects unless
    both sides have the same size; for equal sizes the two agree. Drift when
    ``p < threshold``. One distinct value: NaN."""
    _, rc, cc = union_counts(ref, cur)
    f_exp = rc * (cur.n / ref.n)
    f_obs = cc.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.sum(2.0 * xlogy(f_obs, f_obs / f_exp))
    return float(chdtrc(len(rc) - 1, stat))


def _tvd_scaled(rc: np.ndarray, cc: np.ndarray, n1: int, n2: int) -> int:
    """2·n1·n2 · TVD as an exact integer (so equal distances compare equal)."""
    return int(np.abs(rc * n2 - cc * n1).sum())


TVD_PERMUTATIONS = 1000


@register_test(
    "TVD",
    score_kind="p_value",
    default_threshold=0.1,
    kinds=("categorical",),
    inclusive=False,
    evidently_name="TVD",
    aliases=("tvd", "total_variation"),
    reads_order=False,
)
def total_variation(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Permutation test on the total variation distance ½·Σ|p − q| of the
    category shares: 1000 random splits of the pooled values (seed 0, the
    same draws as Evidently's ``permutation_test``); score is the share of
    splits whose distance reaches the observed one. Distances are compared
    exactly (as integers); Evidently compares floats summed in set order, so
    splits whose distance equals the observed one can count differently and
    its p-value may differ from ours by a few thousandths. Drift when
    ``p < threshold``. Costs 1000 permutations of the pooled rows per window:
    use it on small windows."""
    keys, rc, cc = union_counts(ref, cur)
    n1, n2 = ref.n, cur.n
    observed = _tvd_scaled(rc, cc, n1, n2)
    index = {k: i for i, k in enumerate(keys)}
    cur_map = np.array([index[c] for c in cur.categories], dtype=np.intp)
    combined = np.concatenate((ref.codes, cur_map[cur.codes]))
    total = rc + cc
    n_all, k = combined.shape[0], len(keys)
    rs = np.random.RandomState(0)
    hits = 0
    for _ in range(TVD_PERMUTATIONS):
        c_ref = np.bincount(combined[rs.permutation(n_all)[:n1]], minlength=k)
        hits += observed <= _tvd_scaled(c_ref, total - c_ref, n1, n2)
    return hits / TVD_PERMUTATIONS
