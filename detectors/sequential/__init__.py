"""Sequential change detectors over a series of window figures (river-style).

Feed one figure per closed window (a drift score, an error rate, a metric)
with ``update(x)``; read ``drift_detected``; ``reset()`` forgets everything.
``state()`` returns a JSON-serialisable dict and ``from_state()`` rebuilds an
identical detector, so a restart does not forget where a stream was.
"""

from detectors.sequential.cusum import CUSUM
from detectors.sequential.page_hinkley import PageHinkley

__all__ = ["CUSUM", "PageHinkley"]
