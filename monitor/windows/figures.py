"""From a closed window's rows to stored figures: calls ``detectors``, builds MetricRows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from detectors import (
    ColumnSpec,
    PreparedReference,
    column_drift,
    data_quality,
    dataset_drift,
    prepare_reference,
)
from monitor.config import ModelConfig
from monitor.ingest.schema import ModelSchema
from monitor.references.load import ReferenceData
from monitor.windows.model_windows import OpenWindow
from storage.records import DATASET, MetricRow, WindowKey, WindowRecord, iso


@dataclass(frozen=True)
class PreparedModel:
    """A model's reference, prepared once; swapped whole when a new reference is registered."""

    config: ModelConfig
    schema: ModelSchema
    reference: ReferenceData
    prepared: PreparedReference
    prediction: str
    drift_columns: tuple[str, ...]
    version: str = ""
    #: the reference's own figures by (column, metric), for rules with relative thresholds
    reference_metrics: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def build(cls, config: ModelConfig, schema: ModelSchema, reference: ReferenceData, version: str = "") -> PreparedModel:
        d = config.drift

        def spec(name: str, kind: str) -> ColumnSpec:
            col = d.columns.get(name)
            return ColumnSpec(
                name=name,
                kind=kind,
                method=col.method if col else d.method,
                threshold=(col.threshold if col and col.threshold is not None else d.threshold),
            )

        specs = [spec(n, "numerical" if n in schema.numerical else "categorical") for n in schema.features]
        pred = config.prediction
        if d.prediction and pred in reference.columns:
            specs.append(spec(pred, schema.prediction_type))
        prepared = prepare_reference(reference.columns, specs, bins=d.bins)
        features = tuple(schema.features)
        ref_metrics: dict[tuple[str, str], float] = {(DATASET, "row_count"): float(reference.rows)}
        quality = data_quality(prepared, {c: reference.columns[c] for c in features})
        for q in quality.columns:
            ref_metrics[(q.column, "missing_share")] = q.missing_share
        return cls(config, schema, reference, prepared, pred, features, version, ref_metrics)


@dataclass(frozen=True)
class WindowFigures:
    record: WindowRecord
    metrics: list[MetricRow]
    top_drifted: list[tuple[str, str, float]] = field(default_factory=list)
    ts_range: tuple[str, str] | None = None
    reference_metrics: dict[tuple[str, str], float] = field(default_factory=dict)


def window_key(model: str, by: str, w: OpenWindow) -> WindowKey:
    if by == "time":
        start = iso(datetime.fromtimestamp(w.start / 1000, UTC))
        end = iso(datetime.fromtimestamp(w.end / 1000, UTC))
    else:
        start, end = f"#{w.start:012d}", f"#{w.end:012d}"
    return WindowKey(model, w.version, w.segment, start, end)


def error_figures(pm: PreparedModel, w: OpenWindow, *, by: str, now: datetime, error: str) -> WindowFigures:
    """A window whose figures could not be computed: status ``error``, its row count and why."""
    key = window_key(pm.config.name, by, w)
    record = WindowRecord(
        key=key, rows=w.rows, status="error", computed_at=now, reference=pm.reference.sha256[:12], error=error[:500]
    )
    return WindowFigures(record, [MetricRow(DATASET, "row_count", float(w.rows))], [], None, pm.reference_metrics)


def compute_figures(pm: PreparedModel, w: OpenWindow, *, by: str, now: datetime) -> WindowFigures:
    """Every figure of one closed window. ``insufficient`` windows get counts and quality only."""
    cfg = pm.config
    cols = w.columns()
    key = window_key(cfg.name, by, w)
    metrics: list[MetricRow] = [MetricRow(DATASET, "row_count", float(w.rows))]
    if w.rows:
        quality = data_quality(pm.prepared, {c: cols[c] for c in pm.drift_columns if c in cols})
        for q in quality.columns:
            metrics.append(MetricRow(q.column, "missing_share", q.missing_share))
            if q.out_of_range_share is not None:
                metrics.append(MetricRow(q.column, "out_of_range_share", q.out_of_range_share))
            if q.new_category_share is not None:
                metrics.append(MetricRow(q.column, "new_category_share", q.new_category_share))
    status = "ok" if w.rows >= cfg.window.min_rows else "insufficient"
    top: list[tuple[str, str, float]] = []
    if status == "ok":
        mt = None if cfg.drift.multiple_testing == "none" else cfg.drift.multiple_testing
        ds = dataset_drift(pm.prepared, cols, columns=list(pm.drift_columns), share_threshold=cfg.drift.share, multiple_testing=mt)
        for c in ds.columns:
            metrics.append(
                MetricRow(
                    c.column, "drift_score", c.score, threshold=c.threshold, drifted=c.drifted,
                    p_value=c.score if c.score_kind == "p_value" else None, test=c.test,
                )
            )
        metrics.append(MetricRow(DATASET, "drift_share", ds.share, threshold=ds.share_threshold, drifted=ds.dataset_drifted))
        metrics.append(MetricRow(DATASET, "drifted_columns", float(ds.drifted_count)))
        drifted = [c for c in ds.columns if c.drifted]
        drifted.sort(key=lambda c: (c.score if c.score_kind == "p_value" else -c.score))
        top = [(c.column, c.test, float(c.score)) for c in drifted]
        if pm.prediction in pm.prepared.columns and pm.prediction in cols:
            p = column_drift(pm.prepared, pm.prediction, cols[pm.prediction])
            metrics.append(
                MetricRow(
                    pm.prediction, "prediction_drift", p.score, threshold=p.threshold, drifted=p.drifted,
                    p_value=p.score if p.score_kind == "p_value" else None, test=p.test,
                )
            )
    ts = w.ts_ms()
    ts_range = None
    if ts.shape[0]:
        ts_range = (
            iso(datetime.fromtimestamp(int(np.min(ts)) / 1000, UTC)),
            iso(datetime.fromtimestamp(int(np.max(ts)) / 1000, UTC)),
        )
    record = WindowRecord(key=key, rows=w.rows, status=status, computed_at=now, reference=pm.reference.sha256[:12])
    return WindowFigures(record, metrics, top, ts_range, pm.reference_metrics)
