"""Paths that cannot be used (a file where a folder should be, a damaged database or
Parquet file, a missing output folder): each command names the path and exits, never
with a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.monitor.daemon_helpers import run_cli, write_config


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Path]:
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    events = tmp_path / "events.csv"
    events.write_text("ts,age,tenure_days,monthly_charges,plan,region,prediction\n"
                      "2026-11-23T12:00:00Z,40,3,70,pro,eu,0.5\n")
    bad_parquet = tmp_path / "events.parquet"
    bad_parquet.write_text("not parquet at all")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "driftwarden.db").write_bytes(b"this is not a SQLite database, just forty bytes" * 4)
    return {"cfg": cfg, "blocker": blocker, "events": events, "parquet": bad_parquet, "damaged": damaged}


def _refused(res: object, code: int, text: str) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)  # type: ignore[attr-defined]
    out = res.stdout + res.stderr  # type: ignore[attr-defined]
    assert text in out, out
    assert "Traceback" not in out, out


def test_replay_names_a_state_dir_it_cannot_create_and_a_damaged_parquet_file(setup: dict[str, Path]) -> None:
    under_a_file = setup["blocker"] / "sub"
    _refused(run_cli("replay", "-c", str(setup["cfg"]), str(setup["events"]), "--model", "churn",
                     "--state-dir", str(under_a_file)), 2, f"--state-dir {under_a_file}: cannot create it: Not a directory")
    _refused(run_cli("replay", "-c", str(setup["cfg"]), str(setup["parquet"]), "--model", "churn",
                     "--state-dir", str(setup["blocker"].parent / "replayed")), 2,
             f"{setup['parquet']}: not a readable Parquet file")


def test_a_damaged_database_is_named_by_migrate_and_the_read_commands(setup: dict[str, Path]) -> None:
    db = setup["damaged"] / "driftwarden.db"
    for args in (("migrate",), ("windows",), ("status",)):
        res = run_cli(*args, "--state-dir", str(setup["damaged"]))
        assert res.returncode in (1, 2), (args, res.stderr)
        assert f"cannot read {db}: file is not a database" in res.stderr and "Traceback" not in res.stderr, (args, res.stderr)


def test_demo_names_a_state_dir_it_cannot_create(setup: dict[str, Path]) -> None:
    _refused(run_cli("demo", "--state-dir", str(setup["blocker"] / "sub")), 2, "cannot create it: Not a directory")


@pytest.mark.sqlite_only("report --state-dir reads the state dir's SQLite file")
def test_report_refuses_an_output_folder_that_does_not_exist_before_rendering(setup: dict[str, Path], tmp_path: Path) -> None:
    from storage.db import Store

    Store(tmp_path / "store" / "driftwarden.db").close()
    out = tmp_path / "no-such-folder" / "report.html"
    _refused(run_cli("report", "--window", "churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z",
                     "--out", str(out), "--state-dir", str(tmp_path / "store")), 2,
             f"--out: no folder {out.parent} to write report.html in")


def test_check_fails_with_status_2_on_what_this_host_decides(setup: dict[str, Path], tmp_path: Path) -> None:
    """A damaged database and a state dir that is a file: `run` refuses both with status 2;
    `check` passed the first (a warning) and gave 1 for the second (its help says 2)."""
    from tests.store_targets import PG_MODE

    text = setup["cfg"].read_text()
    damaged = tmp_path / "damaged.toml"
    damaged.write_text(text.replace('state_dir = "state"', f'state_dir = "{setup["damaged"]}"'))
    blocked = tmp_path / "blocked.toml"
    blocked.write_text(text.replace('state_dir = "state"', f'state_dir = "{setup["blocker"]}"'))
    assert damaged.read_text() != text and blocked.read_text() != text
    res = run_cli("check", "--pre-start", "-c", str(blocked))
    _refused(res, 2, f"✗ state dir: daemon.state_dir: {setup['blocker']} exists and is not a folder")
    if not PG_MODE:  # the database line is the SQLite store's
        res = run_cli("check", "--pre-start", "-c", str(damaged))
        _refused(res, 2, f"✗ database: cannot read {setup['damaged'] / 'driftwarden.db'}: file is not a database")
        fresh = run_cli("check", "--pre-start", "-c", str(setup["cfg"]))
        assert f"✓ database {tmp_path / 'state' / 'driftwarden.db'} created at start" in fresh.stdout, fresh.stdout


def _as_another_user(*args: str, uid: int | None = None) -> object:
    """``driftwarden ARGS`` without the power to pass over file permissions (root's
    CAP_DAC_OVERRIDE dropped with setpriv; as uid ``uid`` when given), as an on-call
    engineer's own account meets the daemon's files."""
    import os
    import shutil
    import subprocess
    import sys

    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be enforced")
        prefix = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
        if uid is not None:
            prefix += [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    elif uid is not None:
        pytest.skip("needs root to act as another uid")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run([*prefix, sys.executable, "-m", "monitor.cli.app", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.sqlite_only("--state-dir permissions: a SQLite state dir")
def test_read_commands_name_a_state_dir_they_may_not_enter(tmp_path: Path) -> None:
    """The state dir is 0700 and belongs to the daemon's user: another user got a traceback."""
    import os

    from storage.db import Store

    if os.geteuid() != 0:
        pytest.skip("needs root to give the state dir to another user")
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=1)
    state = tmp_path / "state"
    Store.in_state_dir(state).close()
    os.chmod(tmp_path, 0o755)
    os.chmod(cfg, 0o644)
    os.chown(state, 4321, 4321)  # the daemon's user; the command runs as root without its bypass
    os.chmod(state, 0o700)
    res = _as_another_user("windows", "-c", str(cfg))
    _refused(res, 1, f"driftwarden: cannot enter {state}: it belongs to uid 4321 and this command runs as root;"
             " run it as uid 4321")


@pytest.mark.sqlite_only("a copy of a SQLite database read in place")
def test_a_copy_on_a_folder_this_user_may_not_write_is_read(tmp_path: Path) -> None:
    """A backup copy (WAL mode, no -wal or -shm) in a folder or filesystem this user cannot
    write: SQLite could not create the -shm file, so the copy 'could not be read'."""
    import os
    import sqlite3

    from storage.db import Store

    live = Store.in_state_dir(tmp_path / "state")
    live.close()
    copy = tmp_path / "copy"
    copy.mkdir()
    src = sqlite3.connect(tmp_path / "state" / "driftwarden.db")
    dst = sqlite3.connect(copy / "driftwarden.db")
    src.backup(dst)
    dst.close()
    src.close()
    assert not (copy / "driftwarden.db-shm").exists()
    os.chmod(copy / "driftwarden.db", 0o644)
    os.chmod(copy, 0o555)
    try:
        res = _as_another_user("windows", "--state-dir", str(copy))
    finally:
        os.chmod(copy, 0o755)
    assert res.returncode == 0, (res.stdout, res.stderr)  # type: ignore[attr-defined]
    assert "Traceback" not in res.stderr  # type: ignore[attr-defined]


def test_replay_names_a_folder_given_as_its_data(setup: dict[str, Path], tmp_path: Path) -> None:
    # it said "DATA: no file DIR" about a folder that exists
    folder = tmp_path / "exports"
    folder.mkdir()
    res = run_cli("replay", "-c", str(setup["cfg"]), str(folder), "--model", "churn",
                  "--state-dir", str(tmp_path / "replayed"))
    _refused(res, 2, f"driftwarden: DATA: {folder} is a folder; give one .csv, .parquet or .jsonl file in it")
    assert not (tmp_path / "replayed").exists()


@pytest.mark.sqlite_only("--state-dir names a SQLite state dir")
def test_read_commands_name_a_database_file_given_as_the_state_dir(tmp_path: Path) -> None:
    # it said "no database at S/driftwarden.db/driftwarden.db: the daemon has not run with
    # this state dir yet", which is not so
    from storage.db import Store

    db = tmp_path / "state" / "driftwarden.db"
    Store(db).close()
    for args in (("windows",), ("status",), ("alerts",)):
        res = run_cli(*args, "--state-dir", str(db))
        _refused(res, 1, f"driftwarden: --state-dir {db} is a file, not a folder: give the folder that holds"
                         f" driftwarden.db ({db.parent})")
    assert run_cli("windows", "--state-dir", str(db.parent)).returncode == 0
