"""The ``references`` table: which reference data each model version is judged against."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage.db import Store
from storage.records import iso


def register_reference(
    store: Store, *, model: str, version: str, source: str, sha256: str, rows: int,
    path: str, registered_at: datetime,
) -> None:
    store.execute(
        'INSERT INTO "references" (model, version, source, sha256, rows, registered_at, path)'
        " VALUES (?,?,?,?,?,?,?) ON CONFLICT (model, version) DO UPDATE SET source = excluded.source,"
        " sha256 = excluded.sha256, rows = excluded.rows, registered_at = excluded.registered_at,"
        " path = excluded.path",
        (model, version, source, sha256, rows, iso(registered_at), path),
    )


def store_reference_file(store: Store, *, sha256: str, name: str, content: bytes, now: datetime) -> None:
    """Keep a registered reference's bytes in the store (a shared store: other instances
    read them from here); the same content twice is kept once."""
    store.execute(
        "INSERT INTO reference_files (sha256, name, content, stored_at) VALUES (?,?,?,?)"
        " ON CONFLICT (sha256) DO NOTHING",
        (sha256, name, content, iso(now)),
    )


def reference_file(store: Store, sha256: str) -> tuple[str, bytes] | None:
    """``(file name, bytes)`` of a reference kept by :func:`store_reference_file`, or None."""
    rows = store.query("SELECT name, content FROM reference_files WHERE sha256 = ?", (sha256,))
    return (rows[0]["name"], bytes(rows[0]["content"])) if rows else None


def latest_reference(store: Store, model: str) -> dict[str, Any] | None:
    """The most recently registered reference of a model (any version), or None."""
    rows = store.query(
        'SELECT * FROM "references" WHERE model = ? ORDER BY registered_at DESC, rowid DESC LIMIT 1',
        (model,),
    )
    return rows[0] if rows else None


def list_references(store: Store, model: str | None = None) -> list[dict[str, Any]]:
    if model is None:
        return store.query('SELECT * FROM "references" ORDER BY model, registered_at')
    return store.query('SELECT * FROM "references" WHERE model = ? ORDER BY registered_at', (model,))
