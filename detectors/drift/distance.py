"""Distances between the two empirical distributions: Wasserstein (normed), energy."""

from __future__ import annotations

import numpy as np

from detectors._columns import CurrentColumn, PreparedColumn
from detectors.drift.registry import register_test


def _merged_steps(ref: PreparedColumn, cur: CurrentColumn) -> tuple[np.ndarray, np.ndarray]:
    """Scaled ECDF difference and gaps over the merged sorted values of both samples.

    Returns ``(D, deltas)`` with ``D[i] = n2·F_ref(x_i) − n1·F_cur(x_i)`` (an
    exact integer) for each merged point but the last, and ``deltas[i] =
    x_{i+1} − x_i``, so that ``∫|F_ref − F_cur| = Σ|D|·deltas / (n1·n2)``.

    scipy's ``_cdf_distance`` sorts reference ∪ current and binary-searches
    every merged point in both samples. Here the reference is sorted once, so a
    window costs one sort of its own values plus a linear merge: the origin of
    each value rides in the lowest mantissa bit (cleared for the reference, set
    for the current), so one stable sort of the two sorted runs yields both
    the merged order and, via a running sum, the two ECDFs. Gaps are taken
    between values with that bit cleared: each value moves by at most one ulp
    towards zero (values with an even last bit — integers, halves, most
    rounded data — not at all), ties stay ties, and the distance moves by at
    most ~2 ulp of the largest |value|: far inside the 1e-9 parity budget.
    """
    n1, n2 = ref.n, cur.n
    rt = ref.tagged_sorted_values
    merged = np.empty(n1 + n2)
    merged[:n1] = rt
    mc = merged[n1:].view(np.int64)
    np.bitwise_or(cur.sorted_values.view(np.int64), 1, out=mc)
    merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
    bits = merged.view(np.int64)
    steps = bits[:-1] & 1  # 1 where the value comes from the current window
    steps *= -(n1 + n2)
    steps += n2  # +n2 per reference value, -n1 per current value
    d = np.cumsum(steps, out=steps)
    # gaps between the tag-cleared values: ties stay exact ties (gap 0) whichever
    # side they come from, and the cleared values are still non-decreasing
    np.bitwise_and(bits, ~np.int64(1), out=bits)
    return d, np.diff(merged)


def wasserstein_distance(ref: PreparedColumn, cur: CurrentColumn) -> float:
    """First Wasserstein distance; equals ``scipy.stats.wasserstein_distance`` to ~1e-15 relative."""
    d, deltas = _merged_steps(ref, cur)
    np.abs(d, out=d)
    deltas *= d
    return float(np.sum(deltas) / (float(ref.n) * float(cur.n)))


@register_test(
    "wasserstein",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical",),
    inclusive=True,
    evidently_name="wasserstein",
    aliases=("wasserstein_norm",),
)
def wasserstein(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Wasserstein-1 distance divided by the reference's standard deviation
    (population std, floored at 0.001), as Evidently's "Wasserstein distance
    (normed)". Drift when ``d >= threshold``."""
    norm = max(ref.std, 0.001)
    return wasserstein_distance(ref, cur) / norm


@register_test(
    "ed",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical",),
    inclusive=False,
    evidently_name="ed",
    aliases=("energy_distance",),
)
def energy(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Energy distance (scipy ``energy_distance``: sqrt(2) times the L2 distance
    between the two ECDFs), not normalised. Drift when ``d > threshold``."""
    d, deltas = _merged_steps(ref, cur)
    d = d.astype(np.float64) / (float(ref.n) * float(cur.n))
    return float(np.sqrt(2) * np.sqrt(np.sum(np.square(d) * deltas)))
