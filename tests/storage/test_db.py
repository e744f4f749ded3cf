"""The SQLite store's own mechanics (storage/db.py): migrations of one file by several
processes at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest

from storage.db import StorageError, Store
from storage.schema import MIGRATIONS


def _open(path: str, barrier: Any, results: Any) -> None:
    """Open (and so migrate) ``path`` once the barrier lets every process go at once."""
    barrier.wait()
    try:
        Store(Path(path)).close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(repr(exc))


def test_processes_opening_one_new_file_at_once_all_start(tmp_path: Path) -> None:
    """A CLI command opening the state dir's database while the daemon creates it: both
    migrate the new file. The second used to die on ``UNIQUE constraint failed:
    schema_version.version`` (the daemon exited 2, "fix or move the database file"; seen
    in CI as a daemon that never started)."""
    ctx = mp.get_context("fork")
    outcomes: list[str] = []
    for trial in range(12):
        path = tmp_path / f"{trial}.db"
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(path), barrier, results)) for _ in range(4)]
        for p in procs:
            p.start()
        outcomes += [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        store = Store(path, readonly=True)
        try:
            versions = [r["version"] for r in store.query("SELECT version FROM schema_version ORDER BY version")]
        finally:
            store.close()
        assert versions == [v for v, _, _ in MIGRATIONS]  # each applied once
    assert outcomes == ["ok"] * 48


def _write(store: Store) -> None:
    with store.transaction():
        store.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (10_000, "x"))
        store.execute("DELETE FROM schema_version WHERE version = ?", (10_000,))


@pytest.mark.sqlite_only("the SQLite file unlinked under an open connection")
def test_a_database_file_deleted_while_open_refuses_writes(tmp_path: Path) -> None:
    """The state dir removed under a running daemon (``rm -rf state``, a cleaner): SQLite
    went on writing into the unlinked file, the daemon reported healthy and committed Kafka
    offsets for what only that file held; the next start found an empty store and began
    after them. Now a write says the file is gone (a storage error: nothing is committed
    past it, /readyz says so)."""
    path = tmp_path / "state" / "driftwarden.db"
    store = Store(path)
    _write(store)
    for f in path.parent.iterdir():
        f.unlink()
    path.parent.rmdir()
    with pytest.raises(StorageError, match="deleted or replaced"):
        _write(store)
    store.close()


@pytest.mark.sqlite_only("the SQLite file replaced under an open connection")
def test_a_database_file_replaced_while_open_refuses_writes(tmp_path: Path) -> None:
    """Another file put at the path (a restore copied over a running daemon's store):
    writes to the one still open would be lost with it."""
    path = tmp_path / "driftwarden.db"
    store = Store(path)
    _write(store)
    Store(tmp_path / "other.db").close()
    (tmp_path / "other.db").replace(path)
    with pytest.raises(StorageError, match="deleted or replaced"):
        _write(store)
    store.close()


@pytest.mark.sqlite_only("where the SQLite file is made")
@pytest.mark.parametrize("folder", ["run#2", "what?now", "100%41"])
def test_a_state_dir_with_uri_characters_holds_its_own_file(tmp_path: Path, folder: str) -> None:
    """The path goes into an SQLite ``file:`` URI: ``#`` and ``?`` there cut it (``run#2``
    opened or made ``run``, next to it, shared by ``run#1``), ``%41`` is read as ``A``. The
    file is the one in the folder named, written and read back, with no other file made;
    the read-only connection (the CLI, /metrics) opens that one too."""
    path = tmp_path / folder / "driftwarden.db"
    store = Store(path)
    _write(store)
    store.close()
    assert path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder]
    reader = Store(path, readonly=True)
    assert reader.schema_version() == max(v for v, _, _ in MIGRATIONS)
    reader.close()
