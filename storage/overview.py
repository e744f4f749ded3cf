"""Reads behind the dashboard page and the drift gauges of ``/metrics``: one query per question.

Every list is bounded by a ``limit`` the caller gives (the dashboard shows the
newest few); payloads of dead letters are never read here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.db import Store

#: the figures a drift chart and the gauges show, per window
DRIFT_METRICS = ("drift_score", "drift_share", "prediction_drift")
#: the figures exported as gauges for the newest judged window of each version
GAUGE_METRICS = (
    "drift_score", "drift_share", "prediction_drift", "missing_share", "row_count",
    # estimated performance (score models whose reference holds labels): computed when the window closes
    "estimated_accuracy", "estimated_precision", "estimated_recall", "estimated_f1", "estimated_roc_auc",
)
#: written for every computed performance window (the mark that its figures are stored)
PERFORMANCE_MARK = "labelled_rows"


def drift_history(store: Store, model: str, *, segment: str = "", windows: int = 100) -> list[dict[str, Any]]:
    """Drift figures of ``model``'s newest ``windows`` windows of ``segment`` (``""`` = all
    rows), oldest first: ``window_id, version, start, end, status, column, metric, value,
    threshold, drifted, test`` (``column`` ``""`` for ``drift_share``)."""
    marks = ",".join("?" * len(DRIFT_METRICS))
    return store.query(
        "WITH w AS (SELECT id, version, start, \"end\", status FROM windows WHERE model = ? AND segment = ?"
        ' ORDER BY "end" DESC LIMIT ?)'
        ' SELECT w.id AS window_id, w.version, w.start, w."end", w.status, m."column", m.metric, m.value,'
        " m.threshold, m.drifted, m.test FROM w JOIN metrics m ON m.window_id = w.id"
        f" WHERE m.metric IN ({marks}) ORDER BY w.\"end\", w.version, m.\"column\", m.metric",
        (model, segment, max(int(windows), 0), *DRIFT_METRICS),
    )


def latest_judged(store: Store, model: str, versions: Sequence[str]) -> list[dict[str, Any]]:
    """For each of ``versions``: the figures (:data:`GAUGE_METRICS`) of its newest all-rows
    window with status ``ok``, with the window's ``version``, ``window_id``, ``end``.

    One indexed lookup per version (``windows_latest``): callers pass the versions the
    stream's caps admit now, so the answer stays as small as the caps."""
    if not versions:
        return []
    newest = (
        "SELECT (SELECT id FROM windows x WHERE x.model = ? AND x.segment = '' AND x.version = ?"
        ' AND x.status = \'ok\' ORDER BY x."end" DESC LIMIT 1) AS id'
    )
    union = " UNION ALL ".join([newest] * len(versions))
    params: list[Any] = []
    for v in versions:
        params += [model, v]
    marks = ",".join("?" * len(GAUGE_METRICS))
    return store.query(
        f"WITH ids AS ({union}) SELECT w.version, w.id AS window_id, w.\"end\", m.\"column\", m.metric,"
        " m.value, m.threshold, m.drifted, m.test FROM ids JOIN windows w ON w.id = ids.id"
        f" JOIN metrics m ON m.window_id = w.id WHERE m.metric IN ({marks})"
        ' ORDER BY w.version, m."column", m.metric',
        (*params, *GAUGE_METRICS),
    )


def latest_performance(store: Store, model: str, versions: Sequence[str], within: int) -> list[dict[str, Any]]:
    """For each of ``versions``: the ``performance`` figures of the whole window (column
    ``""``, with ``ci_low``/``ci_high``) of its newest all-rows window whose performance is
    computed, among its newest ``within`` windows, with the window's ``version``,
    ``window_id``, ``end``.

    A window's performance is computed when its labels mature, ``labels.delay`` after its
    end at the latest, so callers pass the windows of that span and some (``within``): a
    version whose labels never came is not searched back to its first window at each scrape.
    One indexed walk per version (``windows_latest``, then the figures' key)."""
    if not versions:
        return []
    newest = (
        "SELECT (SELECT r.id FROM (SELECT x.id, x.\"end\" FROM windows x WHERE x.model = ? AND x.segment = ''"
        ' AND x.version = ? ORDER BY x."end" DESC LIMIT ?) AS r WHERE EXISTS (SELECT 1 FROM metrics k'
        " WHERE k.window_id = r.id AND k.\"column\" = '' AND k.metric = ?) ORDER BY r.\"end\" DESC LIMIT 1) AS id"
    )
    union = " UNION ALL ".join([newest] * len(versions))
    params: list[Any] = []
    for v in versions:
        params += [model, v, max(int(within), 1), PERFORMANCE_MARK]
    return store.query(
        f"WITH ids AS ({union}) SELECT w.version, w.id AS window_id, w.\"end\", m.metric, m.value,"
        " m.ci_low, m.ci_high FROM ids JOIN windows w ON w.id = ids.id JOIN metrics m ON m.window_id = w.id"
        " WHERE m.family = 'performance' AND m.\"column\" = '' ORDER BY w.version, m.metric",
        params,
    )


def recent_deliveries(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The newest outbox rows (without their payload and response)."""
    return store.query(
        "SELECT id, notifier, kind, status, attempts, model, last_error, created_at, delivered_at,"
        " next_attempt_at FROM deliveries ORDER BY created_at DESC, rowid DESC LIMIT ?",
        (max(int(limit), 0),),
    )


def recent_dead_letters(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The newest dead letters (without their payload)."""
    return store.query(
        'SELECT id, topic, partition, "offset", reason, payload_size, received_at FROM dead_letters'
        " ORDER BY id DESC LIMIT ?",
        (max(int(limit), 0),),
    )


def get_window(store: Store, window_id: str) -> dict[str, Any] | None:
    rows = store.query("SELECT * FROM windows WHERE id = ?", (window_id,))
    return rows[0] if rows else None
