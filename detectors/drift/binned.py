"""Divergences between binned distributions: PSI, Jensen–Shannon, KL, Hellinger.

Binning follows ``bins`` (see :func:`detectors.prepare_reference`): Evidently's
per-window binning on reference and current together by default, or the
reference's fixed bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.special import rel_entr

from detectors._columns import CurrentColumn, PreparedColumn, union_counts
from detectors.drift._common import binned_percents, search_sorted_inclusive, sturges_edges
from detectors.drift.registry import register_test


@register_test(
    "psi",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical", "categorical"),
    inclusive=True,
    evidently_name="psi",
    reads_order=False,
)
def psi(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Population Stability Index, sum((r - c) * ln(r / c)) over bins, empty
    bins replaced by a tiny share as Evidently does. Drift when
    ``psi >= threshold``."""
    r, c = binned_percents(ref, cur, bins, fill_zeroes=True)
    return float(np.sum((r - c) * np.log(r / c)))


@register_test(
    "jensenshannon",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical", "categorical"),
    inclusive=True,
    evidently_name="jensenshannon",
    aliases=("js",),
    reads_order=False,
)
def jensenshannon(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Jensen–Shannon distance (natural log; scipy ``jensenshannon``) between
    the binned shares, empty bins kept at zero. Drift when ``d >= threshold``."""
    p, q = binned_percents(ref, cur, bins, fill_zeroes=False)
    return float(_js_rows(p[None, :], q[None, :])[0])


def _js_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon distance of each row pair of the bin shares ``p`` and ``q`` (k, m),
    m >= 1. Each row is normalised and summed alone (numpy's pairwise sum of a contiguous
    row is its 1-d sum), so a row gives bit for bit what it gives alone; returns k floats."""
    # np.add.reduce is what np.sum calls, without its wrapper (most of a small column's time)
    p = p / np.add.reduce(p, axis=1, keepdims=True)
    q = q / np.add.reduce(q, axis=1, keepdims=True)
    m = (p + q) / 2.0
    js = np.add.reduce(rel_entr(p, m), axis=1) + np.add.reduce(rel_entr(q, m), axis=1)
    return np.sqrt(js / 2.0)


def jensenshannon_many(refs: Sequence[PreparedColumn], currents: Sequence[CurrentColumn]) -> list[float]:
    """:func:`jensenshannon` of several categorical columns at once (``bins="evidently"``, or
    columns without fixed bins), bit for bit the same; every ``ref.n`` and ``cur.n`` must be
    at least 1. Columns with the same number of categories (reference and window together)
    have their count vectors stacked and scored in one 2-d pass, instead of a dozen numpy
    calls per column (most of a small window's categorical drift time)."""
    by_size: dict[int, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for i, (ref, cur) in enumerate(zip(refs, currents, strict=True)):
        _, rc, cc = union_counts(ref, cur)
        by_size.setdefault(rc.shape[0], []).append((i, rc, cc))
    out = [math.nan] * len(refs)
    for group in by_size.values():
        idx = [i for i, _, _ in group]
        # the shares as binned_percents makes them: each count over its side's size
        rn = np.array([refs[i].n for i in idx], dtype=np.int64)[:, None]
        cn = np.array([currents[i].n for i in idx], dtype=np.int64)[:, None]
        # np.array of rows of one length: np.stack's copy, without its Python wrapper
        got = _js_rows(np.array([rc for _, rc, _ in group]) / rn, np.array([cc for _, _, cc in group]) / cn)
        for i, d in zip(idx, got.tolist(), strict=True):
            out[i] = d
    return out


@register_test(
    "kl_div",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical", "categorical"),
    inclusive=True,
    evidently_name="kl_div",
    aliases=("kl",),
    reads_order=False,
)
def kl_div(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Kullback–Leibler divergence KL(reference || current) of the binned
    shares (scipy ``entropy``), empty bins replaced as for PSI. Drift when
    ``kl >= threshold``."""
    pk, qk = binned_percents(ref, cur, bins, fill_zeroes=True)
    qk = qk / np.sum(qk, axis=0, keepdims=True)
    pk = pk / np.sum(pk, axis=0, keepdims=True)
    return float(np.sum(rel_entr(pk, qk), axis=0))


def _hellinger_from_products(products: list[float], scale: float | None = None) -> float:
    h = 0.0
    for v in products:  # sequential, as Evidently's loop (sqrt(1 - h) amplifies rounding)
        h += math.sqrt(v) * scale if scale is not None else math.sqrt(v)
    h = float(np.clip(h, 0, 1))
    return math.sqrt(1 - h)


@register_test(
    "hellinger",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical", "categorical"),
    inclusive=True,
    evidently_name="hellinger",
    reads_order=False,
)
def hellinger(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Hellinger distance sqrt(1 - Σ sqrt(p·q)) in [0, 1]. Categorical: over
    category shares. Numerical (Evidently mode): over density histograms with
    Sturges bins sized by the number of distinct values of reference ∪
    current. Fixed mode: over the reference's fixed bins. Drift when
    ``d >= threshold``."""
    if bins == "fixed" and ref.fixed_ref_counts is not None:
        r, c = binned_percents(ref, cur, bins, fill_zeroes=False)
        return _hellinger_from_products((r * c).tolist())
    if ref.kind == "categorical":
        _, rc, cc = union_counts(ref, cur)
        r = rc / ref.n
        c = cc / cur.n
        return _hellinger_from_products(
            [float(a) * float(b) for a, b in zip(r.tolist(), c.tolist(), strict=True)]
        )
    keys, _, _ = union_counts(ref, cur)
    edges = sturges_edges(float(keys[0]), float(keys[-1]), len(keys))
    db = np.array(np.diff(edges), float)
    nr = np.diff(search_sorted_inclusive(ref.sorted_values, edges))
    nc = np.diff(search_sorted_inclusive(cur.sorted_values, edges))
    h1 = nr / db / nr.sum()
    h2 = nc / db / nc.sum()
    bin_width = (edges.max() - edges.min()) / (len(edges) - 1)
    return _hellinger_from_products(
        [float(a) * float(b) for a, b in zip(h1.tolist(), h2.tolist(), strict=True)], bin_width
    )
