"""deploy/driftwarden.service: Type=notify, hardened, and the commands it runs work as written:
the pre-start check reports local problems (its status is ignored: systemd's
RestartPreventExitStatus= reads only the main process's), and `run` refuses them, an
unusable state dir included, as a clear error with status 2 (which the unit does not
restart on), never a traceback."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from monitor.config import DEFAULT_STATE_DIR
from monitor.demo.broker import free_port
from monitor.demo.data import write_reference_csv
from tests.conftest import repo_root
from tests.store_targets import PG_MODE, state_storage_toml

UNIT = repo_root() / "deploy" / "driftwarden.service"
VENV_BIN = "/opt/driftwarden/venv/bin/driftwarden"
ETC_CONFIG = "/etc/driftwarden/config.toml"


def unit_entries() -> list[tuple[str, str, str]]:
    """(section, key, value) for every line: keys may repeat (SystemCallFilter=)."""
    out, section = [], ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def service(key: str) -> list[str]:
    return [v for s, k, v in unit_entries() if s == "Service" and k == key]


def test_notify_type_watchdog_and_reload() -> None:
    assert service("Type") == ["notify"]
    assert service("NotifyAccess") == ["main"]
    assert int(service("WatchdogSec")[0]) >= 10
    assert service("ExecReload") == ["/bin/kill -HUP $MAINPID"]
    assert service("RestartPreventExitStatus") == ["2"]
    (pre,) = service("ExecStartPre")
    # "-": systemd's RestartPreventExitStatus= reads the main process's status only, so a
    # pre-start check failing with 2 would be restarted for ever; `run` fails with 2 instead
    assert pre.startswith("-")
    assert shlex.split(pre[1:]) == [VENV_BIN, "check", "--pre-start", "-c", ETC_CONFIG]
    assert shlex.split(service("ExecStart")[0]) == [VENV_BIN, "run", "-c", ETC_CONFIG]


def test_hardening() -> None:
    for key in (
        "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
        "NoNewPrivileges", "PrivateTmp", "PrivateDevices", "RestrictNamespaces", "RestrictSUIDSGID",
    ):
        assert service(key) == ["yes"], key
    assert service("ProtectSystem") == ["strict"]
    assert service("CapabilityBoundingSet") == [""]
    assert set(service("RestrictAddressFamilies")[0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in service("SystemCallFilter")
    assert service("UMask") == ["0077"]


def test_default_state_dir_is_the_units_state_directory() -> None:
    (name,) = service("StateDirectory")
    assert Path("/var/lib") / name == DEFAULT_STATE_DIR
    assert service("WorkingDirectory") == [str(DEFAULT_STATE_DIR)]


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_unit_and_rates_it_ok(tmp_path: Path) -> None:
    unit = tmp_path / "driftwarden.service"
    # the unit as installed, with the binary where this checkout has it
    unit.write_text(UNIT.read_text().replace(VENV_BIN, sys.executable))
    verify = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    sec = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=true", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert sec.returncode == 0, sec.stderr
    last = [line for line in sec.stdout.splitlines() if "Overall exposure level" in line][0]
    score = float(last.split(":")[1].split()[0])
    assert score <= 2.0, last


# --------------------------------------------------------------------------- the commands it runs

CONFIG = """\
[daemon]
state_dir = "{state_dir}"
http_listen = "127.0.0.1:{http}"

[kafka]
bootstrap_servers = ["127.0.0.1:{kafka}"]

[[models]]
name = "churn"
reference = "reference.csv"
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]

[[rules]]
name = "drift"
metric = "drift_share"
threshold = 0.5
notifiers = ["retrain"]

[notifiers.retrain]
type = "webhook"
kind = "retrain"
url = "http://127.0.0.1:{hook}/retrain"
secret_env = "DW_UNIT_TEST_SECRET"
"""


def _config(folder: Path, state_dir: str = "state", *, default_store: bool = True) -> Path:
    """``default_store``: with the default store's ``[storage]`` (none, or in PostgreSQL mode
    of the tests the state dir's database); False: the test adds its own."""
    folder.mkdir(parents=True, exist_ok=True)
    write_reference_csv(str(folder / "reference.csv"), n=300, seed=3)
    path = folder / "config.toml"
    # nothing listens on these ports: Kafka and the webhook are unreachable
    path.write_text(CONFIG.format(state_dir=state_dir, http=free_port(), kafka=free_port(), hook=free_port())
                    + (state_storage_toml(folder / state_dir) if default_store else ""))
    return path


def _as_written(line: str, config: Path) -> list[str]:
    """A command of the unit, run from this checkout: the binary and the config path swapped
    (a leading "-", systemd's "ignore this command's status", dropped)."""
    argv = shlex.split(line.removeprefix("-"))
    assert argv[0] == VENV_BIN
    return [sys.executable, "-m", "monitor.cli.app", *[str(config) if a == ETC_CONFIG else a for a in argv[1:]]]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, env={"DW_UNIT_TEST_SECRET": "whsec_" + "dW5pdC10ZXN0LXNpZ25pbmctc2VjcmV0LTMyLWJ5dGVz", "PATH": "/usr/bin:/bin",
                                                                 **_pythonpath()},
    )


def _pythonpath() -> dict[str, str]:
    import os  # noqa: PLC0415

    return {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}


def test_pre_start_check_reports_unreachable_services_without_failing(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    res = _run(_as_written(service("ExecStartPre")[0], cfg))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "✓ config: 1 model(s), 1 rule(s), 1 notifier(s); reference(s): churn 300 rows"
    assert lines.pop(1).startswith("✓ http listen ")
    assert lines[1].startswith("✓ state dir ")
    if not PG_MODE:  # the SQLite store's own line
        assert lines.pop(2).startswith("✓ database "), lines
    if PG_MODE:  # the suite on PostgreSQL: the store's own line
        assert lines.pop(2).startswith("✓ storage postgresql://"), lines
    assert lines[2].startswith("! kafka: ") and lines[2].endswith("(not fatal before start: the daemon retries)")
    assert lines[3].startswith("! webhook retrain: ")
    # the same check without --pre-start fails on them
    plain = _run([sys.executable, "-m", "monitor.cli.app", "check", "-c", str(cfg)])
    assert plain.returncode == 1
    assert "✗ kafka: " in plain.stdout


def test_pre_start_check_fails_on_a_reference_without_the_features(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    (tmp_path / "reference.csv").write_text("age,plan\n1,pro\n")
    res = _run(_as_written(service("ExecStartPre")[0], cfg))
    assert res.returncode == 2  # like a bad config
    assert "model churn: reference " in res.stderr
    assert "lacks the configured feature column(s) 'tenure_days', 'monthly_charges', 'region'" in res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    # the unit ignores the check's status ("-"): what keeps it down is `run` failing alike
    # with 2, the status RestartPreventExitStatus= does not restart (restarting won't fix it)
    started = _run(_as_written(service("ExecStart")[0], cfg))
    assert started.returncode == 2, started.stderr
    assert "lacks the configured feature column(s) 'tenure_days', 'monthly_charges', 'region'" in started.stderr
    assert "Traceback" not in started.stdout + started.stderr


def test_unusable_state_dir_is_a_clear_error_with_status_2(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cfg = _config(tmp_path / "conf", state_dir=str(blocker / "state"))
    res = _run(_as_written(service("ExecStart")[0], cfg))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip() == (
        f"driftwarden: daemon.state_dir: cannot create {blocker / 'state'}: Not a directory;"
        f" make {blocker / 'state'} writable for {_who()}, or set daemon.state_dir"
        " (environment: DRIFTWARDEN_DAEMON__STATE_DIR) to a folder that is"
    )
    pre = _run(_as_written(service("ExecStartPre")[0], cfg))
    # the same status as `run` (and as check --help says)
    assert pre.returncode == 2 and "✗ state dir: daemon.state_dir: cannot create" in pre.stdout


@pytest.mark.postgres
def test_a_database_away_at_start_exits_1_for_a_restart_and_a_wrong_one_exits_2(tmp_path: Path, pg_target: Any) -> None:
    """The unit restarts on failure but not on status 2 (a config error): a shared
    PostgreSQL that is not up yet must not keep the daemon down for good, while a
    database that does not exist is a config error, named as such."""
    from monitor.demo.broker import free_port  # noqa: PLC0415

    away = _config(tmp_path / "away", default_store=False)
    away.write_text(away.read_text() + f'\n[storage]\nurl = "postgresql://driftwarden@127.0.0.1:{free_port()}/dw"\n')
    res = _run(_as_written(service("ExecStart")[0], away))
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("driftwarden: storage.url: cannot connect to postgresql://driftwarden@127.0.0.1:")
    assert "to be started again" in res.stderr and "state_dir" not in res.stderr

    wrong = _config(tmp_path / "wrong", default_store=False)
    missing = pg_target.storage_toml().replace(pg_target.database, "no_such_database")
    wrong.write_text(wrong.read_text() + missing)
    res = _run(_as_written(service("ExecStart")[0], wrong))
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("driftwarden: storage.url: cannot connect to ")
    assert 'database "no_such_database" does not exist' in res.stderr and "state_dir" not in res.stderr


def _who() -> str:
    import os  # noqa: PLC0415
    import pwd  # noqa: PLC0415

    return f"user {pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})"


def test_state_dir_is_created_private(tmp_path: Path) -> None:
    from storage.state_dir import prepare_state_dir  # noqa: PLC0415

    made = prepare_state_dir(tmp_path / "a" / "state")
    assert made.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    prepare_state_dir(loose)
    assert loose.stat().st_mode & 0o777 == 0o700
