"""Every metric name a window can carry, per model: the catalog rules are validated against.

A rule on a metric that no configured model can ever produce is a config error
(``rules[0].metric: unknown metric "acuracy" ...``), so this module must list every
name the pipeline writes. Two families (``metrics.family``):

- ``data``: computed when the window closes, from the predictions alone (drift,
  quality, row counts, event rate, latency, estimated performance);
- ``performance``: computed when the window's labels mature, and again when late
  labels arrive (only for models with ``[models.performance] enabled = true``).

Pure: no imports from the rest of the daemon, so ``monitor.config`` can use it.
"""

from __future__ import annotations

from typing import Any

#: always written (rules on ``drifted`` read the verdict of any drift figure)
DATA_METRICS = frozenset(
    {
        "row_count", "missing_share", "out_of_range_share", "new_category_share",
        "drift_score", "drift_share", "drifted_columns", "prediction_drift", "drifted",
    }
)
#: not a figure: fires when a model sends nothing (see alerts.rules)
NO_DATA = "no_data"
#: time windows: rows per second of window
RATE_METRICS = frozenset({"events_per_second"})
#: with ``[models.fields] latency`` set
LATENCY_METRICS = frozenset({"latency_p50", "latency_p95", "latency_p99"})

BINARY = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "brier")
MULTICLASS = (
    "accuracy", "precision", "recall", "f1",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
)
REGRESSION = ("mae", "rmse", "mape", "r2")
#: every realized performance figure, whatever the model's shape
PERFORMANCE_METRICS = frozenset({*BINARY, *MULTICLASS, *REGRESSION})
#: estimated before labels (binary score models whose reference holds labels)
ESTIMATED = ("accuracy", "precision", "recall", "f1", "roc_auc")
#: with labels: label counts of the window, and label drift (reference labels needed)
LABEL_METRICS = frozenset({"label_coverage", "labelled_rows", "label_drift"})
#: score models: labelled rows whose class the reference in use lacks (in no figure)
UNKNOWN_CLASS = "labels_unknown_class"

#: figures of a whole window (stored with column ""): a rule naming a column never sees one
DATASET_METRICS = frozenset(
    {"row_count", "drift_share", "drifted_columns", "multivariate_auc", "label_coverage", "labelled_rows",
     UNKNOWN_CLASS}
) | RATE_METRICS | LATENCY_METRICS
#: figures of one column (the prediction's and the label's drift too): a rule on one names
#: its column, or "*"
COLUMN_METRICS = frozenset(
    {"missing_share", "out_of_range_share", "new_category_share", "drift_score", "prediction_drift", "label_drift"}
)


def has_reference_figure(metric: str) -> bool:
    """Whether the reference gives its own ``metric`` (what a rule with ``relative = true``
    compares with): its row count and missing shares, and, when it holds labels, the
    performance figures and their estimates."""
    base = metric.removeprefix("estimated_")
    return metric in ("row_count", "missing_share") or base in PERFORMANCE_METRICS


#: suffixes of figures derived from a realized performance figure (labels needed)
_LABELLED_SUFFIXES = ("_segment_gap", "_delta", "_worse_p", "_estimation_error")


def needs_labels(metric: str) -> bool:
    """Whether ``metric`` is computed from joined labels (the ``performance`` family): the
    realized figures, their segment gaps, version comparisons and estimation errors, and
    the label counts and label drift. Estimated figures (``estimated_accuracy``, ...) come
    from the scores alone: False. An unknown name: False. ``labels_unknown_class`` counts
    joined labels: True."""
    if metric in LABEL_METRICS or metric == UNKNOWN_CLASS:
        return True
    base = metric
    for suffix in _LABELLED_SUFFIXES:
        if metric.endswith(suffix):
            base = metric.removesuffix(suffix)
            break
    return base in PERFORMANCE_METRICS


def performance_figures(task: str, prediction_type: str) -> tuple[str, ...]:
    """The performance figures of a model shape (before suffixes)."""
    if task == "regression":
        return REGRESSION
    return BINARY if prediction_type == "numerical" else MULTICLASS


def model_metrics(model: Any) -> set[str]:
    """Every metric name ``model`` (a ``monitor.config.ModelConfig``) can produce."""
    names = set(DATA_METRICS) | {NO_DATA}
    if getattr(model.drift, "multivariate", "none") == "domain_classifier":
        names.add("multivariate_auc")
    if model.window.by == "time":
        names |= RATE_METRICS
    if model.fields.latency:
        names |= LATENCY_METRICS
    perf = model.performance
    if not perf.enabled:
        return names
    figures = performance_figures(model.task, model.prediction_type)
    names |= set(figures) | LABEL_METRICS
    if model.segments:
        names |= {f"{m}_segment_gap" for m in figures}
    if perf.baseline_version is not None:
        names |= {f"{m}_delta" for m in figures} | {f"{m}_worse_p" for m in figures}
    if model.task == "classification" and model.prediction_type == "numerical":
        names |= {f"estimated_{m}" for m in ESTIMATED}
        names |= {f"{m}_estimation_error" for m in ESTIMATED}
        names.add(UNKNOWN_CLASS)
    return names
