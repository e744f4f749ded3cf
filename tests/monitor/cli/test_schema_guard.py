"""A store migrated by a newer driftwarden: ``run`` exits 2 (a config error, not restarted)
saying so, and ``migrate`` exits 1, before anything is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.schema import LATEST_VERSION
from tests.monitor.daemon_helpers import run_cli, write_config
from tests.store_targets import StoreTarget, open_state_store


def test_run_refuses_a_store_a_newer_version_migrated(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)
    store = open_state_store(tmp_path / "state")
    with store.transaction():
        store.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, 'later', '')",
                      (LATEST_VERSION + 1,))
    store.close()
    res = run_cli("run", "-c", str(cfg))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"schema version {LATEST_VERSION + 1}, newer than this driftwarden knows (up to {LATEST_VERSION})" \
        in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    res = run_cli("migrate", "-c", str(cfg))
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"schema version {LATEST_VERSION + 1}, newer than this driftwarden knows" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    reader = open_state_store(tmp_path / "state", readonly=True)
    assert reader.schema_version() == LATEST_VERSION + 1  # nothing was written
    assert reader.query("SELECT COUNT(*) AS n FROM windows") == [{"n": 0}]
    reader.close()


@pytest.mark.postgres
def test_check_before_start_fails_on_a_shared_store_a_newer_version_migrated(
    tmp_path: Path, pg_target: StoreTarget
) -> None:
    """``check --pre-start`` lets unreachable services pass (the daemon waits for them), not
    a store no wait will fix."""
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1, extra=pg_target.storage_toml())
    store = pg_target.open()
    with store.transaction():
        store.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, 'later', '')",
                      (LATEST_VERSION + 1,))
    res = run_cli("check", "--pre-start", "-c", str(cfg))
    assert res.returncode != 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert f"schema version {LATEST_VERSION + 1}, newer than this driftwarden knows" in out
    assert "not fatal before start" not in out.split("newer than this driftwarden knows")[1].splitlines()[0]


@pytest.mark.sqlite_only("SQLite's database lock held by another writer")
def test_run_held_out_by_another_writer_exits_1_to_be_started_again(tmp_path: Path) -> None:
    """A backup or another process holding the SQLite file past the busy timeout is not a
    config error: status 2 kept the systemd unit down (RestartPreventExitStatus=2)."""
    import sqlite3

    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)
    open_state_store(tmp_path / "state").close()
    holder = sqlite3.connect(tmp_path / "state" / "driftwarden.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        res = run_cli("run", "-c", str(cfg))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert res.returncode == 1, res.stdout + res.stderr
    assert "database is locked (held by another process for now); exiting with status 1 to be started again" \
        in res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_migrate_on_a_first_install_has_nothing_to_do_with_missing_ok(tmp_path: Path) -> None:
    """Kubernetes' init container runs migrate before the daemon ever created a database:
    exit 1 there blocked the pod for good (Init:CrashLoopBackOff)."""
    empty = tmp_path / "state"
    empty.mkdir()
    res = run_cli("migrate", "--state-dir", str(empty))
    assert res.returncode == 1 and "nothing to migrate" in res.stderr  # asked by hand: say so
    res = run_cli("migrate", "--missing-ok", "--state-dir", str(empty))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "no database yet (the daemon creates it at its first start)" in res.stdout
    assert not (empty / "driftwarden.db").exists()


@pytest.mark.sqlite_only("the SQLite state dir's lock")
def test_migrate_waits_for_the_daemon_on_its_state_dir_to_stop(tmp_path: Path) -> None:
    """A state dir a daemon holds (its lock) is not migrated under it: SQLite has no guard
    against an older version writing a file whose schema changed, and a migration that
    rewrites a table holds the daemon's writes up. It used to migrate regardless."""
    import sqlite3

    from storage.state_dir import lock_state_dir
    from tests.monitor.cli.test_oncall import _older_database

    db, top = _older_database(tmp_path / "state")
    with lock_state_dir(db.parent, exclusive=True):  # what a running daemon on a SQLite store holds
        res = run_cli("migrate", "--state-dir", str(db.parent))
        assert res.returncode == 1, res.stdout + res.stderr
        assert res.stderr.strip() == (
            f"driftwarden: migrate: {db.parent} is in use by a running daemon (it holds"
            f" {db.parent / '.driftwarden.lock'}); stop it, then migrate"
        )
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == top - 1
    conn.close()
    res = run_cli("migrate", "--state-dir", str(db.parent))  # the daemon stopped
    assert res.returncode == 0 and res.stdout.strip() == f"{db}: schema version {top - 1} -> {top}"


def test_migrate_help_says_it_upgrades_the_state_dir_given() -> None:
    # its --state-dir said "Read this state directory instead of the config's" (the read
    # commands' words) on the one command that writes it
    from typer.testing import CliRunner

    from monitor.cli.app import app

    res = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["migrate", "--help"])
    assert res.exit_code == 0
    assert "Upgrade this state directory's database instead of the config's." in res.stdout
    assert "Read this state directory" not in res.stdout
