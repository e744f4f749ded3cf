"""A listen address in use: ``check`` warns, ``run`` exits 1 with the key, the reason and
what to do, never a traceback (a service manager starts it again)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.monitor.daemon_helpers import run_cli, write_config


def test_a_port_in_use_is_named_by_check_and_run(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=port)
        reason = f"daemon.http_listen: cannot listen on 127.0.0.1:{port}: Address already in use"
        fix = ("in use by another process, or by this daemon already running:"
               " stop that, or set daemon.http_listen to a free host:port")
        checked = run_cli("check", "--pre-start", "-c", str(cfg))
        assert f"! {reason} ({fix})" in checked.stdout
        ran = run_cli("run", "-c", str(cfg))
        assert ran.returncode == 1, ran.stderr
        # what to do, not only what went wrong (run used to give the errno's words alone)
        assert f"driftwarden: {reason} ({fix}); exiting with status 1 to be started again" in ran.stderr
        assert "Traceback" not in ran.stderr
    freed = run_cli("check", "--pre-start", "-c", str(cfg))
    assert f"✓ http listen 127.0.0.1:{port} free" in freed.stdout


def test_an_address_that_never_binds_here_fails_check(tmp_path: Path) -> None:
    """Not an address of this host, or a name that does not resolve: `run` fails at every
    start, so `check` (even --pre-start) fails too, exit 1. It used to warn "in use by another
    process, or by this daemon already running" and exit 0; the name said "Unknown error -2"."""
    from monitor.demo.broker import free_port

    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=free_port())
    for host, reason in (("192.0.2.1", "Cannot assign requested address"),  # TEST-NET-1: no host has it
                         ("nosuchhost.invalid", "")):  # the resolver's words vary (no DNS: "Temporary failure …")
        text = cfg.read_text().replace('http_listen = "127.0.0.1:', f'http_listen = "{host}:')
        assert text != cfg.read_text()
        bad = tmp_path / f"{host}.toml"
        bad.write_text(text)
        checked = run_cli("check", "--pre-start", "-c", str(bad))
        assert checked.returncode == 1, checked.stdout + checked.stderr
        port = text.split(f'http_listen = "{host}:', 1)[1].split('"', 1)[0]
        assert f"✗ daemon.http_listen: cannot listen on {host}:{port}: {reason}" in checked.stdout, checked.stdout
        assert "in use by another process" not in checked.stdout
        assert "Unknown error" not in checked.stdout and "while attempting" not in checked.stdout


def test_a_privileged_port_this_user_may_not_take_is_a_warning(tmp_path: Path) -> None:
    """`check` run by an operator without CAP_NET_BIND_SERVICE, for a service that has it
    (systemd's AmbientCapabilities, a container's): a warning, not a failure of a config
    the service itself can run."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop the capability")
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 81:
        pytest.skip("this host lets anyone bind port 81")
    cfg = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=81)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    checked = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-m", "monitor.cli.app",
         "check", "--pre-start", "-c", str(cfg)], capture_output=True, text=True, timeout=120, env=env,
    )
    assert ("! daemon.http_listen: cannot listen on 127.0.0.1:81: Permission denied (a port below 1024 needs"
            " root or CAP_NET_BIND_SERVICE, which the service may have)") in checked.stdout, checked.stdout
    assert checked.returncode == 0, checked.stdout + checked.stderr
