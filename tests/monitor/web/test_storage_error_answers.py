"""What the HTTP API says of a failing store to a client without a token: ``/readyz``
(open to anyone, a probe carries no token), the dashboard and ``/metrics`` name the kind
of failure and a fixed phrase, never the store's own error text, which names the SQLite
path or the PostgreSQL host, role, database (and whatever the driver quotes). A request
with the bearer token gets the text on ``/readyz`` as ``storage_error_detail``.

The failures are real: an SQLite file another connection holds with ``BEGIN EXCLUSIVE``,
and a PostgreSQL database that refuses connections, reached with a password. The daemon meets them where its consumer loop does (its flush and keepalive).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.monitor.web.http_helpers import AUTH, Api, http, running_api

#: what must never reach a client without a token
PASSWORD = "Pw-SEKRIT-4711"


def _fail_a_flush(api: Api) -> str:
    """The daemon's own flush (a keepalive: nothing to write) against the failing store;
    the full error text it now holds."""
    assert api.daemon._flush_and_commit(force=True) is False
    err = api.daemon.storage_error
    assert err is not None
    return err


def _public_answers(api: Api) -> dict[str, bytes]:
    """``/readyz``, ``/`` and ``/metrics`` as a client without a token gets them."""
    out = {}
    for path in ("/readyz", "/", "/metrics"):
        r = http(api.port, "GET", path)
        assert r.status == (503 if path == "/readyz" else 200), (path, r.status, r.body[:300])
        out[path] = r.body
    return out


@pytest.mark.sqlite_only("SQLite's file lock and path")
def test_a_locked_sqlite_store_shows_no_path_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_api(tmp_path, monkeypatch) as api:
        db = Path(api.daemon.store.path)
        api.daemon.store.execute("PRAGMA busy_timeout = 200")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            err = _fail_a_flush(api)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert str(db) in err and "locked" in err, err
        answers = _public_answers(api)
        for path, body in answers.items():
            assert str(tmp_path).encode() not in body and b"driftwarden.db" not in body, (path, body[:2000])
        assert b"StoreBusy: the store is locked or busy" in answers["/"]
        ready = http(api.port, "GET", "/readyz").json()
        assert ready["storage_error"] == "StoreBusy: the store is locked or busy"
        assert "storage_error_detail" not in ready
        # the token holder (an operator) gets the text; a wrong token does not
        wrong = http(api.port, "GET", "/readyz", headers={"Authorization": "Bearer nope"}).json()
        assert "storage_error_detail" not in wrong
        full = http(api.port, "GET", "/readyz", headers=AUTH).json()
        assert full["storage_error"] == ready["storage_error"] and full["storage_error_detail"] == err
        # the store back: nothing of the failure is left in the answer
        assert api.daemon._flush_and_commit(force=True) is True
        back = http(api.port, "GET", "/readyz", headers=AUTH).json()
        assert back["storage_error"] is None and "storage_error_detail" not in back


@pytest.mark.postgres
def test_an_unreachable_postgresql_store_shows_no_dsn_without_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_target: Any
) -> None:
    # a password (the config takes it from the environment, never in the url; the test
    # server trusts local connections, so it is sent but not checked)
    monkeypatch.setenv("DW_T_PG_PASSWORD", PASSWORD)
    storage = f'\n[storage]\nurl = "{pg_target.config_url}"\npassword_env = "DW_T_PG_PASSWORD"\npool_size = 2\n'
    with running_api(tmp_path, monkeypatch, storage=storage) as api:
        with pg_target.refusing_connections():
            err = _fail_a_flush(api)
        assert pg_target.database in err and PASSWORD not in err, err
        answers = _public_answers(api)
        for path, body in answers.items():
            for secret in (PASSWORD, pg_target.database, "postgres", "driftwarden-pg", ".s.PGSQL"):
                assert secret.encode() not in body, (path, secret, body[:2000])
        ready = http(api.port, "GET", "/readyz").json()
        # its connections cut (AdminShutdown: StorageError) or refused (StoreUnreachable)
        assert ready["storage_error"] in ("StorageError: the store refused a read or a write",
                                          "StoreUnreachable: the store cannot be reached"), ready
        full = http(api.port, "GET", "/readyz", headers=AUTH).json()
        assert full["storage_error_detail"] == err and PASSWORD not in full["storage_error_detail"]
