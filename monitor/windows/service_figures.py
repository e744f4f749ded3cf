"""Service-health figures of a closed window, from the prediction events alone.

- ``events_per_second``: rows of the window (one model version, one segment) per
  second of window size; time windows only.
- ``latency_p50``, ``latency_p95``, ``latency_p99``: percentiles (linear
  interpolation, numpy's default) of the latency field
  (``[models.fields] latency``), in the field's own unit; events without it are
  left out. Absent when no event of the window carried one.
"""

from __future__ import annotations

import numpy as np

from monitor.ingest.schema import LATENCY_COLUMN
from monitor.windows.model_windows import OpenWindow
from storage.records import DATASET, MetricRow

PERCENTILES = (50, 95, 99)


def service_figures(w: OpenWindow, *, by: str, size_ms: int | None, latency: bool) -> list[MetricRow]:
    out: list[MetricRow] = []
    if by == "time" and size_ms:
        out.append(MetricRow(DATASET, "events_per_second", w.rows / (size_ms / 1000)))
    if latency and w.chunks:
        values = np.concatenate([c.columns[LATENCY_COLUMN] for c in w.chunks if LATENCY_COLUMN in c.columns])
        values = values[np.isfinite(values)]
        if values.shape[0]:
            for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES).tolist(), strict=True):
                out.append(MetricRow(DATASET, f"latency_p{q}", float(v)))
    return out
