"""What a notification says, frozen into the outbox when the transition happens.

Payloads are plain JSON-able dicts stored in ``deliveries.payload``: retries
(and a restarted daemon) send exactly what was decided, whatever happened
since. Notifiers only render them.

The retraining payload is DESIGN.md's ``retrain.requested`` body, verbatim.
The per-alert webhook body (:func:`webhook_body`) is::

    {"type": "alert.firing" | "alert.resolved", "id": "msg_…", "reminder": false,
     "group": {"model": "churn", "alertname": "feature-drift"},
     "alerts": [{"id": "alr_…", "rule": …, "model": …, "version": …, "segment": …,
                 "column": …, "metric": …, "op": ">", "value": 0.6, "threshold": 0.3,
                 "severity": "critical", "state": "firing", "labels": {…},
                 "started_at": …, "fired_at": …, "resolved_at": null,
                 "reference": 0.83}],
     "window": {"id": …, "start": …, "end": …, "rows": 5000, "status": "ok"},
     "drifted_columns": [{"column": "age", "test": "wasserstein", "score": 0.31}],
     "links": {"report": …, "api": …}, "data": {"topic": …, "from": …, "to": …}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.alerts import AlertRecord
from storage.records import iso


@dataclass(frozen=True)
class WindowContext:
    """What the pipeline knows about a window beyond its figures.

    ``reference_metrics``: the reference data's own figures by (column, metric),
    for relative thresholds. ``drifted_columns``: the top drifted columns as
    (column, test, score), most drifted first. ``data``: ``{"topic", "from",
    "to"}`` locating the window's rows on Kafka. ``links``: ``{"report", "api"}``
    URLs. ``callback``: where the retraining service POSTs the new reference.
    ``start``/``end``: the window's time range as ISO strings (defaults to the
    window key's bounds); ``rows``: its row count (defaults to the window's).
    """

    reference_metrics: Mapping[tuple[str, str], float] = field(default_factory=dict)
    drifted_columns: Sequence[tuple[str, str, float]] = ()
    data: Mapping[str, str] = field(default_factory=dict)
    links: Mapping[str, str] = field(default_factory=dict)
    callback: str = ""
    start: str = ""
    end: str = ""
    rows: int | None = None


def alert_dict(alert: AlertRecord, op: str = "", reference: float | None = None) -> dict[str, Any]:
    """An alert as notifications carry it. ``reference``: the reference data's own value
    of the alert's figure (its column and metric), the baseline the value is read against
    (``missing_share`` 0.0, ``accuracy`` 0.83); None where the reference has none (drift
    scores, ``no_data``) or the notification has no window (no-data alerts, reminders)."""
    return {
        "id": alert.id,
        "rule": alert.rule,
        "model": alert.model,
        "version": alert.version,
        "segment": alert.segment,
        "column": alert.column,
        "metric": alert.metric,
        "op": op,
        "value": alert.value,
        "threshold": alert.threshold,
        "severity": alert.severity,
        "state": alert.state,
        "labels": dict(alert.labels),
        "started_at": None if alert.started_at is None else iso(alert.started_at),
        "fired_at": None if alert.fired_at is None else iso(alert.fired_at),
        "resolved_at": None if alert.resolved_at is None else iso(alert.resolved_at),
        "reference": reference,
        "window": {
            "id": alert.last_window_id,
            "start": alert.window_start,
            "end": alert.window_end,
        },
    }


def drifted_list(columns: Sequence[tuple[str, str, float]], limit: int) -> list[dict[str, Any]]:
    return [
        {"column": str(c), "test": str(t), "score": float(s)} for c, t, s in list(columns)[:limit]
    ]


def notification_payload(
    *,
    delivery_id: str,
    kind: str,
    group: Mapping[str, str],
    alerts: Sequence[Mapping[str, Any]],
    window: Mapping[str, Any] | None,
    drifted: Sequence[Mapping[str, Any]],
    links: Mapping[str, str],
    data: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "kind": kind,
        "group": dict(group),
        "alerts": [dict(a) for a in alerts],
        "window": None if window is None else dict(window),
        "drifted_columns": [dict(d) for d in drifted],
        "links": dict(links),
        "data": dict(data),
    }


def retrain_payload(
    *,
    delivery_id: str,
    alert: Mapping[str, Any],
    window: Mapping[str, Any] | None,
    drifted: Sequence[Mapping[str, Any]],
    data: Mapping[str, str],
    callback: str,
) -> dict[str, Any]:
    """DESIGN.md's ``retrain.requested`` body."""
    w = window or {}
    return {
        "type": "retrain.requested",
        "id": delivery_id,
        "model": alert["model"],
        "version": alert["version"],
        "alert": {
            "rule": alert["rule"],
            "metric": alert["metric"],
            "value": alert["value"],
            "threshold": alert["threshold"],
            "severity": alert["severity"],
        },
        "window": {"start": w.get("start"), "end": w.get("end"), "rows": w.get("rows")},
        "drifted_columns": [dict(d) for d in drifted],
        "data": {"topic": data.get("topic"), "from": data.get("from"), "to": data.get("to")},
        "callback": callback,
    }


def webhook_body(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body a webhook notifier POSTs for a delivery of ``kind``."""
    if kind == "retrain":
        return dict(payload)
    body = {
        "type": "alert.resolved" if kind == "resolved" else "alert.firing",
        "id": payload.get("id"),
        "reminder": kind == "reminder",
    }
    body.update({k: v for k, v in payload.items() if k not in ("id", "kind")})
    return body
