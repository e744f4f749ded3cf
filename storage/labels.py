"""The durable label join: predictions awaiting labels, early labels, counters, slots.

One function per question; every write is meant to run inside the pipeline's
flush transaction (``store.transaction()``), together with the windows and the
stream state, so the join and the Kafka offsets it accounts for move together.
Lists of ids travel as one JSON array parameter (``store.dialect.json_values``),
so a probe of 10,000 ids is one statement; so do the batches of rows the flush
writes (predictions, labels, early labels) are one set-based statement each on
PostgreSQL (``store.dialect.batch_rows``/``batch_update``: a pipelined
``executemany`` cost about twice as much a row there) and one statement per row on
SQLite (where reading the rows from JSON is the slower way).

One copy of each query serves SQLite and PostgreSQL (:mod:`storage.dialect`).
Predictions and labels are floats or class names: SQLite keeps them as they are in
its typeless columns, PostgreSQL in ``jsonb`` (``store.dialect.variant``, or
``json_field(i, "variant")`` in a batch); both give back the Python values that
went in.

Times are event times in epoch milliseconds. A label's *position* is
``partition << 40 | offset``: with its ``ts`` it orders labels of the same id
(the latest ``ts`` wins, ties go to the later record) the same way in every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Store
from storage.dialect import JsonParam, json_param
from storage.records import MetricRow, WindowKey, iso
from storage.windows import METRIC_KINDS, metric_rows

#: the join's counters per model (``label_counters.name``), as exported to Prometheus
COUNTERS = (
    "predictions",  # predictions that entered the join
    "duplicate_predictions",  # a prediction id seen before (the first one stays)
    "labels",  # labels consumed (valid ones)
    "joined",  # labels that labelled a prediction (first label of its id)
    "duplicate_labels",  # a further label for an id (the latest ts wins)
    "early",  # labels that had to wait for their prediction
    "expired_labels",  # labels later than their prediction's ts + ttl (not used)
    "expired_predictions",  # predictions that left the join unlabelled at ttl
    "unmatched_labels",  # early labels whose prediction never came within early_ttl
    "dropped_early_labels",  # early labels dropped, oldest first, past labels.max_early waiting
)

POS_SHIFT = 40


def position(partition: int, offset: int) -> int:
    return (int(partition) << POS_SHIFT) | int(offset)


def _ids(ids: Iterable[str]) -> JsonParam:
    return json_param(list(ids))


# --------------------------------------------------------------------------- predictions


def _literal(model: str) -> str:
    """``model`` as an SQL string literal. Model names are validated by the config
    (letters, digits, ``_-.``); quoting is doubled anyway. Binding one parameter less
    per row is a measurable share of the insert's cost."""
    return "'" + model.replace("'", "''") + "'"


def held_predictions(store: Store, model: str, candidates: Sequence[tuple[str, int]]) -> dict[str, tuple[Any, ...]]:
    """The held predictions among ``candidates`` ((event_id, ts) pairs, as
    :class:`monitor.labels.held_ids.HeldIds` gives them; a pair whose row is not there is
    left out): event_id -> (event_id, ts, label, label_ts, label_pos) with the label they
    carry so far (plain tuples: this runs per label). Each pair is one primary-key read."""
    if not candidates:
        return {}
    d = store.dialect
    # the pairs drive the loop (SQLite's CROSS JOIN keeps that order), each a key lookup
    rows = store.execute(
        f"SELECT p.event_id, p.ts, p.label, p.label_ts, p.label_pos FROM {d.json_rows('?')}"
        f" CROSS JOIN label_predictions AS p WHERE p.model = ? AND p.ts = {d.json_field(1, 'int')}"
        f" AND p.event_id = {d.json_field(0)}",
        (json_param(list(candidates)), model),
    ).fetchall()
    return {r[0]: r for r in rows}


def held_predictions_by_id(store: Store, model: str, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """The held predictions among ``ids``, found by id alone, as :func:`held_predictions`
    gives them. The table has no index by id: this reads every held prediction of
    ``model``, for the join's rare misses when another instance may have stored them
    (:attr:`monitor.labels.join.LabelJoin.lookup_misses`)."""
    if not ids:
        return {}
    d = store.dialect
    rows = store.execute(
        "SELECT event_id, ts, label, label_ts, label_pos FROM label_predictions WHERE model = ?"
        f" AND event_id IN (SELECT j.value FROM {d.json_values('?')})",
        (model, json_param(list(ids))),
    ).fetchall()
    return {r[0]: r for r in rows}


def held_ids(store: Store, model: str, *, chunk: int = 50_000) -> Iterator[tuple[list[str], list[int]]]:
    """Every held prediction of ``model`` as (event ids, event times) chunks of at most
    ``chunk``, in key order: what the join's in-memory id index is built from. Each chunk
    is one key-range read (memory bounded by ``chunk``, whatever the table holds)."""
    after: tuple[int, str] | None = None
    while True:
        if after is None:
            rows = store.execute(
                "SELECT ts, event_id FROM label_predictions WHERE model = ? ORDER BY ts, event_id LIMIT ?",
                (model, chunk),
            ).fetchall()
        else:
            rows = store.execute(
                # a row value: both stores then seek the key to it (with an OR, SQLite read
                # the model's rows from its first each time)
                "SELECT ts, event_id FROM label_predictions WHERE model = ? AND (ts, event_id) > (?, ?)"
                " ORDER BY ts, event_id LIMIT ?",
                (model, after[0], after[1], chunk),
            ).fetchall()
        if not rows:
            return
        yield [r[1] for r in rows], [int(r[0]) for r in rows]
        if len(rows) < chunk:
            return
        after = (int(rows[-1][0]), rows[-1][1])


_PREDICTION = ("text", "text", "int", "text", "variant")  # event_id, version, ts, segments, prediction
_LABEL = ("variant", "int", "int")  # label, label_ts, label_pos


def insert_predictions(
    store: Store, model: str, rows: Iterable[tuple[Any, ...]], labelled: Iterable[tuple[Any, ...]] = ()
) -> int:
    """Insert predictions; a row whose key ``(ts, event_id)`` is held already is left as
    it is. An id held at another ``ts`` is not looked for: the join keeps ids unique
    (:mod:`monitor.labels.held_ids`; the table has no index by id, which cost most of
    the join's writes with random ids).

    ``rows``: (event_id, version, ts, segments, prediction) tuples; ``labelled``: the
    same plus (label, label_ts, label_pos), for predictions whose label came first.
    A NaN prediction is stored as NULL. Returns how many were inserted.
    """
    d = store.dialect
    lit = _literal(model)
    inserted = store.execute_batch(
        "INSERT INTO label_predictions (model, event_id, version, ts, segments, prediction)"
        f" {d.batch_rows([lit], _PREDICTION)} ON CONFLICT DO NOTHING",
        rows,
    )
    if labelled:
        inserted += store.execute_batch(
            "INSERT INTO label_predictions (model, event_id, version, ts, segments, prediction,"
            f" label, label_ts, label_pos) {d.batch_rows([lit], _PREDICTION + _LABEL)} ON CONFLICT DO NOTHING",
            labelled,
        )
    return inserted


def set_labels(store: Store, model: str, rows: Sequence[tuple[Any, int, int, int, str]]) -> None:
    """Label held predictions: (label, label_ts, label_pos, ts, event_id) tuples, ``ts``
    being the prediction's (its place in the table: updates go in table order). Of rows
    for the same prediction the last one given wins (as if each were applied in turn,
    which one set-based statement does not do by itself)."""
    if not rows:
        return
    last = {(r[3], r[4]): r for r in rows}
    store.execute_batch(
        store.dialect.batch_update(
            "label_predictions", ("label", "label_ts", "label_pos"), f"model = {_literal(model)}",
            ("ts", "event_id"), (*_LABEL, "int", "text"),
        ),
        sorted(last.values(), key=lambda r: (r[3], r[4])),
    )


def slot_counts(store: Store, model: str, start: int, end: int) -> list[tuple[str, str, int, int]]:
    """(version, segments, predictions, labelled) of the predictions with ``start <= ts < end``."""
    return store.execute(
        "SELECT version, segments, COUNT(*), COUNT(label) FROM label_predictions"
        " WHERE model = ? AND ts >= ? AND ts < ? GROUP BY version, segments ORDER BY version, segments",
        (model, start, end),
    ).fetchall()


def slot_labelled(store: Store, model: str, start: int, end: int) -> list[tuple[Any, ...]]:
    """(version, segments, prediction, label) of the labelled predictions with
    ``start <= ts < end``, in (ts, event_id) order (the table's order: deterministic)."""
    return store.execute(
        "SELECT version, segments, prediction, label FROM label_predictions"
        " WHERE model = ? AND ts >= ? AND ts < ? AND label IS NOT NULL ORDER BY ts, event_id",
        (model, start, end),
    ).fetchall()


def prune_predictions(store: Store, model: str, before_ts: int) -> tuple[int, int]:
    """Drop the predictions with ``ts < before_ts``; (dropped, of which unlabelled)."""
    unlabelled = store.execute(
        "SELECT COUNT(*) FROM label_predictions WHERE model = ? AND ts < ? AND label IS NULL",
        (model, before_ts),
    ).fetchone()[0]
    cur = store.execute("DELETE FROM label_predictions WHERE model = ? AND ts < ?", (model, before_ts))
    return int(cur.rowcount), int(unlabelled)


def pending_predictions(store: Store, model: str | None = None) -> dict[str, tuple[int, int]]:
    """Per model: (held predictions, of which labelled)."""
    sql = "SELECT model, COUNT(*), COUNT(label) FROM label_predictions"
    params: tuple[Any, ...] = ()
    if model is not None:
        sql += " WHERE model = ?"
        params = (model,)
    return {r[0]: (int(r[1]), int(r[2])) for r in store.execute(sql + " GROUP BY model", params).fetchall()}


# --------------------------------------------------------------------------- early labels


@dataclass(frozen=True, slots=True)
class EarlyLabel:
    event_id: str
    label: Any
    ts: int
    pos: int


def has_early_labels(store: Store, model: str) -> bool:
    return store.execute("SELECT 1 FROM label_early WHERE model = ? LIMIT 1", (model,)).fetchone() is not None


def early_labels(store: Store, model: str, ids: Sequence[str]) -> dict[str, EarlyLabel]:
    """The waiting labels among ``ids``."""
    if not ids:
        return {}
    rows = store.execute(
        "SELECT event_id, label, ts, pos FROM label_early WHERE model = ?"
        f" AND event_id IN (SELECT value FROM {store.dialect.json_values('?')})",
        (model, _ids(ids)),
    ).fetchall()
    return {r[0]: EarlyLabel(*r) for r in rows}


def upsert_early_labels(store: Store, model: str, rows: Sequence[EarlyLabel]) -> None:
    """Store labels that wait for their prediction; an id already waiting keeps the
    later of the two (ts, then position). Of rows for the same id only the first of the
    latest goes in (what applying each in turn leaves: a set-based upsert may not touch
    a row twice on PostgreSQL)."""
    if not rows:
        return
    best: dict[str, EarlyLabel] = {}
    for e in rows:
        old = best.get(e.event_id)
        if old is None or (e.ts, e.pos) > (old.ts, old.pos):
            best[e.event_id] = e
    store.execute_batch(
        "INSERT INTO label_early (model, event_id, label, ts, pos)"
        f" {store.dialect.batch_rows([_literal(model)], ('text', 'variant', 'int', 'int'))}"
        " ON CONFLICT (model, event_id) DO UPDATE SET label = excluded.label, ts = excluded.ts,"
        " pos = excluded.pos WHERE (excluded.ts, excluded.pos) > (label_early.ts, label_early.pos)",
        [(e.event_id, e.label, e.ts, e.pos) for e in best.values()],
    )


def delete_early_labels(store: Store, model: str, ids: Sequence[str]) -> None:
    if ids:
        store.execute(
            "DELETE FROM label_early WHERE model = ?"
            f" AND event_id IN (SELECT value FROM {store.dialect.json_values('?')})",
            (model, _ids(ids)),
        )


def prune_early_labels(store: Store, model: str, before_ts: int) -> int:
    """Drop the waiting labels with ``ts < before_ts``; how many."""
    cur = store.execute("DELETE FROM label_early WHERE model = ? AND ts < ?", (model, before_ts))
    return int(cur.rowcount)


def count_early_labels(store: Store, model: str) -> int:
    """How many labels of ``model`` wait for their prediction (reads the model's entries of
    the ``(model, ts)`` index: O(waiting labels))."""
    return int(store.execute("SELECT COUNT(*) FROM label_early WHERE model = ?", (model,)).fetchone()[0])


def drop_oldest_early_labels(store: Store, model: str, n: int, *, future_after: int | None = None) -> int:
    """Drop ``n`` waiting labels of ``model``: first those stamped after ``future_after``
    (epoch ms: the wall clock, None: none counts as such), furthest ahead first, then the
    oldest (by ``ts``, then position: the order in which a later label replaces an earlier
    one). A label stamped ahead of the wall clock is implausible (a label comes after the
    fact); dropped oldest first, a flood stamped up to ``max_future_skew`` ahead would have
    outlived every real label for that long. Returns how many were dropped (fewer when
    fewer wait; none for ``n <= 0``). Reads only the rows it drops, from the ``(model, ts)``
    index."""
    dropped = 0
    if n > 0 and future_after is not None:
        dropped = int(store.execute(
            "DELETE FROM label_early WHERE model = ? AND event_id IN (SELECT event_id FROM label_early"
            " WHERE model = ? AND ts > ? ORDER BY ts DESC, pos DESC, event_id DESC LIMIT ?)",
            (model, model, future_after, n),
        ).rowcount)
    if n - dropped > 0:
        dropped += int(store.execute(
            "DELETE FROM label_early WHERE model = ? AND event_id IN"
            " (SELECT event_id FROM label_early WHERE model = ? ORDER BY ts, pos, event_id LIMIT ?)",
            (model, model, n - dropped),
        ).rowcount)
    return dropped


# --------------------------------------------------------------------------- counters


def add_counters(store: Store, model: str, counts: Mapping[str, int]) -> None:
    rows = [(model, k, int(v)) for k, v in counts.items() if v]
    if rows:
        store.executemany(
            "INSERT INTO label_counters (model, name, value) VALUES (?,?,?)"
            " ON CONFLICT (model, name) DO UPDATE SET value = label_counters.value + excluded.value",
            rows,
        )


def label_counters(store: Store) -> dict[str, dict[str, int]]:
    """Per model, every counter of the join (missing ones are 0)."""
    out: dict[str, dict[str, int]] = {}
    for model, name, value in store.execute("SELECT model, name, value FROM label_counters").fetchall():
        out.setdefault(model, dict.fromkeys(COUNTERS, 0))[name] = int(value)
    return out


# --------------------------------------------------------------------------- slots


@dataclass(frozen=True, slots=True)
class Slot:
    """One time window of a model (all versions and segments) in the join."""

    model: str
    start: int
    end: int
    rows: int
    labelled: int
    computed_at: str | None
    dirty: bool


def recount_slots(store: Store, model: str, slots: Sequence[tuple[int, int]]) -> None:
    """Set the counts of ``slots`` from the rows themselves (after inserts that skipped
    duplicate ids, whose windows the batch cannot tell)."""
    store.executemany(
        'INSERT INTO label_slots (model, start, "end", rows, labelled, dirty)'
        " SELECT ?, ?, ?, COUNT(*), COUNT(label), 0 FROM label_predictions"
        " WHERE model = ? AND ts >= ? AND ts < ?"
        ' ON CONFLICT (model, start, "end") DO UPDATE SET rows = excluded.rows, labelled = excluded.labelled,'
        " dirty = CASE WHEN label_slots.computed_at IS NOT NULL THEN 1 ELSE label_slots.dirty END",
        [(model, s, e, model, s, e) for s, e in slots],
    )


def add_to_slots(store: Store, model: str, counts: Sequence[tuple[int, int, int, int, bool]]) -> None:
    """Add (start, end, rows, labelled, changes_figures) to slots; a computed slot whose
    figures the change affects is marked dirty (recomputed when due)."""
    store.executemany(
        'INSERT INTO label_slots (model, start, "end", rows, labelled, dirty) VALUES (?,?,?,?,?,0)'
        ' ON CONFLICT (model, start, "end") DO UPDATE SET rows = label_slots.rows + excluded.rows,'
        " labelled = label_slots.labelled + excluded.labelled,"
        " dirty = CASE WHEN label_slots.computed_at IS NOT NULL AND ? = 1 THEN 1 ELSE label_slots.dirty END",
        [(model, s, e, r, lab, int(ch)) for s, e, r, lab, ch in counts],
    )


def due_slots(
    store: Store, model: str, *, clock_ms: int, delay_ms: int, coverage: float,
    recompute_before: str, limit: int, ended_ms: int | None = None,
) -> list[Slot]:
    """Slots to (re)compute: first those never computed and mature (``end + delay <=
    clock``, or ended (``end <= ended_ms``) with labelled share >= ``coverage`` and no
    earlier slot still waiting to mature), then those dirty and last computed before
    ``recompute_before`` (ISO time); oldest first within each. ``ended_ms`` (epoch ms):
    how far the predictions have come (None: ``clock_ms``).

    Coverage matures only an ended slot: a slot the predictions have not passed still takes
    them, and its first labels reach any share while it holds a handful of rows
    (judged so, a window of 31 rows fired an accuracy rule its whole window would not).

    Coverage matures a slot only in time order: the alert rules judge a model's windows
    in time order and never one ending before the last they judged, so a later window
    that reached coverage first left an earlier one (matured by ``delay`` later) never
    judged: its figures were stored, but an accuracy of 0 there fired nothing."""
    waiting = (
        'SELECT MIN("end") FROM label_slots WHERE model = ? AND rows > 0 AND computed_at IS NULL'
        ' AND "end" + ? > ? AND labelled < ? * rows'
    )
    rows = store.execute(
        'SELECT model, start, "end", rows, labelled, computed_at, dirty FROM label_slots WHERE model = ?'
        ' AND rows > 0 AND ((computed_at IS NULL AND ("end" + ? <= ?'
        f' OR ("end" <= ? AND labelled >= ? * rows AND "end" < COALESCE(({waiting}), "end" + 1))))'
        ' OR (dirty = 1 AND computed_at < ?)) ORDER BY computed_at IS NOT NULL, "end", start LIMIT ?',
        (model, delay_ms, clock_ms, clock_ms if ended_ms is None else ended_ms, coverage, model, delay_ms, clock_ms, coverage, recompute_before,
         limit),
    ).fetchall()
    return [Slot(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]


def slots_waiting(store: Store, model: str | None = None) -> int:
    """Slots not computed yet or dirty (work the join still owes)."""
    sql = "SELECT COUNT(*) FROM label_slots WHERE (computed_at IS NULL OR dirty = 1)"
    params: tuple[Any, ...] = ()
    if model is not None:
        sql += " AND model = ?"
        params = (model,)
    return int(store.execute(sql, params).fetchone()[0])


def mark_computed(store: Store, model: str, start: int, end: int, at: datetime) -> None:
    store.execute(
        'UPDATE label_slots SET computed_at = ?, dirty = 0 WHERE model = ? AND start = ? AND "end" = ?',
        (iso(at), model, start, end),
    )


def mark_dirty(store: Store, model: str, start: int, end: int) -> None:
    """A computed slot needs recomputing (e.g. its drift window closed after it)."""
    store.execute(
        'UPDATE label_slots SET dirty = 1 WHERE model = ? AND start = ? AND "end" = ? AND computed_at IS NOT NULL',
        (model, start, end),
    )


def first_owed_start(store: Store, model: str) -> int | None:
    """The start of the oldest slot with predictions still owing figures (not computed,
    or dirty): its predictions must stay in the join. None when nothing is owed."""
    row = store.execute(
        "SELECT MIN(start) FROM label_slots WHERE model = ? AND (computed_at IS NULL OR dirty = 1) AND rows > 0",
        (model,),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def prune_slots(store: Store, model: str, end_before: int) -> int:
    """Drop slots ending at or before ``end_before`` whose figures are final (computed and
    not dirty) or that hold no predictions; how many."""
    cur = store.execute(
        'DELETE FROM label_slots WHERE model = ? AND "end" <= ?'
        " AND ((computed_at IS NOT NULL AND dirty = 0) OR rows = 0)",
        (model, end_before),
    )
    return int(cur.rowcount)


def list_slots(store: Store, model: str) -> list[Slot]:
    rows = store.execute(
        'SELECT model, start, "end", rows, labelled, computed_at, dirty FROM label_slots WHERE model = ?'
        ' ORDER BY start, "end"',
        (model,),
    ).fetchall()
    return [Slot(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in rows]


# --------------------------------------------------------------------------- performance figures


def write_performance(
    store: Store, key: WindowKey, metrics: Sequence[MetricRow], *, computed_at: datetime, reference: str = ""
) -> None:
    """Replace the ``performance`` figures of one window; its ``data`` figures stay.

    A window whose data figures are not stored yet (its drift window is still
    open) gets a placeholder ``windows`` row with status ``open``, which the drift
    window replaces when it closes.
    """
    wid = key.id
    store.execute(
        'INSERT INTO windows (id, model, version, segment, start, "end", rows, status,'
        " computed_at, late_rows, reference, error) VALUES (?,?,?,?,?,?,0,'open',?,0,?,'')"
        " ON CONFLICT (id) DO NOTHING",
        (wid, key.model, key.version, key.segment, key.start, key.end, iso(computed_at), reference),
    )
    store.execute("DELETE FROM metrics WHERE window_id = ? AND family = 'performance'", (wid,))
    # a figure named like a data figure of the window takes its row (the whole row)
    store.execute_batch(
        'INSERT INTO metrics (family, window_id, model, "column", metric, value, p_value,'
        " threshold, drifted, test, ci_low, ci_high) "
        + store.dialect.batch_rows(("'performance'",), (*METRIC_KINDS, "real", "real"))
        + ' ON CONFLICT (window_id, "column", metric) DO UPDATE SET model = excluded.model,'
        " value = excluded.value, p_value = excluded.p_value, threshold = excluded.threshold,"
        " drifted = excluded.drifted, test = excluded.test, family = excluded.family,"
        " ci_low = excluded.ci_low, ci_high = excluded.ci_high",
        metric_rows(store, wid, key.model, metrics, with_ci=True),
    )


def data_figures(store: Store, window_ids: Sequence[str], prefix: str) -> dict[tuple[str, str], float]:
    """(window id, metric) -> value of the ``data`` figures whose name starts with ``prefix``."""
    if not window_ids:
        return {}
    # substr, not a range ``metric >= prefix AND metric < prefix + U+10FFFF``: the range
    # depends on the collation, which on PostgreSQL is the database's
    rows = store.execute(
        "SELECT window_id, metric, value FROM metrics WHERE window_id IN"
        f" (SELECT value FROM {store.dialect.json_values('?')})"
        " AND family = 'data' AND substr(metric, 1, ?) = ?",
        (_ids(window_ids), len(prefix), prefix),
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows if r[2] is not None}
