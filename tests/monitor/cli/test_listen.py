"""A listen address in use: ``check`` warns, ``run`` exits 1 with the key and the reason,
never a traceback (a service manager starts it again)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.monitor.daemon_helpers import run_cli, write_config


def test_a_port_in_use_is_named_by_check_and_run(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=port)
        reason = f"daemon.http_listen: cannot listen on 127.0.0.1:{port}: Address already in use"
        checked = run_cli("check", "--pre-start", "-c", str(cfg))
        assert f"! {reason} (in use by another process, or by this daemon already running)" in checked.stdout
        ran = run_cli("run", "-c", str(cfg))
        assert ran.returncode == 1, ran.stderr
        assert f"driftwarden: {reason}; exiting with status 1 to be started again" in ran.stderr
        assert "Traceback" not in ran.stderr
    freed = run_cli("check", "--pre-start", "-c", str(cfg))
    assert f"✓ http listen 127.0.0.1:{port} free" in freed.stdout
