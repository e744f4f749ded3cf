"""Windows and their figures: idempotent writes (same window id replaces) and reads."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from storage.db import Store
from storage.dialect import Dialect, json_param
from storage.records import MetricRow, WindowRecord, iso
from storage.redaction import redact


def write_window(store: Store, window: WindowRecord, metrics: Sequence[MetricRow]) -> None:
    """Replace the window and its ``data`` figures (call inside ``store.transaction()``).

    Writing the same window twice leaves exactly the second write: the old
    figures are deleted first, so a metric that disappeared does not linger.
    Figures of the ``performance`` family (written when labels mature, see
    :mod:`storage.labels`) are left alone. The window's ``error`` (an exception's text) is
    stored without a registered secret (:func:`storage.redaction.redact`).
    """
    write_windows(store, [(window, metrics)])


#: the batch fields of a ``windows`` row (:func:`_window_row`)
WINDOW_KINDS = ("text",) * 6 + ("int", "text", "text", "int", "text", "text")


@functools.lru_cache(maxsize=4)
def _window_upsert(d: Dialect) -> str:
    return (
        'INSERT INTO windows (id, model, version, segment, start, "end", rows, status,'
        " computed_at, late_rows, reference, error) " + d.batch_rows((), WINDOW_KINDS)
        + " ON CONFLICT (id) DO UPDATE SET model = excluded.model, version = excluded.version,"
        ' segment = excluded.segment, start = excluded.start, "end" = excluded."end",'
        " rows = excluded.rows, status = excluded.status, computed_at = excluded.computed_at,"
        " late_rows = excluded.late_rows, reference = excluded.reference, error = excluded.error"
    )


def _window_row(window: WindowRecord) -> tuple[Any, ...]:
    """``window`` as a row of :func:`_window_upsert` (its error redacted)."""
    k = window.key
    return (
        window.id, k.model, k.version, k.segment, k.start, k.end, window.rows, window.status,
        iso(window.computed_at), window.late_rows, window.reference, redact(window.error),
    )


def write_windows(store: Store, windows: Sequence[tuple[WindowRecord, Sequence[MetricRow]]]) -> None:
    """Replace windows and their ``data`` figures as :func:`write_window` called on each in
    turn would (call inside ``store.transaction()``), in a fixed number of statements
    whatever their number: one delete of the old figures, one upsert of the windows, at most
    two upserts of the figures per pattern of absent fields (SQLite: its rows
    :data:`ROWS_PER_STATEMENT` a run, then the rest a row a run, see
    :func:`_upsert_metric_rows`; one on PostgreSQL). A flush closing ~1,900 small windows
    made ~12 statements a window.

    A window id given twice: written one after the other (the later wins, as before). No
    windows: nothing is run."""
    if not windows:
        return
    ids = [w.id for w, _ in windows]
    if len(set(ids)) < len(ids):
        for w, m in windows:
            write_windows(store, [(w, m)])
        return
    d = store.dialect
    store.execute(
        f"DELETE FROM metrics WHERE family = 'data' AND window_id IN (SELECT value FROM {d.json_values('?')})",
        (json_param(ids),),
    )
    store.execute_batch(_window_upsert(d), [_window_row(w) for w, _ in windows])
    _upsert_metric_rows(store, [(w.id, w.key.model, m) for w, m in windows])


#: the batch fields of :func:`metric_rows`' rows (see :meth:`storage.dialect.Dialect.json_field`)
METRIC_KINDS = ("text", "text", "text", "text", "real", "real", "real", "int", "text")


def _metric_upsert(rows_sql: str) -> str:
    return (
        'INSERT INTO metrics (window_id, model, "column", metric, value, p_value, threshold, drifted, test) '
        + rows_sql
        + ' ON CONFLICT (window_id, "column", metric) DO UPDATE SET model = excluded.model,'
        " value = excluded.value, p_value = excluded.p_value, threshold = excluded.threshold,"
        " drifted = excluded.drifted, test = excluded.test"
    )


def upsert_metrics(store: Store, window_id: str, model: str, metrics: Sequence[MetricRow]) -> None:
    """Upsert a window's ``data`` figures, the rows :func:`metric_rows` makes (call inside
    ``store.transaction()``); see :func:`_upsert_metric_rows`."""
    _upsert_metric_rows(store, [(window_id, model, metrics)])


def _upsert_metric_rows(store: Store, windows: Sequence[tuple[str, str, Sequence[MetricRow]]]) -> None:
    """Upsert the ``data`` figures of ``windows`` (``(window id, model, figures)``, the ids
    distinct), the rows :func:`metric_rows` makes for each.

    Where the statement runs once per row (SQLite), rows with None in the same fields
    (most figures have no p-value, threshold, verdict or test) go through one statement
    with a literal ``NULL`` there, left out of their parameters (see
    :meth:`Dialect.batch_rows <storage.dialect.Dialect.batch_rows>`), ~1.5 µs less a None:
    one statement per pattern of absent fields for all the windows (a row's key is
    upserted once, so the order between patterns leaves the same rows), each run of it
    writing :data:`ROWS_PER_STATEMENT` rows (:func:`_run_grouped`)."""
    d = store.dialect
    if d.json_batches:
        rows = [r for wid, model, metrics in windows for r in metric_rows(store, wid, model, metrics)]
        store.execute_batch(_metric_upsert(d.batch_rows((), METRIC_KINDS)), rows)
        return
    runs: dict[tuple[bool, ...], tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]], list[Any]]] = {}
    for window_id, model, metrics in windows:
        # metric_rows' rows made in the same pass that groups them (one Python step per row, not
        # three: ~1 µs less a row; test_sqlite_stores_exactly_the_rows_of_metric_rows): each
        # (column, metric) once, with its last figures; floats as Dialect.real makes them on
        # SQLite (None and NaN as None, else float)
        last = {(m.column, m.metric): m for m in metrics}
        for m in (metrics if len(last) == len(metrics) else last.values()):
            v, p, t, dr, test = m.value, m.p_value, m.threshold, m.drifted, m.test
            if v is not None and (v := float(v)) != v:
                v = None
            if p is not None and (p := float(p)) != p:
                p = None
            if t is not None and (t := float(t)) != t:
                t = None
            absent = (v is None, p is None, t is None, dr is None, test is None)
            run = runs.get(absent)
            if run is None:
                run = runs[absent] = (*_upsert_without(d, absent), [])
            run[2].extend(run[1]((window_id, model, m.column, m.metric, v, p, t, None if dr is None else int(dr), test)))
    for absent, (sql, _, fields) in runs.items():
        _run_grouped(store, sql, _upsert_many(d, absent), fields, len(METRIC_KINDS) - sum(absent))


#: metric rows per run of a multi-row upsert on SQLite (:func:`_run_grouped`): one run of the
#: statement binds and steps ~3k instructions a row cheaper than a run per row (the 64 rows of
#: the widest pattern bind 576 parameters, far below SQLite's limit of 32,766)
ROWS_PER_STATEMENT = 64


def _run_grouped(store: Store, one: str, many: str, fields: list[Any], width: int) -> None:
    """Run the rows whose fields ``fields`` holds one after the other (``width`` a row)
    through ``many`` (:data:`ROWS_PER_STATEMENT` rows a run), the last
    ``rows % ROWS_PER_STATEMENT`` through ``one`` (a row a run): the same rows written in
    the same order."""
    step = width * ROWS_PER_STATEMENT
    whole = len(fields) - len(fields) % step
    if whole:
        store.executemany(many, [fields[i:i + step] for i in range(0, whole, step)])
    if whole < len(fields):
        store.execute_batch(one, [fields[i:i + width] for i in range(whole, len(fields), width)])


@functools.lru_cache(maxsize=64)
def _upsert_without(d: Dialect, absent: tuple[bool, ...]) -> tuple[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]]:
    """The upsert of metric rows whose nullable fields (value, p_value, threshold, drifted,
    test) are None where ``absent`` says, and what it binds of a full row."""
    nulls = _nulls(absent)
    kept = [i for i in range(len(METRIC_KINDS)) if i not in nulls]
    return _metric_upsert(d.batch_rows((), METRIC_KINDS, nulls)), operator.itemgetter(*kept)


@functools.lru_cache(maxsize=64)
def _upsert_many(d: Dialect, absent: tuple[bool, ...]) -> str:
    """:func:`_upsert_without`'s statement with :data:`ROWS_PER_STATEMENT` rows a run."""
    return _metric_upsert(d.batch_rows((), METRIC_KINDS, _nulls(absent), copies=ROWS_PER_STATEMENT))


def _nulls(absent: tuple[bool, ...]) -> list[int]:
    """Indexes (into :data:`METRIC_KINDS`) of the nullable fields ``absent`` says are None."""
    return [4 + i for i, a in enumerate(absent) if a]


def metric_rows(
    store: Store, window_id: str, model: str, metrics: Sequence[MetricRow], *, with_ci: bool = False
) -> list[tuple[Any, ...]]:
    """``metrics`` as rows of a batch upsert into ``metrics`` (:data:`METRIC_KINDS`, then
    ``ci_low``, ``ci_high`` with ``with_ci``): one row per (column, metric), the last
    wins, as the upsert run row by row would leave it (one set-based statement may not
    touch a row twice on PostgreSQL); floats through :meth:`Dialect.real
    <storage.dialect.Dialect.real>`."""
    real = store.dialect.real
    rows: dict[tuple[str, str], tuple[Any, ...]] = {}
    for m in metrics:
        row: tuple[Any, ...] = (
            window_id, model, m.column, m.metric, real(m.value), real(m.p_value), real(m.threshold),
            None if m.drifted is None else int(m.drifted), m.test,
        )
        rows[(m.column, m.metric)] = (*row, real(m.ci_low), real(m.ci_high)) if with_ci else row
    return list(rows.values())


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


#: the performance figures a window listing shows (when the window has them)
HEADLINE_PERFORMANCE = ("accuracy", "f1", "roc_auc", "f1_macro", "mae", "rmse", "r2")


def windows_with_verdicts(
    store: Store,
    *,
    model: str | None = None,
    segment: str | None = None,
    since: str | None = None,
    status: str | None = None,
    drifted: bool | None = None,
    limit: int | None = None,
    oldest_first: bool = False,
) -> list[dict[str, Any]]:
    """Windows with their dataset drift share (``drift_share``, None for insufficient
    windows), the share it was compared with (``share_threshold``: ``drift.share``, or
    the calibrated count over the number of columns) and verdict (``dataset_drift``);
    with labels, ``label_coverage`` and ``performance``: the headline figures
    (:data:`HEADLINE_PERFORMANCE`, in its order) as ``{metric: {"value", "ci_low",
    "ci_high"}}`` (empty before labels mature).

    Filters: ``since`` bounds the window end (ISO text), ``status`` is the stored
    status, ``drifted`` the dataset verdict (a window without one counts as not drifted).
    Newest first unless ``oldest_first``; the API, the CLI and the demo all list here.
    """
    where, params = [], []
    for cond, value in (("model = ?", model), ("segment = ?", segment), ('"end" >= ?', since),
                        ("status = ?", status)):
        if value is not None:
            where.append(cond)
            params.append(value)
    if drifted is not None:
        # the verdict lives in metrics: filter on it inside the window query
        where.append(
            "COALESCE((SELECT drifted FROM metrics v WHERE v.window_id = windows.id AND v.metric = 'drift_share'"
            " AND v.\"column\" = ''), 0) = ?"
        )
        params.append(int(drifted))
    direction = "" if oldest_first else " DESC"
    order = f'"end"{direction}, model, version, segment'
    # the newest windows first, then their verdicts: the join runs for `limit` rows, not all
    inner = "SELECT * FROM windows" + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
    if limit:
        inner += " LIMIT ?"
        params.append(int(limit))
    sql = (
        "SELECT w.*, m.value AS drift_share, m.threshold AS share_threshold, m.drifted AS dataset_drift,"
        " c.value AS label_coverage"
        f" FROM ({inner}) w LEFT JOIN metrics m"
        " ON m.window_id = w.id AND m.metric = 'drift_share' AND m.\"column\" = ''"
        " LEFT JOIN metrics c ON c.window_id = w.id AND c.metric = 'label_coverage' AND c.\"column\" = ''"
        f' ORDER BY w."end"{direction}, w.model, w.version, w.segment'
    )
    rows = store.query(sql, params)
    perf = _headline_performance(store, [r["id"] for r in rows])
    for r in rows:
        r["dataset_drift"] = None if r["dataset_drift"] is None else bool(r["dataset_drift"])
        r["performance"] = perf.get(r["id"], {})
    return rows


def _headline_performance(store: Store, ids: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    if not ids:
        return {}
    found: dict[str, dict[str, dict[str, float | None]]] = {}
    marks = ",".join("?" * len(HEADLINE_PERFORMANCE))
    for r in store.query(
        "SELECT window_id, metric, value, ci_low, ci_high FROM metrics WHERE family = 'performance'"
        f" AND \"column\" = '' AND metric IN ({marks})"
        f" AND window_id IN (SELECT value FROM {store.dialect.json_values('?')})",
        [*HEADLINE_PERFORMANCE, json_param(ids)],
    ):
        found.setdefault(r["window_id"], {})[r["metric"]] = {
            "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]
        }
    # in HEADLINE_PERFORMANCE's order, not the rows' (which the store chooses: PostgreSQL
    # returns them as stored), so "the first headline figure" is the same on every store
    return {wid: {m: figs[m] for m in HEADLINE_PERFORMANCE if m in figs} for wid, figs in found.items()}


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


def stored_time_windows(
    store: Store, model: str, ends_after: str | None, starts_before: str | None
) -> list[tuple[str, str, str, str]]:
    """``(version, segment, start, end)`` of ``model``'s stored time windows (not count
    windows) that end after ``ends_after`` and start before ``starts_before`` (ISO text;
    None: unbounded): which windows a model re-windowed into a new shape must not
    rewrite (see :mod:`monitor.windows.carry`)."""
    sql = "SELECT version, segment, start, \"end\" FROM windows WHERE model = ? AND start NOT LIKE '#%'"
    params: list[Any] = [model]
    if ends_after is not None:
        sql += ' AND "end" > ?'
        params.append(ends_after)
    if starts_before is not None:
        sql += " AND start < ?"
        params.append(starts_before)
    return [(r["version"], r["segment"], r["start"], r["end"]) for r in store.query(sql, params)]
