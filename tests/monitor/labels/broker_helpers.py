"""Helpers for label tests against the real broker: read-only peeks at the label join's state."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from storage.db import StorageError, Store
from tests.monitor.labels.helpers import metric
from tests.monitor.labels.test_join import expected_figures
from tests.store_targets import PG_MODE, state_target


def _query(db: Path, sql: str) -> list[tuple[Any, ...]] | None:
    if PG_MODE:  # DRIFTWARDEN_TEST_STORE=postgres: the state dir's database
        try:
            return [tuple(r.values()) for r in state_target(db).reader().query(sql)]
        except StorageError:
            return None
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def label_offset(db: Path) -> int:
    """Sum over partitions of the labels topic's durably consumed offsets (each kept in the
    row of the predictions partition of the same number, or in the single-row state)."""
    offsets: dict[int, int] = {}
    for (state,) in _query(db, "SELECT state FROM stream_state WHERE name = 'labels'") or []:
        offsets.update({int(p): int(o) for p, o in orjson.loads(state).get("offsets", {}).items()})
    for part, state in _query(db, "SELECT partition, state FROM stream_partitions") or []:
        off = orjson.loads(state).get("labels", {}).get("offset")
        if off is not None:
            offsets[int(part)] = int(off)
    return sum(offsets.values())


def slots_owed(db: Path) -> int:
    """Performance slots not computed yet, or computed before labels that came since."""
    rows = _query(db, "SELECT COUNT(*) FROM label_slots WHERE (computed_at IS NULL AND rows > 0) OR dirty = 1")
    return -1 if rows is None else int(rows[0][0])


def labels_done(db: Path, n_labels: int) -> bool:
    return label_offset(db) >= n_labels and slots_owed(db) == 0


def perf_dump(db: Path) -> list[tuple[Any, ...]]:
    rows = _query(
        db,
        'SELECT window_id, "column", metric, value, p_value, threshold, drifted, test, ci_low, ci_high'
        " FROM metrics WHERE family = 'performance' ORDER BY window_id, \"column\", metric",
    )
    return rows or []


def data_dump(db: Path) -> list[tuple[Any, ...]]:
    """The ``data`` figures and the windows (what a late label must not change)."""
    rows = _query(
        db,
        'SELECT window_id, "column", metric, value, p_value, threshold, drifted, test'
        " FROM metrics WHERE family = 'data' ORDER BY window_id, \"column\", metric",
    ) or []
    windows = _query(db, "SELECT id, rows, status, late_rows FROM windows ORDER BY id") or []
    return rows + windows


def performance_windows(store: Store) -> list[str]:
    """The ids of the stored performance windows (those with an accuracy), in order."""
    return [r["window_id"] for r in store.query(
        "SELECT DISTINCT window_id FROM metrics WHERE family = 'performance' AND metric = 'accuracy'"
        " ORDER BY window_id")]  # fmt: skip


def assert_figures_equal_expected(
    store: Store, window_ids: list[str], preds: list[dict[str, Any]], joined: dict[str, Any]
) -> None:
    """Each window's stored performance figures equal scikit-learn's on the expected join
    (relative 1e-12)."""
    for wid in window_ids:
        _m, _v, segment, start, _e = wid.split("|")
        start_ms = int(np.datetime64(start.replace("Z", "")).astype("datetime64[ms]").astype(np.int64))
        for name, value in expected_figures(preds, joined, start_ms, segment).items():
            got = metric(store, wid, name)
            assert got is not None and abs(got - value) <= 1e-12 * max(1.0, abs(value)), (wid, name, got, value)
