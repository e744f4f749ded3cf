"""From a slot's joined rows to the performance figures of each of its windows.

A *slot* is one time window of a model across all its versions and segments;
its windows have the same identity as the drift windows
(``model|version|segment|start|end``). For each window:

- ``labelled_rows`` and ``label_coverage`` (labelled predictions / predictions),
  always;
- ``labels_unknown_class`` for a score model whose reference names its classes:
  labelled rows whose label is none of them, always. Such a label was joined under
  an earlier reference (its class set changed since); it counts in no figure (read
  as "not ``class_of_interest``" it would be a negative nobody sent);
- with at least ``window.min_rows`` labelled rows: every figure of the model's
  shape with its bootstrap interval (``ci_low``/``ci_high``), ``label_drift``
  against the reference's labels, and ``<figure>_estimation_error`` (realized
  minus the estimate stored when the window closed);
- on the all-segments window of a version: ``<figure>_segment_gap``, the worst
  segment's figure minus the overall one (worst = lowest for figures where
  higher is better, highest for errors);
- on the windows of a version other than ``baseline_version``, when the
  baseline has the same window: ``<figure>_delta`` (candidate minus baseline,
  ``p_value`` = two-sided test) and ``<figure>_worse_p`` (one-sided p-value
  that the candidate is worse), see :mod:`detectors.comparison`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from detectors import column_drift
from detectors.comparison import compare
from detectors.window_performance import (
    HIGHER_IS_BETTER,
    WindowPerformance,
    binary_performance,
    multiclass_performance,
    regression_performance,
)
from monitor.config import LabelsConfig, ModelConfig
from monitor.metric_names import UNKNOWN_CLASS
from storage.records import ALL_SEGMENTS, DATASET, MetricRow, WindowKey, iso_ms

#: separates segment values in ``label_predictions.segments``; ABSENT marks a missing one:
#: U+FFFF, a noncharacter (Unicode keeps it for such internal use). It was U+0000, which
#: PostgreSQL text cannot hold: a prediction without a segment value failed every flush
#: there. SQLite rows written before still hold it, and are read as absent too (no value
#: from the stream holds U+0000: ingest stores it as U+FFFD).
SEP = "\x1f"
ABSENT = "\uffff"
_ABSENT = frozenset((ABSENT, "\x00"))


@dataclass(frozen=True)
class PerformanceSpec:
    """How one model's performance windows are computed, derived once from the config."""

    model: str
    #: "binary" (a score), "multiclass" (a class) or "regression"
    kind: str
    label_column: str
    positive: str | None
    threshold: float
    n_boot: int
    level: float
    min_rows: int
    baseline: str | None
    segments: tuple[str, ...]
    #: score models: the scores are probabilities (True: log loss and Brier score; the
    #: decoder keeps out scores outside [0, 1]), are not (False: those two are NaN), or
    #: unknown (None: each window decides, see binary_performance)
    probabilities: bool | None = None

    @classmethod
    def from_config(cls, m: ModelConfig, labels: LabelsConfig, *, probabilities: bool | None = None) -> PerformanceSpec:
        """``probabilities``: see :func:`monitor.ingest.schema.scores_are_probabilities`
        (None: ``performance.probabilities``)."""
        if m.task == "regression":
            kind = "regression"
        else:
            kind = "binary" if m.prediction_type == "numerical" else "multiclass"
        perf = m.performance
        return cls(
            model=m.name, kind=kind, label_column=m.label,
            positive=None if m.class_of_interest is None else str(m.class_of_interest),
            threshold=0.5 if perf.threshold is None else perf.threshold,
            n_boot=labels.bootstrap, level=labels.confidence, min_rows=m.window.min_rows,
            baseline=perf.baseline_version, segments=tuple(m.segments),
            probabilities=perf.probabilities if probabilities is None else probabilities,
        )


def seed_of(window_id: str) -> int:
    """A bootstrap seed derived from the window id: a recomputed window draws the same resamples."""
    return int.from_bytes(hashlib.sha256(window_id.encode()).digest()[:8], "little")


def performance(spec: PerformanceSpec, labels: np.ndarray, predictions: np.ndarray, seed: int, *, n_boot: int | None = None) -> WindowPerformance:
    """The figures of labelled rows (``labels``: class names or floats; ``predictions``:
    scores, class names or floats, all valid)."""
    b = spec.n_boot if n_boot is None else n_boot
    if spec.kind == "binary":
        return binary_performance(
            labels == spec.positive, predictions.astype(np.float64), threshold=spec.threshold,
            n_boot=b, level=spec.level, seed=seed, probabilities=spec.probabilities,
        )
    if spec.kind == "multiclass":
        return multiclass_performance(labels, predictions, positive=spec.positive, n_boot=b, level=spec.level, seed=seed)
    return regression_performance(labels.astype(np.float64), predictions.astype(np.float64), n_boot=b, level=spec.level, seed=seed)


def _finite(v: object) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def _valid(spec: PerformanceSpec, labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Rows with a label and a prediction: a class name or a finite number as the task
    needs (a regression reference's empty or non-numeric label cell reads as NaN, and one
    NaN would make every figure NaN)."""
    if spec.kind == "regression":
        has_label = np.array([_finite(v) for v in labels.tolist()], dtype=bool)
    else:
        has_label = np.array([v is not None for v in labels.tolist()], dtype=bool)
    if spec.kind == "multiclass":
        has_pred = np.array([v is not None for v in preds.tolist()], dtype=bool)
    else:
        has_pred = np.array([_finite(v) for v in preds.tolist()], dtype=bool)
    return has_label & has_pred


def unknown_class(spec: PerformanceSpec, labels: np.ndarray, classes: frozenset[str] | None) -> np.ndarray:
    """Per row: a score model's label that is none of ``classes`` (the classes of the
    reference in use; None or empty: any class goes, nothing is unknown). A missing
    label is not unknown. Other models' labels are never unknown."""
    if spec.kind != "binary" or not classes:
        return np.zeros(len(labels), dtype=bool)
    return np.array([v is not None and v not in classes for v in labels.tolist()], dtype=bool)


def reference_figures(m: ModelConfig, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The reference data's own figures (no intervals), for relative rules."""
    from monitor.config import LabelsConfig  # noqa: PLC0415

    spec = PerformanceSpec.from_config(m, LabelsConfig())
    ok = _valid(spec, labels, predictions)
    if not ok.any():
        return {}
    wp = performance(spec, labels[ok], predictions[ok], 0, n_boot=0)
    return {k: f.value for k, f in wp.figures.items() if not math.isnan(f.value)}


@dataclass
class _Group:
    key: WindowKey
    version: str
    segment: str
    rows: int
    labelled: int
    perf: WindowPerformance | None
    labels: np.ndarray
    #: labelled rows whose class the reference in use lacks (None: not counted for this model)
    unknown: int | None = None


def slot_figures(
    spec: PerformanceSpec,
    counts: Sequence[tuple[str, str, int, int]],
    rows: Sequence[tuple[Any, ...]],
    start_ms: int,
    end_ms: int,
    *,
    label_reference: Any = None,
    estimates: Callable[[list[str]], Mapping[tuple[str, str], float]] | None = None,
    classes: frozenset[str] | None = None,
) -> list[tuple[WindowKey, list[MetricRow]]]:
    """Every window of one slot with its performance figures.

    ``counts``: (version, segments, predictions, labelled) per stored combination,
    and ``rows``: (version, segments, prediction, label) of the labelled predictions
    in (ts, event_id) order, as :mod:`storage.labels` returns them.
    ``label_reference``: the reference labels prepared for drift (None: no
    ``label_drift``). ``estimates``: given window ids, their stored (window id,
    ``estimated_<figure>``) -> value. ``classes``: a score model's label classes in the
    reference in use (None: any class goes); labels of other classes count in no
    figure, only in ``labels_unknown_class`` (see :func:`unknown_class`).
    """
    if not counts:
        return []
    start = iso_ms(start_ms)
    end = iso_ms(end_ms)
    # predictions and labelled predictions per window, from the counts
    n_rows: dict[tuple[str, str], int] = {}
    n_lab: dict[tuple[str, str], int] = {}
    #: per segment window: the (key, value) pairs it holds rows of
    pairs: dict[str, set[tuple[str, str]]] = {}
    for version, segs, total, labelled in counts:
        for segment, pair in _segment_names(spec, segs):
            if pair is not None:
                pairs.setdefault(segment, set()).add(pair)
            n_rows[(version, segment)] = n_rows.get((version, segment), 0) + int(total)
            n_lab[(version, segment)] = n_lab.get((version, segment), 0) + int(labelled)
    versions = np.empty(len(rows), dtype=object)
    preds = np.empty(len(rows), dtype=object)
    labels = np.empty(len(rows), dtype=object)
    seg_cols: dict[str, np.ndarray] = {}
    if rows:
        ver_l, seg_l, pred_l, lab_l = zip(*rows, strict=True)
        versions[:] = ver_l
        preds[:] = pred_l
        labels[:] = lab_l
        if spec.segments:
            split = [s.split(SEP) for s in seg_l]
            for i, name in enumerate(spec.segments):
                col = np.empty(len(rows), dtype=object)
                col[:] = [p[i] if i < len(p) and p[i] not in _ABSENT else None for p in split]
                seg_cols[name] = col
    unknown = unknown_class(spec, labels, classes)
    valid = _valid(spec, labels, preds) & ~unknown
    counts_unknown = spec.kind == "binary" and bool(classes)

    groups: list[_Group] = []
    for version, segment in sorted(n_rows):
        key = WindowKey(spec.model, version, segment, start, end)
        mask = versions == version
        if segment != ALL_SEGMENTS:
            # by the pairs the window was counted from, not by splitting its name at the
            # first "=": a key holding "=" (``segments = ["plan=tier"]``) was split wrongly,
            # and its windows had labelled rows but never a figure
            seg = np.zeros(len(rows), dtype=bool)
            for name, value in pairs.get(segment, ()):
                if name in seg_cols:  # absent: no labelled rows in the slot
                    seg |= seg_cols[name] == value
            mask = mask & seg
        use = mask & valid
        lab = labels[use]
        perf = None
        if int(use.sum()) >= spec.min_rows:
            if spec.kind == "regression":
                lab = lab.astype(np.float64)
            perf = performance(spec, lab, preds[use], seed_of(key.id))
        groups.append(_Group(key, version, segment, n_rows[(version, segment)], n_lab[(version, segment)], perf, lab,
                             int((mask & unknown).sum()) if counts_unknown else None))

    est = estimates([g.key.id for g in groups if g.perf is not None]) if estimates is not None else {}
    out: list[tuple[WindowKey, list[MetricRow]]] = []
    by_key = {(g.version, g.segment): g for g in groups}
    for g in groups:
        metrics = [
            MetricRow(DATASET, "labelled_rows", float(g.labelled)),
            MetricRow(DATASET, "label_coverage", g.labelled / g.rows if g.rows else math.nan),
        ]
        if g.unknown is not None:
            metrics.append(MetricRow(DATASET, UNKNOWN_CLASS, float(g.unknown)))
        if g.perf is not None:
            for f in g.perf.figures.values():
                if math.isnan(f.value):
                    continue
                metrics.append(MetricRow(DATASET, f.metric, f.value, ci_low=_opt(f.ci_low), ci_high=_opt(f.ci_high)))
            if label_reference is not None:
                d = column_drift(label_reference, spec.label_column, g.labels)
                metrics.append(
                    MetricRow(
                        spec.label_column, "label_drift", d.score, threshold=d.threshold, drifted=d.drifted,
                        p_value=d.score if d.score_kind == "p_value" else None, test=d.test,
                    )
                )
            for m, f in g.perf.figures.items():
                e = est.get((g.key.id, f"estimated_{m}"))
                if e is not None and not math.isnan(f.value):
                    metrics.append(MetricRow(DATASET, f"{m}_estimation_error", f.value - e))
            if g.segment == ALL_SEGMENTS:
                metrics += _segment_gaps(g, [x for x in groups if x.version == g.version and x.segment != ALL_SEGMENTS])
            base = by_key.get((spec.baseline, g.segment)) if spec.baseline is not None else None
            if base is not None and base is not g and base.perf is not None:
                for c in compare(g.perf, base.perf):
                    metrics.append(MetricRow(DATASET, f"{c.metric}_delta", c.delta, p_value=c.p_value, test=c.test))
                    metrics.append(MetricRow(DATASET, f"{c.metric}_worse_p", c.p_worse, test=c.test))
        out.append((g.key, metrics))
    return out


def _segment_names(spec: PerformanceSpec, segs: str) -> list[tuple[str, tuple[str, str] | None]]:
    """The windows a stored combination of segment values counts in: all rows (no pair),
    and one per present segment value, with its (key, value)."""
    out: list[tuple[str, tuple[str, str] | None]] = [(ALL_SEGMENTS, None)]
    if spec.segments:
        for name, value in zip(spec.segments, segs.split(SEP), strict=False):
            if value not in _ABSENT:
                out.append((f"{name}={value}", (name, value)))
    return out


def _segment_gaps(overall: _Group, segments: list[_Group]) -> list[MetricRow]:
    assert overall.perf is not None
    out = []
    for m, f in overall.perf.figures.items():
        vals = [(s.perf.figures[m].value, s.segment) for s in segments if s.perf is not None and not math.isnan(s.perf.figures[m].value)]
        if not vals or math.isnan(f.value):
            continue
        worst = min(vals) if m in HIGHER_IS_BETTER else max(vals)
        out.append(MetricRow(DATASET, f"{m}_segment_gap", worst[0] - f.value, test=worst[1]))
    return out


def _opt(v: float) -> float | None:
    return None if math.isnan(v) else v
