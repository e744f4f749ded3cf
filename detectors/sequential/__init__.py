"""Sequential change detectors over a series of window figures (river-style).

Feed one figure per closed window (a drift score, an error rate, a metric)
with ``update(x)``; read ``drift_detected``; ``reset()`` forgets everything.
``state()`` returns a JSON-serialisable dict and ``from_state()`` rebuilds an
identical detector, so a restart does not forget where a stream was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detectors.sequential.cusum import CUSUM
from detectors.sequential.page_hinkley import PageHinkley

__all__ = ["CUSUM", "DETECTORS", "PageHinkley", "detector_from_state", "make_detector"]

#: detector kinds by their config name
DETECTORS: dict[str, type[CUSUM] | type[PageHinkley]] = {
    "cusum": CUSUM,
    "page_hinkley": PageHinkley,
}


def make_detector(kind: str, params: Mapping[str, Any]) -> CUSUM | PageHinkley:
    """A fresh detector of ``kind`` (``"cusum"`` or ``"page_hinkley"``) with ``params``
    (its constructor's keyword arguments). Raises ``KeyError``/``ValueError``."""
    try:
        cls = DETECTORS[kind]
    except KeyError:
        raise KeyError(f"unknown detector {kind!r}; known: {', '.join(DETECTORS)}") from None
    return cls(**dict(params))


def detector_from_state(state: Mapping[str, Any]) -> CUSUM | PageHinkley:
    """Rebuild a detector saved with ``state()`` (either kind)."""
    kind = state.get("type")
    if kind == "CUSUM":
        return CUSUM.from_state(dict(state))
    if kind == "PageHinkley":
        return PageHinkley.from_state(dict(state))
    raise ValueError(f"unknown detector state type {kind!r}")
