"""ECDF / rank based tests: Kolmogorov–Smirnov, Cramér–von Mises, Anderson–Darling."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from scipy.special import gammaln, kv

from detectors._columns import CurrentColumn, PreparedColumn
from detectors.drift.registry import register_test

try:  # scipy's exact two-sample KS p-value (private; fall back to ks_2samp on change)
    from scipy.stats._stats_py import _attempt_exact_2kssamp as _scipy_exact_ks
except ImportError:  # pragma: no cover
    _scipy_exact_ks = None

_MAX_AUTO_N = 10000  # scipy's ks_2samp 'auto': exact when max(n1, n2) <= 10000


def ks_statistic(ref: PreparedColumn, cur: CurrentColumn) -> float:
    """Two-sided KS statistic, bit-identical to ``scipy.stats.ks_2samp``'s."""
    n1, n2 = ref.n, cur.n
    cs = cur.sorted_values
    # ECDF differences at every distinct reference value and at every current value
    d_ref = ref.unique_cum_right / n1 - cs.searchsorted(ref.unique_values, "right") / n2
    d_cur = ref.sorted_values.searchsorted(cs, "right") / n1 - cs.searchsorted(cs, "right") / n2
    max_s = max(float(d_ref.max()), float(d_cur.max()))
    min_s = float(np.clip(-min(float(d_ref.min()), float(d_cur.min())), 0, 1))
    return min_s if min_s > max_s else max_s


def ks_pvalue(d: float, n1: int, n2: int) -> float:
    """``ks_2samp(..., method="auto")``'s two-sided p-value for statistic ``d``."""
    g = math.gcd(n1, n2)
    prob = -np.inf
    mode = "exact" if max(n1, n2) <= _MAX_AUTO_N else "asymp"
    if mode == "exact" and _scipy_exact_ks is not None:
        success, d, prob = _scipy_exact_ks(n1, n2, g, d, "two-sided")
        if not success:
            mode = "asymp"
    if mode == "asymp":
        m, n = sorted([float(n1), float(n2)], reverse=True)
        en = m * n / (m + n)
        prob = stats.kstwo.sf(d, np.round(en))
    return float(np.clip(prob, 0, 1))


@register_test(
    "ks",
    score_kind="p_value",
    default_threshold=0.05,
    kinds=("numerical",),
    inclusive=True,
    evidently_name="ks",
    reads_order=False,
)
def ks(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Two-sample Kolmogorov–Smirnov test; score is the two-sided p-value
    (scipy ``ks_2samp``, exact below 10,000 rows per side). Drift when
    ``p <= threshold``. The statistic comes from the sorted reference by
    binary search, so a window costs O(n log n) in its own rows."""
    if _scipy_exact_ks is None:  # pragma: no cover - scipy moved its private helper
        return float(stats.ks_2samp(ref.sorted_values, cur.values).pvalue)
    return ks_pvalue(ks_statistic(ref, cur), ref.n, cur.n)


# --------------------------------------------------------------------------- Cramér–von Mises
# Evidently ships its own port of scipy's two-sample Cramér–von Mises test;
# this follows it line by line so the p-values agree (with current scipy's
# numpy-2 dtype fix in the exact branch, where Evidently's copy can raise).


def _pval_cvm_2samp_exact(s: float, m: int, n: int) -> float:
    lcm = np.lcm(m, n)
    a = lcm // m
    b = lcm // n
    mn = m * n
    zeta = lcm**2 * (m + n) * (6 * s - mn * (4 * mn - 1)) // (6 * mn**2)
    zeta_bound = lcm**2 * (m + n)
    combinations = math.comb(m + n, m)
    max_gs = max(zeta_bound, combinations)
    dtype = np.min_scalar_type(max_gs)
    gs = [np.array([[0], [1]], dtype=dtype)] + [np.empty((2, 0), dtype=dtype) for _ in range(m)]
    for u in range(n + 1):
        next_gs = []
        tmp = np.empty((2, 0), dtype=dtype)
        for v, g in enumerate(gs):
            vi, i0, i1 = np.intersect1d(tmp[0], g[0], return_indices=True)
            tmp = np.concatenate(
                [np.stack([vi, tmp[1, i0] + g[1, i1]]), np.delete(tmp, i0, 1), np.delete(g, i1, 1)],
                1,
            )
            res = (a * v - b * u) ** 2
            tmp[0] += res.astype(dtype)  # numpy 2 casting fix, as in current scipy
            next_gs.append(tmp)
        gs = next_gs
    value, freq = gs[m]
    return float(np.float64(np.sum(freq[value >= zeta]) / combinations))


def _cdf_cvm_inf(x: float) -> np.ndarray:
    xa = np.asarray(x)

    def term(x: np.ndarray, k: int) -> np.ndarray:
        u = np.exp(gammaln(k + 0.5) - gammaln(k + 1)) / (np.pi**1.5 * np.sqrt(x))
        y = 4 * k + 1
        q = y**2 / (16 * x)
        b = kv(0.25, q)
        return u * np.sqrt(y) * np.exp(-q) * b

    tot = np.zeros_like(xa, dtype="float")
    cond = np.ones_like(xa, dtype="bool")
    k = 0
    while np.any(cond):
        z = term(xa[cond], k)
        tot[cond] = tot[cond] + z
        cond[cond] = np.abs(z) >= 1e-7
        k += 1
    return tot


def cvm_pvalue(xa: np.ndarray, ya: np.ndarray) -> float:
    """Two-sample Cramér–von Mises p-value (``xa``, ``ya`` sorted, each >= 2 values)."""
    nx, ny = len(xa), len(ya)
    method = "asymptotic" if max(nx, ny) > 20 else "exact"
    z = np.concatenate([xa, ya])
    r = stats.rankdata(z, method="average")
    rx = r[:nx]
    ry = r[nx:]
    u = nx * np.sum((rx - np.arange(1, nx + 1)) ** 2)
    u += ny * np.sum((ry - np.arange(1, ny + 1)) ** 2)
    k, big_n = nx * ny, nx + ny
    t = u / (k * big_n) - (4 * k - 1) / (6 * big_n)
    if method == "exact":
        return _pval_cvm_2samp_exact(u, nx, ny)
    et = (1 + 1 / big_n) / 6
    vt = (big_n + 1.0) * (4 * k * big_n - 3 * (nx**2 + ny**2) - 2 * k)
    vt = vt / (45 * big_n**2 * 4 * k)
    tn = 1 / 6 + (t - et) / np.sqrt(45 * vt)
    if tn < 0.003:
        return 1.0
    return max(0.0, 1.0 - float(_cdf_cvm_inf(tn)))


@register_test(
    "cramer_von_mises",
    score_kind="p_value",
    default_threshold=0.1,
    kinds=("numerical",),
    inclusive=True,
    evidently_name="cramer_von_mises",
    aliases=("cvm",),
    reads_order=False,
)
def cramer_von_mises(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Two-sample Cramér–von Mises test; score is the p-value (exact when both
    sides have at most 20 values, asymptotic otherwise). Drift when
    ``p <= threshold``. Fewer than two values on either side: NaN."""
    if ref.n < 2 or cur.n < 2:
        return math.nan
    return cvm_pvalue(ref.sorted_values, cur.sorted_values)


@register_test(
    "anderson",
    score_kind="p_value",
    default_threshold=0.1,
    kinds=("numerical",),
    inclusive=False,
    evidently_name="anderson",
    aliases=("anderson_darling",),
)
def anderson(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """k-sample Anderson–Darling test (scipy ``anderson_ksamp``) on reference
    and current; score is its significance level, which scipy caps to
    [0.001, 0.25]. Drift when ``p < threshold``. All values identical, or a
    single value in total on one side: NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            res = stats.anderson_ksamp([ref.values, cur.values])
        except (ValueError, IndexError):
            return math.nan
    return float(res[2])
