"""Distances between the two empirical distributions: Wasserstein (normed), energy."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from detectors._columns import CurrentColumn, PreparedColumn
from detectors.drift.registry import register_test


def _merged_steps(ref: PreparedColumn, cur: CurrentColumn) -> tuple[np.ndarray, np.ndarray]:
    """Scaled ECDF difference and gaps over the merged sorted values of both samples.

    Returns ``(D, deltas)`` with ``D[i] = n2·F_ref(x_i) − n1·F_cur(x_i)`` (an
    exact integer) for each merged point but the last, and ``deltas[i] =
    x_{i+1} − x_i``, so that ``∫(F_ref − F_cur)^p = Σ|D|^p·deltas / (n1·n2)^p``.

    The two sorted samples are merged as complex numbers (value + i·origin):
    one stable sort of two sorted runs gives the merged values exactly and, in
    the imaginary part, where each came from; a running sum gives the ECDFs.
    """
    n1, n2 = ref.n, cur.n
    merged = np.empty(n1 + n2, dtype=np.complex128)
    merged.real[:n1] = ref.sorted_values
    merged.imag[:n1] = 0.0
    merged.real[n1:] = cur.sorted_values
    merged.imag[n1:] = 1.0
    merged.sort(kind="stable")
    steps = merged.imag[:-1] * -(n1 + n2)
    steps += n2  # +n2 per reference value, -n1 per current value
    d = np.cumsum(steps, out=steps)  # exact: integers below 2**53
    return d, np.diff(merged.real)


def wasserstein_distance(ref: PreparedColumn, cur: CurrentColumn) -> float:
    """First Wasserstein distance; equals ``scipy.stats.wasserstein_distance`` to ~1e-15 relative.

    Computed as ∫|Q_ref(u) − Q_cur(u)| du over the quantile functions — the
    same integral as scipy's ∫|F_ref − F_cur| dx, read the other way, with
    no merge of the two samples. The quantile functions step at i/n1 and
    j/n2; on the scale L = lcm(n1, n2) reference cell i spans ((i−1)·a, i·a]
    and current cell j spans ((j−1)·b, j·b] (a = L/n1, b = L/n2). Each piece
    of the common refinement is charged to its right end, a reference or a
    current step, whose partner cell follows by integer division, so the sum
    takes one pass over each sample. Every term is a difference of two data
    values, so the result keeps full relative precision even for values far
    from zero with a tiny spread. With equal sizes it is the mean
    |difference| of the two sorted samples.
    """
    return float(_sorted_distances(ref.sorted_values[None, :], cur.sorted_values[None, :])[0])


def _sorted_distances(rs: np.ndarray, cs: np.ndarray) -> np.ndarray:
    """:func:`wasserstein_distance` of each row pair: ``rs`` (k, n1) and ``cs`` (k, n2),
    every row sorted ascending, n1 and n2 >= 1. Each row is summed alone (numpy's
    pairwise sum of a contiguous row is its 1-d sum), so a row gives bit for bit what
    it gives alone; returns the k distances (float64)."""
    n1, n2 = rs.shape[1], cs.shape[1]
    if n1 == n2:
        diff = rs - cs
        np.abs(diff, out=diff)
        return np.add.reduce(diff, axis=1) / n1
    c_idx, w_ref, r_idx, w_cur, scale, c_count, r_count = _pairing(n1, n2)
    w_ref, w_cur = _row_weights(n1, n2, rs.shape[0])
    # each side's partner cells, gathered or repeated (the cells are ascending runs, so both
    # give the same array): a gather costs per cell it makes, a repeat per cell it reads
    t_ref = np.repeat(cs, c_count, axis=1) if n2 < n1 else cs.take(c_idx, axis=1)
    np.subtract(rs, t_ref, out=t_ref)
    np.abs(t_ref, out=t_ref)
    t_ref *= w_ref
    t_cur = rs.take(r_idx, axis=1) if n2 < n1 else np.repeat(rs, r_count, axis=1)
    t_cur -= cs
    np.abs(t_cur, out=t_cur)
    t_cur *= w_cur
    return (np.add.reduce(t_ref, axis=1) + np.add.reduce(t_cur, axis=1)) / scale


def _norm(ref: PreparedColumn) -> float:
    """The divisor of the normed distance: the reference's population std, floored at 0.001."""
    return max(ref.std, 0.001)


def wasserstein_many(refs: Sequence[PreparedColumn], currents: Sequence[np.ndarray]) -> list[float]:
    """:func:`wasserstein` (normed) of several columns at once, bit for bit the same.

    ``refs``: numerical reference columns with the same number of values n1 >= 1;
    ``currents``: each one's window values (finite, any order), all n2 >= 1 long.
    One 2-d sort and one pass of :func:`_sorted_distances` (the code one column
    runs too) instead of a dozen numpy calls per column: the fixed cost that
    dominates small windows.
    """
    cs = np.array(currents)  # np.stack's copy (rows of one length) without its Python wrapper: ~3.5 µs of 6
    cs.sort(axis=1)
    d = _sorted_distances(_sorted_rows(refs), cs)
    return [float(x) / _norm(r) for x, r in zip(d.tolist(), refs, strict=True)]


def _sorted_rows(refs: Sequence[PreparedColumn]) -> np.ndarray:
    """The columns' sorted values as the rows of one array: consecutive rows of the block
    they share (:attr:`PreparedColumn.block`) as they are, else stacked (a copy)."""
    block, first = refs[0].block, refs[0].block_row
    if block is not None and all(r.block is block and r.block_row == first + i for i, r in enumerate(refs)):
        return block[first:first + len(refs)]
    return np.array([r.sorted_values for r in refs])


#: the most weights (rows x reference values) :func:`_row_weights` repeats into one array;
#: more rows than that multiply by the broadcast row instead (same products, 2 MiB at most a copy)
ROW_WEIGHTS_MAX = 2**18
#: sizes (n1, n2, k) :func:`_row_weights` was asked for once (the newest few, in order)
_asked_once: dict[tuple[int, int, int], None] = {}


def _row_weights(n1: int, n2: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pairing`'s piece lengths ``w_ref`` and ``w_cur`` for ``k`` rows of
    :func:`_sorted_distances`' products, (k, n1) and (k, n2) where they can be: numpy
    multiplies arrays of one shape in its contiguous loop, while a (n,) row broadcast over
    k rows goes through its buffered iterator (~2x the instructions: ~0.35M of a 100-row
    window's 21 columns against a 2,000-row reference). The products are the same floats
    either way. ``k == 1``: views, no copy. Repeated rows only for sizes asked for before
    (windows of one size: count windows, steady streams): repeating costs about what it
    saves once, so a window of a new size multiplies by the broadcast rows, as do more
    than :data:`ROW_WEIGHTS_MAX` weights."""
    _, w_ref, _, w_cur, _, _, _ = _pairing(n1, n2)
    if k == 1:
        return w_ref[None, :], w_cur[None, :]
    key = (n1, n2, k)
    if k * (n1 + n2) > ROW_WEIGHTS_MAX:
        return w_ref, w_cur
    if key not in _asked_once:
        _asked_once[key] = None
        for old in list(_asked_once)[:-8]:  # list(): one step under the GIL, whatever other threads do
            _asked_once.pop(old, None)
        return w_ref, w_cur
    return _repeated_weights(n1, n2, k)


@functools.lru_cache(maxsize=4)
def _repeated_weights(n1: int, n2: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_pairing`'s ``w_ref`` and ``w_cur`` repeated as ``k`` rows (read-only)."""
    _, w_ref, _, w_cur, _, _, _ = _pairing(n1, n2)
    out = (np.tile(w_ref, (k, 1)), np.tile(w_cur, (k, 1)))
    for arr in out:
        arr.flags.writeable = False  # shared by threads and later windows
    return out


@functools.lru_cache(maxsize=4)
def _pairing(
    n1: int, n2: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """Partner cells and piece lengths for sizes (n1, n2); see :func:`wasserstein_distance`.

    Returns ``(c_idx, w_ref, r_idx, w_cur, scale, c_count, r_count)``: ``c_idx`` (ascending)
    is the current cell paired with each reference cell, ``r_idx`` (ascending) the
    reference cell paired with each current cell, and ``c_count[j]`` / ``r_count[i]``
    how often each cell occurs in them (the same pairing as run lengths).
    Depends on the sizes only (a few are cached: count windows repeat their
    size); the distance never depends on whether this was cached.
    """
    g = math.gcd(n1, n2)
    a, b = n2 // g, n1 // g  # cell widths in units of 1/L
    # pieces ending at a reference step i·a: current cell c = ⌊(i·a − 1)/b⌋,
    # length min(a, (i·a − 1) mod b + 1)
    c_idx, rem = np.divmod(np.arange(1, n1 + 1, dtype=np.int64) * a - 1, b)
    rem += 1
    w_ref = np.minimum(rem, a).astype(np.float64)
    # pieces ending at a current step j·b: reference cell r = ⌊j·b/a⌋, length
    # min(b, j·b mod a) — 0 where j·b is also a reference step (counted there)
    r_idx, rem = np.divmod(np.arange(1, n2 + 1, dtype=np.int64) * b, a)
    w_cur = np.minimum(rem, b).astype(np.float64)
    np.minimum(r_idx, n1 - 1, out=r_idx)
    c_count = np.bincount(c_idx, minlength=n2)
    r_count = np.bincount(r_idx, minlength=n1)
    out = (c_idx, w_ref, r_idx, w_cur, float(n1 // g) * float(n2), c_count, r_count)
    for arr in (*out[:4], *out[5:]):
        arr.flags.writeable = False  # shared by threads and later windows
    return out


@register_test(
    "wasserstein",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical",),
    inclusive=True,
    evidently_name="wasserstein",
    aliases=("wasserstein_norm",),
    reads_order=False,
)
def wasserstein(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Wasserstein-1 distance divided by the reference's standard deviation
    (population std, floored at 0.001), as Evidently's "Wasserstein distance
    (normed)". Drift when ``d >= threshold``."""
    return wasserstein_distance(ref, cur) / _norm(ref)


@register_test(
    "ed",
    score_kind="distance",
    default_threshold=0.1,
    kinds=("numerical",),
    inclusive=False,
    evidently_name="ed",
    aliases=("energy_distance",),
    reads_order=False,
)
def energy(ref: PreparedColumn, cur: CurrentColumn, bins: str) -> float:
    """Energy distance (scipy ``energy_distance``: sqrt(2) times the L2 distance
    between the two ECDFs), not normalised. Drift when ``d > threshold``."""
    d, deltas = _merged_steps(ref, cur)
    d /= float(ref.n) * float(cur.n)
    return float(np.sqrt(2) * np.sqrt(np.sum(np.square(d) * deltas)))
