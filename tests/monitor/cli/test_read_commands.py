"""Read commands (``windows``, ``alerts``, ``status``) against a real state directory:
values from the stream are shown literally, and nothing on disk changes mode."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from storage.db import Store
from storage.records import MetricRow, WindowKey, WindowRecord
from storage.windows import write_window
from tests.store_targets import StoreTarget

T = datetime(2026, 11, 23, 14, 15, tzinfo=UTC)
HOSTILE = [
    ("v1", "region=[/]"),  # closing tag with no opening one: a MarkupError in rich
    ("[bold]v2[/bold]", "[red]eu"),
    ("v3\x1b[2J\x1b[31m", "line\nbreak"),  # terminal control sequences
]


def state_with_hostile_windows(folder: Path) -> Path:
    store = Store(folder / "driftwarden.db")
    _hostile_windows(store)
    return folder


def _hostile_windows(store: Store) -> None:
    with store.transaction():
        for i, (version, segment) in enumerate(HOSTILE):
            key = WindowKey("churn", version, segment, f"2026-11-23T14:0{i}:00.000Z", f"2026-11-23T14:1{i}:00.000Z")
            write_window(store, WindowRecord(key, 100 + i, "ok", T), [MetricRow("", "drift_share", 0.5, 0.5, True)])
    store.close()


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_windows_table_shows_markup_like_values_literally(tmp_path: Path, store_target: StoreTarget) -> None:
    _hostile_windows(store_target.open())
    out = run("windows", *store_target.cli_args(tmp_path / "cli"))
    assert "region=[/]" in out
    assert "[bold]v2[/bold]" in out and "[red]eu" in out
    # control characters are shown escaped, never sent to the terminal
    assert "v3\\x1b[2J\\x1b[31m" in out and "line\\nbreak" in out
    assert "\x1b" not in out
    assert "windows, newest first" in out and "(3)" in out


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.sqlite_only("the modes and bytes of the SQLite file under --state-dir")
@pytest.mark.parametrize("command", ["windows", "alerts", "status"])
def test_read_commands_change_no_mode_and_write_nothing(tmp_path: Path, command: str) -> None:
    state = state_with_hostile_windows(tmp_path / "state")
    db = state / "driftwarden.db"
    os.chmod(state, 0o755)
    os.chmod(db, 0o644)
    before = db.read_bytes()
    run(command, "--state-dir", str(state))
    assert (mode(state), mode(db)) == (0o755, 0o644)
    assert db.read_bytes() == before
    # anything SQLite added for reading (-wal, -shm) is no more open than the database
    assert all(mode(p) & ~0o644 == 0 for p in state.iterdir())


def test_read_commands_read_the_shared_postgres_of_the_config(tmp_path: Path, pg_target) -> None:
    """With ``[storage] url`` every read command reads the shared store, whichever
    instance wrote it; and it cannot write there (read-only transactions)."""
    import json

    from storage.stream import claim_partitions

    store = pg_target.open()
    with store.transaction():
        key = WindowKey("churn", "v1", "", "2026-11-23T14:00:00.000Z", "2026-11-23T14:15:00.000Z")
        write_window(store, WindowRecord(key, 100, "ok", T), [MetricRow("", "drift_share", 0.5, 0.5, True)])
    claim_partitions(store, "predictions", [0, 1], owner="host-b:42:x", generation=7, now=T)
    (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        pg_target.storage_toml()
        + '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
    )
    rows = json.loads(run("windows", "-c", str(cfg), "--json"))["items"]
    assert [(r["model"], r["rows"], r["dataset_drift"]) for r in rows] == [("churn", 100, True)]
    out = json.loads(run("status", "-c", str(cfg), "--json"))["item"]
    assert [(p["partition"], p["owner"]) for p in out["partitions"]] == [(0, "host-b:42:x"), (1, "host-b:42:x")]
    reasons = json.loads(run("dead-letters", "-c", str(cfg), "--by-reason", "--json"))
    assert reasons["items"] == []
    assert not (tmp_path / "driftwarden-state").exists()  # no SQLite file was made
    from storage.schema import MIGRATIONS

    latest = MIGRATIONS[-1][0]
    assert run("migrate", "-c", str(cfg)).strip() == f"shared store: schema version {latest} -> {latest}"


def test_check_reaches_the_shared_postgres(tmp_path: Path, pg_target) -> None:
    """``driftwarden check`` reports the shared store: reachable and its schema, or why not."""
    from monitor.cli.check import check_storage
    from monitor.config import load_config
    from storage.db import StorageError

    (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
    model = '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(pg_target.storage_toml() + model)
    bad.write_text('[storage]\nurl = "postgresql://me@127.0.0.1:1/none?connect_timeout=1"\n' + model)
    assert "reachable (schema up to date)" in check_storage(load_config(good))
    with pytest.raises(StorageError, match="127.0.0.1:1"):
        check_storage(load_config(bad))


# notifiers and an API token whose secrets are missing where the operator reads: an
# environment variable that is not set, a file that is not there
OTHER_SECRETS = """
[notifiers.retrain]
type = "webhook"
kind = "retrain"
url = "https://retrain.example.com/hook"
secret_env = "DW_TEST_WEBHOOK_SECRET"

[notifiers.slack]
type = "slack"
channel = "#ml"
token_file = "secrets/slack-token"
"""


def _config_with_secrets(folder: Path, target: StoreTarget) -> Path:
    """A config of ``target``'s store (PostgreSQL: ``[storage] url`` with ``password_env``;
    SQLite: ``daemon.state_dir``) that also names secrets a read command does not need."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ref.csv").write_text("age,prediction\n1,0.5\n")
    daemon = '[daemon]\napi_token_env = "DW_TEST_API_TOKEN"\n'
    if target.kind == "postgres":
        store = target.storage_toml() + 'password_env = "DW_TEST_PG_PASSWORD"\n'
    else:
        daemon += f'state_dir = "{target.path.parent}"\n'  # type: ignore[attr-defined]
        store = ""
    cfg = folder / "dw.toml"
    cfg.write_text(
        daemon + store
        + '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
        + OTHER_SECRETS
    )
    return cfg


def _invoke(*args: str, **env: str | None) -> Any:
    base: dict[str, str | None] = {"COLUMNS": "200", "DRIFTWARDEN_CONFIG": None, "DW_TEST_API_TOKEN": None,
                                   "DW_TEST_WEBHOOK_SECRET": None, "DW_TEST_PG_PASSWORD": "not-checked-here"}
    return CliRunner().invoke(app, list(args), env={**base, **env})


def test_read_commands_need_only_the_secret_that_opens_the_store(tmp_path: Path, store_target: StoreTarget) -> None:
    """Reading the store needs its password (PostgreSQL), not the notifiers' or the API's
    secrets; ``run`` and ``check`` still refuse a config whose secrets are missing."""
    import json

    _hostile_windows(store_target.open())
    cfg = _config_with_secrets(tmp_path / "cli", store_target)
    kinds = {("windows",): "windows", ("alerts",): "alerts", ("dead-letters",): "dead_letters",
             ("deliveries",): "deliveries", ("silence", "list"): "silences", ("status",): "status"}
    for args, kind in kinds.items():
        res = _invoke(*args, "-c", str(cfg), "--json")
        assert res.exit_code == 0, (args, res.output)
        assert json.loads(res.stdout)["kind"] == kind
    rows = json.loads(_invoke("windows", "-c", str(cfg), "--json").stdout)["items"]
    assert sorted(r["rows"] for r in rows) == [100, 101, 102]
    missing = (
        f"driftwarden: invalid config {cfg}:\n"
        '  daemon.api_token_env: environment variable "DW_TEST_API_TOKEN" is not set\n'
        '  notifiers.retrain.secret_env: environment variable "DW_TEST_WEBHOOK_SECRET" is not set\n'
        '  notifiers.slack.token_file: expected a readable file, got "secrets/slack-token" (No such file or directory)\n'
    )
    for command in ("run", "check"):
        res = _invoke(command, "-c", str(cfg))
        assert (res.exit_code, res.stderr) == (2, missing), command
    if store_target.kind == "postgres":  # the store's own password stays required
        res = _invoke("status", "-c", str(cfg), DW_TEST_PG_PASSWORD=None)
        assert (res.exit_code, res.stderr) == (2, (
            f"driftwarden: invalid config {cfg}:\n"
            '  storage.password_env: environment variable "DW_TEST_PG_PASSWORD" is not set\n'
        ))


def test_an_older_shared_store_is_refused_with_a_database_backup_hint(tmp_path: Path, pg_target: Any) -> None:
    """On PostgreSQL the advice before migrating is to back up the database, not a state dir."""
    from storage.schema import MIGRATIONS

    top = MIGRATIONS[-1][0]
    cfg = _config_with_secrets(tmp_path / "cli", pg_target)
    newest = f"SELECT version, description, applied_at FROM schema_version WHERE version = {top}"
    store = pg_target.open()
    row = store.query(newest)[0]
    with store.transaction():
        store.execute("DELETE FROM schema_version WHERE version = ?", (top,))
    try:
        res = _invoke("windows", "-c", str(cfg))
        assert (res.exit_code, res.stderr) == (1, (
            f"driftwarden: the PostgreSQL store of [storage] url has schema version {top - 1}, this driftwarden"
            f" expects {top}: start the upgraded daemon once or run `driftwarden migrate` (back up the"
            " database first, e.g. with pg_dump)\n"
        ))
    finally:  # the database goes back to the pool of the test server: as it was
        with store.transaction():
            store.execute("INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                          (row["version"], row["description"], row["applied_at"]))
        store.close()


def test_state_dir_beside_a_shared_store_config_says_how_to_read_the_shared_store(tmp_path: Path) -> None:
    """``--state-dir`` wins over the config by design; when the config names a shared
    PostgreSQL, a state dir without a database says that ``-c`` alone reads it."""
    empty = tmp_path / "state"
    empty.mkdir()
    (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
    shared, local = tmp_path / "shared.toml", tmp_path / "local.toml"
    model = '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
    shared.write_text('[storage]\nurl = "postgresql://driftwarden@db.example/driftwarden"\n' + model)
    local.write_text(model)
    missing = (
        f"driftwarden: no database at {empty}/driftwarden.db: the daemon has not run with this state dir yet,"
        " or --state-dir points elsewhere (give the folder that holds driftwarden.db)"
    )
    res = _invoke("windows", "--state-dir", str(empty), "-c", str(shared))
    assert (res.exit_code, res.stderr) == (1, missing + (
        f"; {shared} names a shared PostgreSQL store ([storage] url): leave out --state-dir to read it\n"
    ))
    for args in (("-c", str(local)), ()):  # no shared store named: no hint
        res = _invoke("windows", "--state-dir", str(empty), *args)
        assert (res.exit_code, res.stderr) == (1, missing + "\n")
