"""The performance gauges of ``/metrics``: each model's newest computed performance window per version.

For every model with ``[models.performance] enabled``, the versions the drift gauges export
(:func:`monitor.web.drift_metrics.recent_versions`) and for each of them the figures of the
whole window (column ``""``) of its newest all-rows window whose labels matured:

- ``driftwarden_performance{model,version,metric}``: ``labelled_rows``, ``label_coverage``,
  ``labels_unknown_class``, the realized figures of the model's shape (``accuracy``, ``f1``,
  ``roc_auc``, ``mae`` ...), and their ``_segment_gap``, ``_delta``, ``_worse_p``,
  ``_estimation_error`` when the window has them (see README "Labels and performance");
- ``driftwarden_performance_ci_low`` / ``_ci_high`` (same labels): the bootstrap interval,
  for the figures that have one;
- ``driftwarden_performance_window_end_timestamp_seconds{model,version}``: that window's end
  (performance lags the drift gauges by up to ``labels.delay``).

Estimated figures (computed when a window closes, from the scores alone) are gauges of the
newest judged window: ``driftwarden_estimated_performance`` in :mod:`monitor.web.drift_metrics`.
A figure that is undefined in its window (NaN, e.g. ROC AUC with one class) has no sample.
``label_drift`` (a figure of the label column) is not exported. Labels: ``metric`` values are
driftwarden's figure names, versions are capped as the drift gauges', models from the config.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any

from monitor.web.drift_metrics import RECENT_WINDOWS, recent_versions
from storage.db import Store
from storage.overview import latest_performance
from storage.records import parse_iso


def search_depth(delay: timedelta, step: timedelta) -> int:
    """How many of a version's newest windows to search for its newest computed performance
    window: those of ``labels.delay`` (a window matures that long after its end at the
    latest; ``step``: the model's window step, > 0) and :data:`RECENT_WINDOWS` more."""
    return math.ceil(delay / step) + RECENT_WINDOWS


def performance_families(store: Store, models: Mapping[str, tuple[int, int]]) -> Iterator[Any]:
    """The performance gauges of ``models`` (name -> (its version cap ``limits.max_versions``,
    its :func:`search_depth`)); models without performance are not passed."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    labels = ["model", "version", "metric"]
    value = GaugeMetricFamily(
        "driftwarden_performance", "Performance figure of the newest window whose labels matured", labels=labels
    )
    low = GaugeMetricFamily("driftwarden_performance_ci_low", "Lower bound of the figure's bootstrap interval", labels=labels)
    high = GaugeMetricFamily("driftwarden_performance_ci_high", "Upper bound of the figure's bootstrap interval", labels=labels)
    end = GaugeMetricFamily(
        "driftwarden_performance_window_end_timestamp_seconds",
        "End of the newest window whose labels matured (event time, Unix time)", labels=["model", "version"],
    )
    for model, (most, depth) in models.items():
        ends: dict[str, str] = {}
        for r in latest_performance(store, model, recent_versions(store, model, most), depth):
            v, metric = r["version"], r["metric"]
            ends[v] = r["end"]
            if _finite(r["value"]):
                value.add_metric([model, v, metric], r["value"])
            if _finite(r["ci_low"]) and _finite(r["ci_high"]):
                low.add_metric([model, v, metric], r["ci_low"])
                high.add_metric([model, v, metric], r["ci_high"])
        for v, t in sorted(ends.items()):
            end.add_metric([model, v], parse_iso(t).timestamp())
    yield from (value, low, high, end)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)
