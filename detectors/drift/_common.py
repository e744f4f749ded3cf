"""Helpers shared by the drift test families (binning as Evidently does it)."""

from __future__ import annotations

import numpy as np

from detectors._columns import CurrentColumn, PreparedColumn, fixed_bin_counts, union_counts

#: numerical columns with more than this many distinct reference values are
#: binned into a Sturges histogram; fewer are binned one bin per value
#: (Evidently's ``get_binned_data``).
EVIDENTLY_HIST_MIN_UNIQUE = 20


def search_sorted_inclusive(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """numpy.histogram's cumulative counts of sorted ``a`` at edges ``v`` (last edge closed)."""
    return np.concatenate((a.searchsorted(v[:-1], "left"), a.searchsorted(v[-1:], "right")))


def sturges_edges(lo: float, hi: float, size: int) -> np.ndarray:
    """``np.histogram_bin_edges(x, bins="sturges")`` from x's min, max and size only."""
    width = (hi - lo) / (np.log2(size) + 1.0)
    first, last = lo, hi
    if first == last:
        first = first - 0.5
        last = last + 0.5
    n_bins = int(np.ceil((last - first) / width)) if width else 1
    return np.linspace(first, last, n_bins + 1, endpoint=True, dtype=np.float64)


def feel_zeroes(p: np.ndarray) -> np.ndarray:
    """Evidently's substitution of empty bins: min(non-zero)/1e6, or 1e-4 when min > 1e-4."""
    if not (p == 0).any():
        return p
    nz = p[p != 0]
    if nz.shape[0] == 0:
        return p
    m = nz.min()
    p = p.copy()
    np.place(p, p == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return p


def binned_percents(
    ref: PreparedColumn, cur: CurrentColumn, bins: str, fill_zeroes: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current bin shares, as Evidently's ``get_binned_data`` (or fixed bins).

    ``bins="evidently"``: numerical columns with more than 20 distinct reference
    values get Sturges bins over the combined range of reference and current;
    otherwise one bin per distinct value of reference ∪ current.
    ``bins="fixed"``: the reference's own bins plus out-of-range bins; bins
    empty on both sides are dropped (they carry no information and would only
    add substitution noise).
    """
    if bins == "fixed" and ref.fixed_ref_counts is not None:
        rc, cc = _fixed_counts(ref, cur)
        keep = (rc != 0) | (cc != 0)
        rc, cc = rc[keep], cc[keep]
    elif ref.kind == "numerical" and ref.n_unique > EVIDENTLY_HIST_MIN_UNIQUE:
        cs = cur.sorted_values
        lo = min(ref.min, float(cs[0]))
        hi = max(ref.max, float(cs[-1]))
        edges = sturges_edges(lo, hi, ref.n + cur.n)
        rc = np.diff(search_sorted_inclusive(ref.sorted_values, edges))
        cc = np.diff(search_sorted_inclusive(cs, edges))
    else:
        _, rc, cc = union_counts(ref, cur)
    rp = rc / ref.n
    cp = cc / cur.n
    if fill_zeroes:
        rp = feel_zeroes(rp)
        cp = feel_zeroes(cp)
    return rp, cp


def _fixed_counts(ref: PreparedColumn, cur: CurrentColumn) -> tuple[np.ndarray, np.ndarray]:
    assert ref.fixed_ref_counts is not None
    if ref.fixed_edges is not None:
        return ref.fixed_ref_counts, fixed_bin_counts(ref.fixed_edges, cur.sorted_values)
    keys = ref.fixed_keys or ()
    index = {k: i for i, k in enumerate(keys)}
    cc = np.zeros(len(keys) + 1, dtype=np.int64)
    ckeys, ccounts = cur.value_counts()
    for k, c in zip(ckeys, ccounts.tolist(), strict=True):
        cc[index.get(k, len(keys))] += c
    return ref.fixed_ref_counts, cc


def ref_cdf_at(ref: PreparedColumn, x: np.ndarray) -> np.ndarray:
    """Count of reference values <= each x (x any order)."""
    return ref.sorted_values.searchsorted(x, "right")
