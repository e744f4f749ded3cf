"""The drift gauges of ``/metrics``: each model's newest judged figures per version and column.

For every model, the versions of its newest :data:`RECENT_WINDOWS` all-rows windows,
at most the model's ``limits.max_versions`` of them (those seen last), and for each of
them the figures of its newest window with status ``ok``:

- ``driftwarden_drift_score{model,version,column,test}`` and ``driftwarden_drift_threshold``
  (per column, the prediction column included), ``driftwarden_column_drifted`` (0/1);
- ``driftwarden_drift_share{model,version}``, ``driftwarden_drift_share_threshold``,
  ``driftwarden_dataset_drifted`` (0/1);
- ``driftwarden_missing_share{model,version,column}``, ``driftwarden_window_rows{model,version}``;
- ``driftwarden_estimated_performance{model,version,metric}``: performance estimated from the
  scores when the window closed (score models whose reference holds labels; ``metric`` is
  the figure it estimates: ``accuracy``, ``precision``, ``recall``, ``f1``, ``roc_auc``).
  The realized figures, once labels matured: :mod:`monitor.web.performance_metrics`.

Segments are not labels (their values come from the stream): per-segment figures
are in the API and on the dashboard. Labels: model names come from the config,
versions are capped per model, columns come from the config.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from storage.db import Store
from storage.overview import latest_judged
from storage.records import DATASET

#: the prefix of the estimated figures' names
ESTIMATED = "estimated_"
#: a model's versions are those of its newest this-many all-rows windows
RECENT_WINDOWS = 50


def recent_versions(store: Store, model: str, most: int, windows: int = RECENT_WINDOWS) -> list[str]:
    """The versions of ``model``'s newest ``windows`` all-rows windows, at most ``most`` + 1
    of them (those seen last: the model's ``limits.max_versions`` and ``__other__``),
    sorted. Without ``most``, a stream with a new version every window kept up to
    ``windows`` versions in ``/metrics``, each with a series per column, whatever the
    version cap said."""
    rows = store.query(
        "SELECT version FROM (SELECT version, \"end\" FROM windows WHERE model = ? AND segment = ''"
        ' ORDER BY "end" DESC LIMIT ?) AS recent GROUP BY version ORDER BY MAX("end") DESC, version LIMIT ?',
        (model, windows, most + 1),
    )
    return sorted(r["version"] for r in rows)


def drift_families(store: Store, models: dict[str, int]) -> Iterator[Any]:
    """The drift gauges of ``models`` (name -> its version cap, ``limits.max_versions``)."""
    from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

    col_labels = ["model", "version", "column", "test"]
    score = GaugeMetricFamily(
        "driftwarden_drift_score", "Drift score of a column in the newest judged window (p-value or distance, see test)",
        labels=col_labels,
    )
    threshold = GaugeMetricFamily(
        "driftwarden_drift_threshold", "Threshold the column's drift score was judged against", labels=col_labels
    )
    drifted = GaugeMetricFamily(
        "driftwarden_column_drifted", "1 when the column drifted in the newest judged window", labels=["model", "version", "column"]
    )
    share = GaugeMetricFamily("driftwarden_drift_share", "Share of drifted columns in the newest judged window", labels=["model", "version"])
    share_t = GaugeMetricFamily(
        "driftwarden_drift_share_threshold", "Share of drifted columns at which the dataset counts as drifted", labels=["model", "version"]
    )
    dataset = GaugeMetricFamily("driftwarden_dataset_drifted", "1 when the newest judged window drifted as a whole", labels=["model", "version"])
    missing = GaugeMetricFamily(
        "driftwarden_missing_share", "Share of missing values of a column in the newest judged window", labels=["model", "version", "column"]
    )
    rows = GaugeMetricFamily("driftwarden_window_rows", "Rows of the newest judged window", labels=["model", "version"])
    estimated = GaugeMetricFamily(
        "driftwarden_estimated_performance",
        "Performance estimated from the scores when the newest judged window closed (metric: the figure estimated)",
        labels=["model", "version", "metric"],
    )
    for model, most in models.items():
        for r in latest_judged(store, model, recent_versions(store, model, most)):
            v, col, value = r["version"], r["column"], r["value"]
            if value is None:
                continue
            metric = r["metric"]
            if metric in ("drift_score", "prediction_drift"):
                score.add_metric([model, v, col, r["test"] or ""], value)
                if r["threshold"] is not None:
                    threshold.add_metric([model, v, col, r["test"] or ""], r["threshold"])
                if r["drifted"] is not None:
                    drifted.add_metric([model, v, col], float(r["drifted"]))
            elif metric == "drift_share" and col == DATASET:
                share.add_metric([model, v], value)
                if r["threshold"] is not None:
                    share_t.add_metric([model, v], r["threshold"])
                if r["drifted"] is not None:
                    dataset.add_metric([model, v], float(r["drifted"]))
            elif metric == "missing_share":
                missing.add_metric([model, v, col], value)
            elif metric == "row_count" and col == DATASET:
                rows.add_metric([model, v], value)
            elif metric.startswith(ESTIMATED) and col == DATASET and math.isfinite(value):
                estimated.add_metric([model, v, metric.removeprefix(ESTIMATED)], value)
    yield from (score, threshold, drifted, share, share_t, dataset, missing, rows, estimated)
