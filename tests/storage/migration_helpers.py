"""A store brought to the schema of an older version, to test the migration after it."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.db import Store
from storage.records import iso
from storage.schema import MIGRATIONS, PostgresOnly, SqliteOnly


def migrate_before(store: Store, version: int) -> None:
    """``store`` (empty, not migrated) brought to the schema just before migration ``version``,
    each statement applied or skipped as the store's own ``migrate`` does."""
    skipped = SqliteOnly if store.shared else PostgresOnly
    with store.transaction():
        store.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)")
        for v, description, statements in MIGRATIONS:
            if v >= version:
                break
            for sql in statements:
                if not isinstance(sql, skipped):
                    store.execute(sql)
            store.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                          (v, description, iso(datetime.now(UTC))))
