"""The dead-letter table: every message that could not be used, with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Store
from storage.records import iso

#: Stored payloads are cut to this many bytes (the first 64 KiB) by default.
MAX_PAYLOAD_BYTES = 65_536


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes | None
    received_at: datetime


def write_dead_letters(
    store: Store, letters: Sequence[DeadLetter], *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> None:
    """Insert letters; a (topic, partition, offset) seen before is not stored twice."""
    store.executemany(
        'INSERT OR IGNORE INTO dead_letters (topic, partition, "offset", reason, payload, received_at)'
        " VALUES (?,?,?,?,?,?)",
        [
            (
                d.topic, d.partition, d.offset, d.reason,
                None if d.payload is None else bytes(d.payload[:max_payload_bytes]),
                iso(d.received_at),
            )
            for d in letters
        ],
    )


def dead_letter_counts(store: Store) -> dict[str, int]:
    """Count of stored dead letters per reason code (the text before the first ':')."""
    rows = store.query("SELECT reason FROM dead_letters")
    out: dict[str, int] = {}
    for r in rows:
        code = r["reason"].split(":", 1)[0]
        out[code] = out.get(code, 0) + 1
    return out


def list_dead_letters(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))


def dead_letter_total(store: Store) -> int:
    return int(store.query("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"])
