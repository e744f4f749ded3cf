"""Opening the store the config names: SQLite in the state directory, or a shared PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from monitor.config import Config
from monitor.service.retention import dead_letter_cap
from storage.db import DB_FILENAME, Store


def sqlite_path(config: Config) -> Path:
    return Path(config.daemon.state_dir) / DB_FILENAME


def open_store(
    config: Config, *, readonly: bool = False, application_name: str = "driftwarden", migrate: bool = True
) -> Store:
    """The daemon's store (migrated unless ``readonly``). Raises
    :class:`storage.db.StorageError` when it cannot be opened or reached."""
    s = config.storage
    if s.url is None:
        return Store(
            sqlite_path(config),
            synchronous=config.daemon.sqlite_synchronous,
            readonly=readonly,
            dead_letter_cap=dead_letter_cap(config),
            migrate=migrate,
        )
    from storage.postgres import PostgresStore  # noqa: PLC0415 - psycopg only when used

    return PostgresStore(
        s.url,
        password=config.secret("storage.password"),
        pool_size=s.pool_size,
        statement_timeout_ms=int(s.statement_timeout.total_seconds() * 1000),
        readonly=readonly,
        dead_letter_cap=dead_letter_cap(config),
        application_name=application_name,
        migrate=migrate,
    )
