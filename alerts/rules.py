"""Alerting rules: which stored figure, compared how, for how long.

A :class:`Rule` is evaluated against each closed window's figures. It selects
rows of the ``metrics`` table by ``metric`` and ``column`` and windows by
``segment`` and ``version``; each selected figure is one *evaluation* of one
alert *instance* (rule x model x column x segment x version), which the
engine's state machine turns into pending / firing / resolved.

Selection:

- ``column=None``: the dataset-level row (column :data:`~storage.records.DATASET`);
  ``"*"``: every non-dataset column, one instance per column; otherwise that column.
- ``segment=None``: only the overall windows (segment ``""``); ``"*"``: every
  non-overall segment, one instance per segment; otherwise that segment.
- ``version=None``: every version, one instance for all of them. It judges
  time *slots*: the windows of all versions ending at the same time are one
  evaluation, breaching when any version's window breaches (the alert shows the
  breaching version; in a clear slot the version it showed, or the first by
  name), so a canary breaching beside a clear baseline fires, and a slot counts
  once toward ``for_windows`` and ``resolve_after``. A clear window waits for
  the versions of the instance's previous slot (a version that stopped delays
  a clear slot until the next slot's first window); a breach counts at once. A
  breach arriving for a slot already judged clear (a version new to the model,
  a recomputed performance window, a window closing after a restart) judges
  the slot again as breaching, from the state before it when that step
  notified nothing, else as one more breaching evaluation (after a restart:
  always the latter). A change detector runs per version; the slot breaches
  when any version's detector signals. Count windows have no shared slot: each
  version's window is an evaluation of its own (use ``"*"`` there).
  ``"*"``: one instance per version; otherwise only that version.
- ``model=None``: every model, one instance per model.
- ``metric="drifted"``: the column's drift *verdict* (1.0 drifted, 0.0 not) of
  any drift test stored for it; any other name matches ``metrics.metric``.
- ``metric="no_data"``: not a figure; fires when the model sent nothing for
  ``no_data_for`` (checked on each scheduler tick).

Relative thresholds: with ``relative=True`` the effective threshold is
``threshold x reference`` where ``reference`` is the reference data's own figure
for the same (column, metric) (``WindowContext.reference_metrics``). E.g.
``metric="accuracy", op="<", threshold=0.9, relative=True`` fires when the
accuracy falls below 90 % of the reference's. Without a reference figure the
instance is not evaluated (neither breaching nor clear).

Example::

    >>> r = Rule("drift", "drift_share", ">", 0.3, for_windows=2)
    >>> r.breached(0.5, 0.3)
    True
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from detectors.sequential import CUSUM, PageHinkley, detector_from_state, make_detector
from storage.records import ALL_SEGMENTS, DATASET, MetricRow, WindowKey

OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
SEVERITIES = ("warning", "critical")
ANY = "*"
NO_DATA = "no_data"
DRIFTED = "drifted"


@dataclass(frozen=True)
class DetectorSpec:
    """A change detector run over the figure series of each alert instance.

    ``kind`` is ``"cusum"`` or ``"page_hinkley"`` (:mod:`detectors.sequential`),
    ``params`` its constructor's keyword arguments (``mode`` is set from the
    rule's ``op``). The evaluation's value is the detector's statistic and its
    threshold the detector's decision limit; a window breaches when the
    detector signals a change on it (then the detector starts afresh, as
    river's do; CUSUM keeps its learned in-control level, so a change that
    persists signals again after a few windows).
    """

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    def build(self, op: str) -> CUSUM | PageHinkley:
        mode = "up" if op in (">", ">=") else "down" if op in ("<", "<=") else "both"
        return make_detector(self.kind, {**dict(self.params), "mode": mode})

    @property
    def limit(self) -> float:
        p = dict(self.params)
        return float(p.get("h", 5.0) if self.kind == "cusum" else p.get("threshold", 50.0))


def detector_step(
    rule: Rule, state: Mapping[str, Any] | None, value: float
) -> tuple[dict[str, Any], float, bool]:
    """Feed one figure to an instance's detector (restored from ``state`` when its
    settings still match the rule's, else fresh); returns the new state, the
    statistic after the update and whether a change was signalled.

    A state that cannot be restored (a sum stored as null: earlier versions let a huge
    figure overflow it to infinity, which JSON cannot hold) starts afresh: kept, it
    raised on every later window, and every window of the model lost its figures."""
    assert rule.detector is not None
    fresh = rule.detector.build(rule.op)
    det = fresh
    if state is not None and state.get("settings") == fresh.state()["settings"]:
        try:
            det = detector_from_state(state)
        except (TypeError, ValueError, KeyError):
            det = fresh
    det.update(value)
    return det.state(), float(det.statistic), bool(det.drift_detected)


@dataclass(frozen=True)
class Rule:
    """One alerting rule (see the module documentation for selection semantics).

    ``for_windows``: consecutive breaching windows before firing (1 fires at
    once; more pass through *pending*, which never notifies).
    ``resolve_after``: consecutive clear windows before a firing alert resolves.
    ``severity="critical"`` inhibits notifications of a ``warning`` rule with the
    same metric, model and column (its "twin") while the critical alert fires.
    ``notifiers``: names of configured notifiers; empty means the engine's
    default (every non-retraining notifier).
    ``repeat_interval``: reminder period while firing (None: engine default).
    """

    name: str
    metric: str
    op: str = ">"
    threshold: float = 0.0
    model: str | None = None
    column: str | None = None
    segment: str | None = None
    version: str | None = None
    relative: bool = False
    for_windows: int = 1
    resolve_after: int = 1
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    notifiers: tuple[str, ...] = ()
    repeat_interval: timedelta | None = None
    no_data_for: timedelta | None = None
    #: a change detector over the series instead of ``threshold`` (see :class:`DetectorSpec`)
    detector: DetectorSpec | None = None

    def __post_init__(self) -> None:
        where = f"rule {self.name!r}"
        if not self.name:
            raise ValueError("rule name must not be empty")
        if not self.metric:
            raise ValueError(f"{where}: metric must not be empty")
        if self.op not in OPS:
            raise ValueError(f"{where}: op must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"{where}: severity must be 'warning' or 'critical', got {self.severity!r}"
            )
        if self.for_windows < 1:
            raise ValueError(f"{where}: for_windows must be >= 1, got {self.for_windows}")
        if self.resolve_after < 1:
            raise ValueError(f"{where}: resolve_after must be >= 1, got {self.resolve_after}")
        if self.repeat_interval is not None and self.repeat_interval <= timedelta(0):
            raise ValueError(f"{where}: repeat_interval must be positive")
        if self.is_no_data:
            if self.no_data_for is None or self.no_data_for <= timedelta(0):
                raise ValueError(f"{where}: metric 'no_data' needs a positive no_data_for")
        else:
            if self.no_data_for is not None:
                raise ValueError(f"{where}: no_data_for applies only to metric 'no_data'")
            if not math.isfinite(float(self.threshold)):
                raise ValueError(f"{where}: threshold must be a finite number")
        if self.detector is not None:
            if self.is_no_data or self.relative or self.op == "==":
                raise ValueError(f"{where}: a detector needs a figure, no relative threshold, op != '=='")
            self.detector.build(self.op)  # raises on bad parameters
        object.__setattr__(self, "notifiers", tuple(self.notifiers))
        object.__setattr__(self, "labels", dict(self.labels))
        if self.model == "":
            raise ValueError(f"{where}: model must be a name or omitted")

    @property
    def is_no_data(self) -> bool:
        return self.metric == NO_DATA

    def breached(self, value: float, threshold: float) -> bool:
        """Whether ``value op threshold`` holds."""
        return OPS[self.op](value, threshold)

    # -- selection --------------------------------------------------------------

    def matches_window(self, key: WindowKey) -> bool:
        if self.model is not None and key.model != self.model:
            return False
        if self.segment is None:
            if key.segment != ALL_SEGMENTS:
                return False
        elif self.segment == ANY:
            if key.segment == ALL_SEGMENTS:
                return False
        elif key.segment != self.segment:
            return False
        if self.version not in (None, ANY) and key.version != self.version:
            return False
        return True

    def evaluations(
        self,
        key: WindowKey,
        metrics: Sequence[MetricRow],
        reference: Mapping[tuple[str, str], float] | None = None,
    ) -> Iterator[Evaluation]:
        """The figures of one window this rule looks at, with their verdicts.

        Missing or NaN figures (and relative rules without a reference figure) yield
        nothing: absence is neither a breach nor a clear window. An infinite figure is
        compared like any other (one feature value of 1e308 makes a Wasserstein distance
        infinite: a drift, not an absence), except by a change detector, whose running
        sums it would leave infinite for good.
        """
        if self.is_no_data or not self.matches_window(key):
            return
        rows = list(metrics)
        if self.metric == DRIFTED:
            values: dict[str, float] = {}
            for m in rows:
                if m.drifted is None or not self._column_ok(m.column):
                    continue
                values[m.column] = max(values.get(m.column, 0.0), 1.0 if m.drifted else 0.0)
            candidates = sorted(values.items())
        else:
            candidates = sorted(
                (m.column, float(m.value))
                for m in rows
                if m.metric == self.metric and m.value is not None and self._column_ok(m.column)
            )
        for column, value in candidates:
            if math.isnan(value) or (self.detector is not None and math.isinf(value)):
                continue
            threshold = float(self.threshold)
            if self.relative:
                ref = (reference or {}).get((column, self.metric))
                if ref is None or not math.isfinite(float(ref)):
                    continue
                threshold = float(self.threshold) * float(ref)
            yield Evaluation(
                rule=self,
                model=key.model,
                column=column,
                segment=key.segment,
                version=key.version,
                value=value,
                threshold=threshold,
                breached=self.breached(value, threshold),
            )

    def _column_ok(self, column: str) -> bool:
        if self.column is None:
            return column == DATASET
        if self.column == ANY:
            return column != DATASET
        return column == self.column

    def covers(self, alert_id: str, model: str, column: str, segment: str, version: str, metric: str) -> bool:
        """Whether this rule still judges the stored alert instance ``alert_id`` (of that
        model, column, segment, version and figure ``metric``; ``""`` for a record that
        has none stored). False when a rule kept its name but changed its scope (a reload
        or restart with another model, column, segment, version or figure): no window
        judges that instance again."""
        if metric and metric != self.metric:
            return False
        if self.instance_id(model, column, segment, version) != alert_id:
            return False  # version=None <-> "*": the instance's identity changed
        if self.model is not None and model != self.model:
            return False
        if self.is_no_data:
            return True
        if not self._column_ok(column):
            return False
        if not self.matches_window(WindowKey(model, version, segment, "", "")):
            return False
        return True

    def instance_id(self, model: str, column: str, segment: str, version: str) -> str:
        """Stable id of the alert instance (same across restarts)."""
        ver = version if self.version is not None else ""
        raw = "\x1f".join((self.name, model, column, segment, ver))
        return "alr_" + hashlib.sha256(raw.encode()).hexdigest()[:20]

    def instance_labels(
        self, model: str, column: str, segment: str, version: str
    ) -> dict[str, str]:
        """Labels of an instance: identity plus the rule's own labels."""
        labels = {
            "alertname": self.name,
            "model": model,
            "metric": self.metric,
            "severity": self.severity,
        }
        if column:
            labels["column"] = column
        if segment:
            labels["segment"] = segment
        if self.version is not None and version:
            labels["version"] = version
        labels.update(self.labels)
        return labels


@dataclass(frozen=True)
class Evaluation:
    """One figure judged by one rule in one window."""

    rule: Rule
    model: str
    column: str
    segment: str
    version: str
    value: float
    threshold: float
    breached: bool

    @property
    def alert_id(self) -> str:
        return self.rule.instance_id(self.model, self.column, self.segment, self.version)
