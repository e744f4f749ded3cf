"""The dead-letter topic's feed (:func:`storage.dead_letters.dead_letters_after`) across the
migration that gave letters their transaction id: letters stored before it stay in the
feed, first, and a cursor written before it (``last_id`` alone) goes on from where it was."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from monitor.service.dead_letter_topic import position
from storage.db import Store
from storage.dead_letters import DeadLetter, dead_letters_after, finished_below, write_dead_letters
from storage.limits import DeadLetterCap
from storage.schema import MIGRATIONS
from tests.storage.migration_helpers import migrate_before
from tests.store_targets import StoreTarget

CAP = DeadLetterCap(per_minute=100, payloads_per_minute=100)
VERSION = 11  # the migration that added dead_letters.txid


def _letter(partition: int, offset: int) -> DeadLetter:
    return DeadLetter("predictions", partition, offset, "not_json: x", b"x", datetime.now(UTC))


def _write(store: Store, letters: list[DeadLetter]) -> None:
    with store.transaction():
        write_dead_letters(store, letters, cap=CAP)


def test_letters_stored_before_the_migration_stay_in_the_feed(
    store_target: StoreTarget, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if store_target.kind == "sqlite":
        store: Any = Store(tmp_path / "older.db", migrate=False)
        drop = None
    else:
        from storage.postgres import PostgresStore

        server = request.getfixturevalue("postgres")
        db = server.create_database(migrated=False)
        store, drop = PostgresStore(server.url(db), pool_size=2, migrate=False), (server, db)
    try:
        migrate_before(store, VERSION)
        _write(store, [_letter(0, 0), _letter(0, 1)])
        assert "txid" not in store.columns("dead_letters")
        store.migrate()
        assert store.schema_version() == MIGRATIONS[-1][0]
        old = store.query("SELECT id, txid FROM dead_letters ORDER BY id")
        assert [r["txid"] for r in old] == [0, 0]  # committed before: read first
        _write(store, [_letter(1, 0)])
        [new] = store.query("SELECT id, txid FROM dead_letters WHERE partition = 1")
        assert new["txid"] > 0 if store.shared else new["txid"] == 0  # its transaction's id
        below = finished_below(store)
        assert new["txid"] < below
        feed = [(r["txid"], r["id"]) for r in dead_letters_after(store, (0, 0), 10, below=below)]
        assert feed == [(0, old[0]["id"]), (0, old[1]["id"]), (new["txid"], new["id"])]
        # a cursor written before the migration (the first letter produced) goes on after it
        legacy = position({"last_id": old[0]["id"]})
        assert [r["id"] for r in dead_letters_after(store, legacy, 10, below=below)] == [old[1]["id"], new["id"]]
        # in batches, across the two reads (the rest of a transaction, then the later ones)
        assert [r["id"] for r in dead_letters_after(store, legacy, 1, below=below)] == [old[1]["id"]]
        assert dead_letters_after(store, (new["txid"], new["id"]), 10, below=below) == []
    finally:
        store.close()
        if drop is not None:
            drop[0].drop_database(drop[1])
