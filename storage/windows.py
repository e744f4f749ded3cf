"""Windows and their figures: idempotent writes (same window id replaces) and reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from storage.db import Store
from storage.records import MetricRow, WindowRecord, iso


def write_window(store: Store, window: WindowRecord, metrics: Sequence[MetricRow]) -> None:
    """Replace the window and all its figures (call inside ``store.transaction()``).

    Writing the same window twice leaves exactly the second write: the old
    figures are deleted first, so a metric that disappeared does not linger.
    """
    k = window.key
    store.execute("DELETE FROM metrics WHERE window_id = ?", (window.id,))
    store.execute(
        'INSERT INTO windows (id, model, version, segment, start, "end", rows, status,'
        " computed_at, late_rows, reference, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (id) DO UPDATE SET model = excluded.model, version = excluded.version,"
        ' segment = excluded.segment, start = excluded.start, "end" = excluded."end",'
        " rows = excluded.rows, status = excluded.status, computed_at = excluded.computed_at,"
        " late_rows = excluded.late_rows, reference = excluded.reference, error = excluded.error",
        (
            window.id, k.model, k.version, k.segment, k.start, k.end, window.rows, window.status,
            iso(window.computed_at), window.late_rows, window.reference, window.error,
        ),
    )
    store.executemany(
        'INSERT INTO metrics (window_id, model, "column", metric, value, p_value,'
        " threshold, drifted, test) VALUES (?,?,?,?,?,?,?,?,?)"
        ' ON CONFLICT (window_id, "column", metric) DO UPDATE SET model = excluded.model,'
        " value = excluded.value, p_value = excluded.p_value, threshold = excluded.threshold,"
        " drifted = excluded.drifted, test = excluded.test",
        [
            (
                window.id, k.model, m.column, m.metric, _num(m.value), _num(m.p_value),
                _num(m.threshold), None if m.drifted is None else int(m.drifted), m.test,
            )
            for m in metrics
        ],
    )


def _num(v: float | None) -> float | None:
    """SQLite has no NaN: store NaN as NULL."""
    if v is None:
        return None
    f = float(v)
    return None if f != f else f


def window_metrics(store: Store, window_id: str) -> list[dict[str, Any]]:
    return store.query(
        'SELECT * FROM metrics WHERE window_id = ? ORDER BY "column", metric', (window_id,)
    )


def metric_value(store: Store, window_id: str, metric: str, column: str = "") -> float | None:
    rows = store.query(
        'SELECT value FROM metrics WHERE window_id = ? AND metric = ? AND "column" = ?',
        (window_id, metric, column),
    )
    return rows[0]["value"] if rows else None


def windows_with_verdicts(
    store: Store, *, model: str | None = None, segment: str | None = None, limit: int | None = None,
    oldest_first: bool = False,
) -> list[dict[str, Any]]:
    """Windows with their dataset drift share (``drift_share``, None for insufficient
    windows), the share it was compared with (``share_threshold``: ``drift.share``, or
    the calibrated count over the number of columns) and verdict (``dataset_drift``)."""
    where, params = [], []
    if model is not None:
        where.append("w.model = ?")
        params.append(model)
    if segment is not None:
        where.append("w.segment = ?")
        params.append(segment)
    sql = (
        "SELECT w.*, m.value AS drift_share, m.threshold AS share_threshold, m.drifted AS dataset_drift"
        " FROM windows w LEFT JOIN metrics m "
        "ON m.window_id = w.id AND m.metric = 'drift_share' AND m.\"column\" = ''"
        + (" WHERE " + " AND ".join(where) if where else "")
        + (' ORDER BY w."end", w.model, w.version, w.segment' if oldest_first
           else ' ORDER BY w."end" DESC, w.model, w.version, w.segment')
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = store.query(sql, params)
    for r in rows:
        r["dataset_drift"] = None if r["dataset_drift"] is None else bool(r["dataset_drift"])
    return rows


def drifted_columns(store: Store, window_id: str) -> list[dict[str, Any]]:
    """The columns a window found drifted: ``column``, ``test``, ``value``."""
    return store.query(
        "SELECT \"column\", test, value FROM metrics WHERE window_id = ? AND metric = 'drift_score' "
        "AND drifted = 1 ORDER BY \"column\"",
        (window_id,),
    )


def window_counts(store: Store) -> list[dict[str, Any]]:
    """Per model and status: how many windows, and the newest end."""
    return store.query(
        'SELECT model, status, COUNT(*) AS n, MAX("end") AS last_end FROM windows GROUP BY model, status'
    )


def add_late_rows(store: Store, window_id: str, count: int) -> bool:
    """Count rows that arrived after a window closed; False if the window is not stored."""
    cur = store.execute("UPDATE windows SET late_rows = late_rows + ? WHERE id = ?", (count, window_id))
    return cur.rowcount > 0
