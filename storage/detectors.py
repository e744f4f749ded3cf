"""Durable state of the rules' change detectors (CUSUM, Page–Hinkley), one row per alert instance.

Written in the same transaction as the window whose figure updated it, so a
restart (or a replayed window) continues exactly where the detector was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from storage.db import Store
from storage.records import iso


def load_detector(store: Store, alert_id: str) -> dict[str, Any] | None:
    """``{"state", "last_window_id", "window_end"}`` of an instance's detector, or None."""
    rows = store.query(
        "SELECT state, last_window_id, window_end FROM rule_detectors WHERE alert_id = ?",
        (alert_id,),
    )
    if not rows:
        return None
    r = rows[0]
    return {"state": orjson.loads(r["state"]), "last_window_id": r["last_window_id"],
            "window_end": r["window_end"]}


def save_detector(
    store: Store, *, alert_id: str, rule: str, model: str, state: dict[str, Any],
    last_window_id: str, window_end: str, now: datetime,
) -> None:
    store.execute(
        "INSERT INTO rule_detectors (alert_id, rule, model, state, last_window_id,"
        " window_end, updated_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (alert_id) DO UPDATE SET"
        " rule = excluded.rule, model = excluded.model, state = excluded.state,"
        " last_window_id = excluded.last_window_id, window_end = excluded.window_end,"
        " updated_at = excluded.updated_at",
        (alert_id, rule, model, orjson.dumps(state).decode(), last_window_id, window_end, iso(now)),
    )
