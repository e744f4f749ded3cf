"""From a closed window's rows to stored figures: calls ``detectors``, builds MetricRows."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from detectors import (
    Calibration,
    ColumnSpec,
    PreparedReference,
    calibrate,
    calibrated_dataset_drift,
    calibrated_dataset_level,
    calibration_sizes,
    data_quality,
    dataset_drift,
    prepare_reference,
    resolve_specs,
)
from detectors._columns import CurrentColumn
from detectors.dataset import ColumnDrift
from detectors.multivariate import (
    DEFAULT_AUC_THRESHOLD,
    DomainCalibration,
    PreparedDomainReference,
    calibrate_domain,
    multivariate_drift,
    prepare_domain_reference,
)
from detectors.reference_limits import ColumnLimit, column_limits
from monitor.config import ModelConfig
from monitor.ingest.schema import ModelSchema
from monitor.references.calibration_cache import CalibrationCache
from monitor.references.load import ReferenceData
from monitor.windows.model_windows import OpenWindow
from monitor.windows.pane_columns import WindowColumns, categorical_column
from storage.records import DATASET, MetricRow, WindowKey, WindowRecord, iso_ms
from storage.redaction import quoted
from storage.samples import WindowSample

log = logging.getLogger("driftwarden.figures")


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
    #: thresholds = "calibrated": the null models (computed once, from the reference file)
    calibration: Calibration | None = None
    #: drift.multivariate = "domain_classifier": the encoded reference sample
    domain: PreparedDomainReference | None = None
    domain_calibration: DomainCalibration | None = None
    #: what ``windows.reference`` records (default: the file's hash); rolling unions name theirs
    label: str = ""
    #: thresholds = "calibrated": columns whose calibrated threshold the reference breaks
    #: (heavy tails under Wasserstein, rare values under chi-square); see :meth:`limit_warnings`
    limits: tuple[ColumnLimit, ...] = ()

    @classmethod
    def build(
        cls, config: ModelConfig, schema: ModelSchema, reference: ReferenceData, version: str = "",
        cache: CalibrationCache | None = None,
    ) -> PreparedModel:
        """The model's reference prepared for its windows; with calibrated thresholds the
        calibration is read from ``cache`` when it holds one of the same inputs (else
        computed, and stored there)."""
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
        quality = data_quality(prepared, {s.name: reference.columns[s.name] for s in prepared.specs})
        for q in quality.columns:
            ref_metrics[(q.column, "missing_share")] = q.missing_share
        calibration = None
        limits: tuple[ColumnLimit, ...] = ()
        if d.thresholds == "calibrated":
            prepared, calibration = _calibrated(config, reference, prepared, cache)
            limits = _advisory_limits(config.name, prepared, _window_rows(config, reference.rows, cap=False))
        domain = domain_cal = None
        if d.multivariate == "domain_classifier":
            fspecs = [s for s in prepared.specs if s.name in features]
            domain = prepare_domain_reference(reference.columns, fspecs)
            if d.thresholds == "calibrated":
                domain_cal = calibrate_domain(
                    reference.columns, fspecs, size=_window_rows(config, reference.rows), alpha=d.alpha
                )
        # the prepared state is all a window needs: keep the reference's identity, not its rows
        # (half of a model's memory at start-up; reload from ``reference.path`` if rows are needed)
        kept = dataclasses.replace(reference, columns={})
        return cls(config, schema, kept, prepared, pred, features, version, ref_metrics,
                   calibration, domain, domain_cal, limits=limits)

    @property
    def reference_label(self) -> str:
        return self.label or self.reference.sha256[:12]

    def alpha_warning(self) -> str | None:
        """``thresholds = "calibrated"``: one sentence when ``drift.alpha`` cannot be reached.

        With every drift column defined, the dataset verdict needs a count of drifted
        columns whose tail is at most ``alpha``; when none is (one column with
        ``alpha_column > alpha``, or columns that move together), it falls back to "all
        columns drifted", which false-alarms more often than ``alpha``. None when the
        level is reached, or in evidently mode.
        """
        cal = self.calibration
        if cal is None:
            return None
        m = sum(1 for c in self.drift_columns if c in cal.columns)
        lv = calibrated_dataset_level(cal, m)
        if lv.reachable:
            return None
        dep = f", columns' false alarms correlated (rho {lv.rho:.2f})" if m > 1 else ""
        return (
            f"model {self.config.name}: drift.alpha = {lv.asked:g} cannot be reached with {m} drift"
            f" column{'s' if m != 1 else ''} at drift.alpha_column = {lv.alpha_column:g}{dep}: the"
            f" dataset verdict falls back to all {m} drifted, a false-alarm level of about"
            f" {lv.reached:.2g} per stationary window ({1000 * lv.reached:.1f} per 1,000, not"
            f" {1000 * lv.asked:g}); set drift.alpha_column to at most {lv.alpha_column_for_asked:.2g}"
            " to reach it (README \"Choosing thresholds\")"
        )

    def limit_warnings(self) -> list[str]:
        """``thresholds = "calibrated"``: one sentence per column whose calibrated threshold
        the reference breaks (README "Choosing thresholds", limits), naming the column, the
        estimate and what to do; empty in evidently mode (Evidently's fixed thresholds)."""
        return [_limit_text(self.config.name, lim, self.config.drift.alpha_column) for lim in self.limits]


def _advisory_limits(model: str, prepared: PreparedReference, window_rows: int) -> tuple[ColumnLimit, ...]:
    """:func:`column_limits` for the start-up warnings; advisory only, so a column it cannot
    read (an estimate raising on some reference) is logged and gives no warning instead of
    stopping start-up, a reload or a reference swap."""
    try:
        return column_limits(prepared, window_rows)
    except Exception:  # noqa: BLE001 - a warning must never stop the daemon
        log.exception("model %s: the columns calibrated thresholds cannot hold could not be worked out", model)
        return ()


def _limit_text(model: str, lim: ColumnLimit, alpha_column: float) -> str:
    """The WARNING (and ``driftwarden check`` line) for one :class:`ColumnLimit`."""
    head = f"model {model}: column {lim.column!r} ({lim.test}, thresholds = \"calibrated\")"
    if lim.tail is not None:
        t = lim.tail
        return (
            f"{head}: heavy tail, tail index about {t.index:.2f} (Hill, top {t.points} of {t.rows} reference"
            f" values; under 2 is heavy): windows bring extremes the reference lacks, so it false-alarms"
            f" about 2-5x drift.alpha_column = {alpha_column:g}; set drift.columns.{lim.column}.method = \"ks\""
            " or log-transform it upstream (README \"Choosing thresholds\")"
        )
    s = lim.sparse
    assert s is not None
    return (
        f"{head}: sparse tail, {s.singletons} of {s.distinct} reference values seen once"
        f" ({100 * s.singleton_share:.0f} %), {s.doubletons} twice: about {100 * s.unseen_chance:.0f} % of"
        f" windows of {s.window_rows} rows bring a value the reference lacks (Good-Turing), scored p = 0, so"
        " its calibrated threshold sits near p = 0 (the column stops seeing new values) or, where the"
        f" reference's rarest values were seen a few times, false-alarms; set drift.columns.{lim.column}.method"
        " = \"jensenshannon\" or \"psi\", or use a larger reference (README \"Choosing thresholds\")"
    )


def _window_rows(config: ModelConfig, reference_rows: int, cap: bool = True) -> int:
    """Rows of a typical window: the count window's size; for time windows half the
    reference's rows, at least 10, capped at 1,000 unless ``cap`` is False (the domain
    classifier is calibrated at it, its AUC spread rescaled to each window's size)."""
    if config.window.by == "count":
        return int(config.window.size)  # type: ignore[arg-type]
    rows = max(reference_rows // 2, 10)
    return min(1000, rows) if cap else rows


#: the resampling of every calibration (``calibrate``'s defaults, named here so the
#: calibration cache's key holds them)
CALIBRATION_DRAWS: dict[str, int] = {"resamples": 400, "splits": 25, "seed": 0}


def _calibrated(
    config: ModelConfig, reference: ReferenceData, prepared: PreparedReference, cache: CalibrationCache | None
) -> tuple[PreparedReference, Calibration]:
    """Fix each column's test (``auto`` resolved on the reference) and calibrate it (or
    read the calibration of the same inputs from ``cache``)."""
    d = config.drift
    specs = resolve_specs(prepared)
    fixed = prepare_reference(reference.columns, specs, bins=d.bins)
    rows = int(config.window.size) if config.window.by == "count" else None  # type: ignore[arg-type]
    sizes = calibration_sizes(rows, reference.rows, config.window.min_rows)

    # every input of calibrate(), its defaults spelt out: the cache's key holds them all
    settings = {"sizes": list(sizes), "alpha_column": d.alpha_column, "alpha": d.alpha, "bins": d.bins,
                **CALIBRATION_DRAWS}

    def compute() -> Calibration:
        return calibrate(reference.columns, specs, sizes=sizes, alpha_column=d.alpha_column, alpha=d.alpha,
                         bins=d.bins, **CALIBRATION_DRAWS)

    if cache is None:
        return fixed, compute()
    return fixed, cache.get_or_compute(cache.key(reference.sha256, specs, settings), compute,
                                       expect=(specs, sizes, d.alpha_column, d.alpha))


@dataclass(frozen=True)
class WindowFigures:
    record: WindowRecord
    metrics: list[MetricRow]
    top_drifted: list[tuple[str, str, float]] = field(default_factory=list)
    ts_range: tuple[str, str] | None = None
    reference_metrics: dict[tuple[str, str], float] = field(default_factory=dict)
    #: a bounded sample of the window's rows, stored for reports (None: none kept)
    sample: WindowSample | None = None
    #: seconds it took to compute the figures (logged, and a /metrics histogram)
    compute_seconds: float = 0.0


def window_key(model: str, by: str, w: OpenWindow) -> WindowKey:
    if by == "time":
        start = iso_ms(w.start)
        end = iso_ms(w.end)
    else:
        start, end = f"#{w.start:012d}", f"#{w.end:012d}"
    return WindowKey(model, w.version, w.segment, start, end)


def error_figures(pm: PreparedModel, w: OpenWindow, *, by: str, now: datetime, error: str) -> WindowFigures:
    """A window whose figures could not be computed: status ``error``, its row count and why."""
    key = window_key(pm.config.name, by, w)
    record = WindowRecord(
        key=key, rows=w.rows, status="error", computed_at=now, reference=pm.reference.sha256[:12], error=quoted(error, 500)
    )
    return WindowFigures(record, [MetricRow(DATASET, "row_count", float(w.rows))], [], None, pm.reference_metrics)


def compute_figures(
    pm: PreparedModel, w: OpenWindow, *, by: str, now: datetime, cols: WindowColumns | None = None
) -> WindowFigures:
    """Every figure of one closed window. ``insufficient`` windows get counts and quality only.

    ``cols``: the window's columns (default: a fresh :class:`WindowColumns` of its chunks, in
    consumption order); pass one to read the columns it joined afterwards (the report sample does).
    """
    cfg = pm.config
    order = w.order()
    if cols is None:
        cols = WindowColumns(w.chunks, order)
    key = window_key(cfg.name, by, w)
    metrics: list[MetricRow] = [MetricRow(DATASET, "row_count", float(w.rows))]
    # each column made once, for its quality and its drift test both: categorical columns
    # from counts looked up once per chunk (a pane shared by overlapping windows is looked up
    # once), numerical ones cleaned (and sorted by the first test that sorts) once;
    # ``cols`` stays the raw values: the multivariate check reads rows
    judged: dict[str, Any] = {
        c: categorical_column(w.chunks, c, ref, order) if ref.kind == "categorical" else CurrentColumn("numerical", cols[c])
        for c, ref in pm.prepared.columns.items() if c in cols
    }
    status = "ok" if w.rows >= cfg.window.min_rows else "insufficient"
    drift_rows: list[MetricRow] = []
    top: list[tuple[str, str, float]] = []
    # drift first (its figures are listed after quality's): quality then counts the values
    # out of range with two binary searches in the values the drift tests sorted
    if status == "ok":
        mt = None if cfg.drift.multiple_testing == "none" else cfg.drift.multiple_testing
        cal = pm.calibration
        if cal is not None:
            ds = calibrated_dataset_drift(pm.prepared, cal, judged, columns=list(pm.drift_columns), multiple_testing=mt)
        else:
            # the prediction scored with the features (one batch), outside their share
            also = [pm.prediction] if pm.prediction in pm.prepared.columns and pm.prediction in cols else []
            ds = dataset_drift(pm.prepared, judged, columns=list(pm.drift_columns), share_threshold=cfg.drift.share,
                               multiple_testing=mt, also=also)
        for c in ds.columns:
            drift_rows.append(_drift_row(c, "drift_score"))
        drift_rows.append(MetricRow(DATASET, "drift_share", ds.share, threshold=ds.share_threshold, drifted=ds.dataset_drifted))
        drift_rows.append(MetricRow(DATASET, "drifted_columns", float(ds.drifted_count)))
        drifted = [c for c in ds.columns if c.drifted]
        drifted.sort(key=lambda c: (c.score if c.score_kind == "p_value" else -c.score))
        top = [(c.column, c.test, float(c.score)) for c in drifted]
        if pm.prediction in pm.prepared.columns and pm.prediction in cols:
            if cal is not None:
                p = calibrated_dataset_drift(pm.prepared, cal, judged, columns=[pm.prediction]).columns[0]
            else:
                p = ds.also[0]
            drift_rows.append(_drift_row(p, "prediction_drift"))
        if pm.domain is not None:
            drift_rows.append(_multivariate_row(pm, cols))
    if w.rows:
        # every column the reference prepared (the prediction too, when its drift is judged):
        # one left out here was reported as entirely missing in every window
        quality = data_quality(pm.prepared, judged)
        for q in quality.columns:
            metrics.append(MetricRow(q.column, "missing_share", q.missing_share))
            if q.out_of_range_share is not None:
                metrics.append(MetricRow(q.column, "out_of_range_share", q.out_of_range_share))
            if q.new_category_share is not None:
                metrics.append(MetricRow(q.column, "new_category_share", q.new_category_share))
    metrics.extend(drift_rows)
    ts = w.ts_ms()
    ts_range = None
    if ts.shape[0]:
        ts_range = (
            iso_ms(int(np.minimum.reduce(ts))),
            iso_ms(int(np.maximum.reduce(ts))),
        )
    record = WindowRecord(key=key, rows=w.rows, status=status, computed_at=now, reference=pm.reference_label)
    return WindowFigures(record, metrics, top, ts_range, pm.reference_metrics)


def _drift_row(c: ColumnDrift, metric: str) -> MetricRow:
    """A column verdict as stored: the calibrated p-value when there is one, else the test's."""
    if c.calibrated:
        p_value = c.calibrated_p
    else:
        p_value = c.score if c.score_kind == "p_value" else None
    return MetricRow(c.column, metric, c.score, threshold=c.threshold, drifted=c.drifted, p_value=p_value, test=c.test)


def _multivariate_row(pm: PreparedModel, cols: Mapping[str, np.ndarray]) -> MetricRow:
    """The domain classifier's cross-validated AUC with its (calibrated or fixed) threshold."""
    assert pm.domain is not None
    res = multivariate_drift(pm.domain, cols)
    threshold = DEFAULT_AUC_THRESHOLD
    if pm.domain_calibration is not None:
        threshold = pm.domain_calibration.threshold(res.reference_rows, res.current_rows)
    drifted = bool(res.roc_auc > threshold)  # NaN never drifts
    return MetricRow(DATASET, "multivariate_auc", res.roc_auc, threshold=threshold, drifted=drifted, test="domain_classifier")
