"""The SQLite store's own mechanics (storage/db.py): migrations of one file by several
processes at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from storage.db import Store
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
