"""A secret file every user can read is loaded with a warning, never refused: ``run``
logs it, ``check`` prints it, a read command of the shared store says it on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from monitor.cli.app import app
from tests.store_targets import state_storage_toml

MODEL = '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'


def _folder(tmp_path: Path, secret: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "ref.csv").write_text("age,prediction\n" + "1,0.5\n" * 40)
    file = tmp_path / secret
    file.write_text("s3cret-value\n")
    file.chmod(0o644)
    return file


def _warning(key: str, file: Path) -> str:
    return (f"{key}: {file} is readable by every user (mode 0644); restrict it: chmod 600 {file}"
            " (640 if the daemon reads it through its group)")


def test_check_prints_and_run_logs_a_world_readable_secret_file(tmp_path: Path) -> None:
    token = _folder(tmp_path, "api-token").resolve()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cfg = tmp_path / "dw.toml"
    cfg.write_text(
        '[daemon]\napi_token_file = "api-token"\nstate_dir = "state"\n'
        '[kafka]\nbootstrap_servers = ["127.0.0.1:1"]\n' + MODEL + state_storage_toml(tmp_path / "state")
    )
    res = CliRunner().invoke(app, ["check", "--pre-start", "-c", str(cfg)], env={"COLUMNS": "300"})
    lines = res.stdout.splitlines()
    assert res.exit_code == 0, res.output  # a warning, not a failure
    assert lines[0].startswith("✓ config: 1 model(s)")
    assert lines[1] == "! " + _warning("daemon.api_token_file", token)
    assert "s3cret-value" not in res.output
    # run: logged at start-up, in the configured log format (here the state dir then fails)
    cfg.write_text(cfg.read_text().replace('state_dir = "state"', f'state_dir = "{blocker / "state"}"'))
    out = subprocess.run([sys.executable, "-m", "monitor.cli.app", "run", "-c", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    logged = [line for line in out.stderr.splitlines() if " WARNING driftwarden.config: " in line]
    assert [line.split(" WARNING driftwarden.config: ", 1)[1] for line in logged] == [
        _warning("daemon.api_token_file", token)
    ]


def test_read_command_warns_about_a_world_readable_store_password_file(tmp_path: Path, pg_target: Any) -> None:
    password = _folder(tmp_path, "db-password").resolve()
    cfg = tmp_path / "dw.toml"
    cfg.write_text(pg_target.storage_toml() + 'password_file = "db-password"\n' + MODEL)
    res = CliRunner().invoke(app, ["status", "-c", str(cfg), "--json"],
                             env={"COLUMNS": "300", "DRIFTWARDEN_CONFIG": None})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kind"] == "status"
    assert res.stderr == "driftwarden: warning: " + _warning("storage.password_file", password) + "\n"
