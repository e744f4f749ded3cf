"""Durable stream state (open windows, watermarks, consumed offsets) as JSON blobs.

The pipeline writes its state in the same transaction as the windows it closed;
Kafka offsets are committed only after that transaction, so a restart resumes
from a state that matches the stored figures exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from storage.db import Store
from storage.records import iso


def save_state(store: Store, name: str, state: dict[str, Any], at: datetime | None = None) -> None:
    """Write ``state`` as the row ``name``, stamped ``at`` (default: now)."""
    store.execute(
        "INSERT INTO stream_state (name, state, updated_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
        " SET state = excluded.state, updated_at = excluded.updated_at",
        (name, orjson.dumps(state).decode(), iso(at or datetime.now(UTC))),
    )


def load_state(store: Store, name: str) -> dict[str, Any] | None:
    rows = store.query("SELECT state FROM stream_state WHERE name = ?", (name,))
    return orjson.loads(rows[0]["state"]) if rows else None
