"""DNS rebinding: a web page the operator opens can make its own name resolve to 127.0.0.1
and then read a loopback-bound API, dashboard and reports (sampled production rows) as
same-origin. Its requests still carry its own name in ``Host``; a loopback-bound daemon
answers only its own names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.web.requests import host_allowed, loopback_hosts
from tests.monitor.web.http_helpers import request, running_api


def _get(port: int, path: str, host: str | None, version: str = "1.1") -> tuple[int, bytes]:
    head = f"GET {path} HTTP/{version}\r\n" + (f"Host: {host}\r\n" if host is not None else "") + "Connection: close\r\n\r\n"
    status, _, body = request(port, head.encode())
    return status, body


def test_a_loopback_daemon_answers_its_own_names_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_api(tmp_path, monkeypatch, token=False) as a:
        p = a.port
        for host in (f"127.0.0.1:{p}", f"localhost:{p}", "LOCALHOST", f"[::1]:{p}", "127.0.0.2", "dash.localhost:1"):
            assert _get(p, "/healthz", host)[0] == 200, host
        assert _get(p, "/healthz", None, version="1.0")[0] == 200  # HTTP/1.0 may send no Host
        for path in ("/", "/api/v1/models", "/metrics", "/healthz"):
            status, body = _get(p, path, f"attacker.example:{p}")
            assert status == 421, path
            error = json.loads(body)["error"]
            assert error.startswith(f"Host attacker.example:{p} is not this daemon's") and "daemon.public_url" in error
        assert _get(p, "/", '127.0.0.1.attacker.example')[0] == 421
        assert _get(p, "/", 'x"\\y')[0] == 421  # quoted back as JSON, not spliced into it


def test_the_public_url_host_is_answered_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = 'public_url = "https://drift.example.com/"'
    with running_api(tmp_path, monkeypatch, token=False, daemon_extra=extra) as a:
        assert _get(a.port, "/healthz", "drift.example.com")[0] == 200
        assert _get(a.port, "/healthz", "Drift.Example.COM:443")[0] == 200
        assert _get(a.port, "/healthz", "other.example.com")[0] == 421


def test_beyond_loopback_any_name_goes_unless_users_reach_it_on_loopback() -> None:
    assert loopback_hosts("0.0.0.0") is None and loopback_hosts("10.1.2.3") is None and loopback_hosts("::") is None
    assert loopback_hosts("0.0.0.0", "https://drift.example.com") is None  # a pod behind its service name
    # a container published on the host's 127.0.0.1 (deploy/compose): the check is on, and
    # `driftwarden healthcheck` inside it asks 127.0.0.1
    assert loopback_hosts("0.0.0.0", "http://127.0.0.1:9308") == {"localhost", "0.0.0.0", "127.0.0.1"}
    assert loopback_hosts("0.0.0.0", "http://localhost:9308") == {"localhost", "0.0.0.0"}
    assert loopback_hosts("127.0.0.1") == {"localhost", "127.0.0.1"}
    assert loopback_hosts("::1", "http://mon.internal:9308") == {"localhost", "::1", "mon.internal"}
    hosts = loopback_hosts("localhost")
    assert hosts is not None
    assert [host_allowed(v, hosts) for v in (b"localhost.", b"[::1]", b"[::1", b"::1", b"127.9.9.9:80", b"evil", b"")] == [
        True, True, True, True, True, False, False]
