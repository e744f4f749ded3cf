"""Distances between the two empirical distributions: Wasserstein (normed), energy."""

from __future__ import annotations

import numpy as np

from detectors._columns import CurrentColumn, PreparedColumn
from detectors.drift.registry import register_test

_vecdot = getattr(np, "vecdot", None) or (lambda a, b: np.dot(a, b))


def _cdf_terms(ref: PreparedColumn, cur: CurrentColumn) -> tuple[np.ndarray, np.ndarray]:
    """(|F_ref - F_cur| at each merged point, gap to the next point), as scipy's ``_cdf_distance``."""
    rs, cs = ref.sorted_values, cur.sorted_values
    all_values = np.concatenate((rs, cs))
    all_values.sort(kind="mergesort")  # two sorted runs: a linear merge
    deltas = np.diff(all_values)
    head = all_values[:-1]
    u_cdf = rs.searchsorted(head, "right") / rs.size
    v_cdf = cs.searchsorted(head, "right") / cs.size
    return u_cdf - v_cdf, deltas


def wasserstein_distance(ref: PreparedColumn, cur: CurrentColumn) -> float:
    """First Wasserstein distance, equal to ``scipy.stats.wasserstein_distance``."""
    diff, deltas = _cdf_terms(ref, cur)
    return float(_vecdot(np.abs(diff), deltas))


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
    diff, deltas = _cdf_terms(ref, cur)
    return float(np.sqrt(2) * np.sqrt(_vecdot(np.square(diff), deltas)))
