"""The store the daemon opens from its config (no broker: the store opens at start): on
SQLite, ``daemon.sqlite_synchronous`` is the ``PRAGMA synchronous`` its connection runs
with; on PostgreSQL, ``storage.pool_size`` and ``statement_timeout`` shape its pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import write_config

#: SQLite's numbers for the levels
LEVELS = {"NORMAL": 1, "FULL": 2}


@pytest.mark.sqlite_only("PRAGMA synchronous is SQLite's")
@pytest.mark.parametrize("level", [None, "NORMAL", "FULL"])
def test_the_daemons_store_runs_with_the_configured_synchronous_level(tmp_path: Path, level: str | None) -> None:
    extra = f'sqlite_synchronous = "{level}"' if level else ""
    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, daemon_extra=extra)
    daemon = Daemon(load_config(path), http=False)
    try:
        ((got,),) = daemon.store.conn.execute("PRAGMA synchronous").fetchall()
        assert got == LEVELS[level or "FULL"]  # FULL by default: a committed window survives a power cut
    finally:
        daemon.close()


def test_the_daemons_postgresql_store_takes_pool_size_and_statement_timeout(tmp_path: Path, pg_target: Any) -> None:
    """``storage.pool_size`` and ``storage.statement_timeout`` from a TOML config: the pool
    of the daemon's store, and the statement timeout of its connections."""
    extra = f'\n[storage]\nurl = "{pg_target.config_url}"\npool_size = 3\nstatement_timeout = "1500ms"\n'
    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, extra=extra)
    daemon = Daemon(load_config(path), http=False)
    try:
        assert daemon.store.pool.max_size == 3
        assert daemon.store.query("SELECT current_setting('statement_timeout') AS t") == [{"t": "1500ms"}]
    finally:
        daemon.close()
