"""Keeping a detector's running sums finite, so its state stays valid JSON."""

from __future__ import annotations

#: figures beyond ±this count as ±this. A figure can be finite and huge (a regression
#: window's MAE with one label of 1e200); its square in the warm-up's variance, or its
#: z-score against a small sigma, overflowed to infinity, which JSON cannot hold (orjson
#: writes null): the stored state then failed to load on every later window. Squares and
#: sums of values this large stay finite (1e108 windows of them would be needed to
#: overflow); a figure this large is an extreme either way, so the verdict is the same.
LIMIT = 1e100


def bounded(x: float) -> float:
    """``x`` (finite) clamped to ``[-LIMIT, LIMIT]``."""
    return min(max(x, -LIMIT), LIMIT)
