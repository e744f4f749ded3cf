"""The server's life inside the daemon: it leaves the signals to the daemon and stops cleanly."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import pytest

from tests.monitor.web.http_helpers import http, running_api


def test_the_server_installs_no_signal_handler_and_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    with running_api(tmp_path, monkeypatch) as a:
        assert http(a.port, "GET", "/healthz").json() == {"status": "ok"}
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        assert [t.name for t in threading.enumerate()].count("http") == 1
        port = a.port
    # the context manager stopped it, as Daemon._shutdown does
    assert "http" not in [t.name for t in threading.enumerate()]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert {s: signal.getsignal(s) for s in handlers} == handlers


def test_a_port_in_use_fails_the_start_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.web.server import ApiServer, ListenError

    with running_api(tmp_path, monkeypatch) as a:
        second = ApiServer(a.daemon)
        second.port = a.port
        with pytest.raises(ListenError, match=f"daemon.http_listen: cannot listen on 127.0.0.1:{a.port}: Address already in use$"):
            second.start()


def test_the_cli_and_the_server_module_import_no_web_framework() -> None:
    """``--help`` and the daemon's start-up never wait for litestar/uvicorn: the server thread imports them."""
    import subprocess
    import sys

    code = ("import sys, monitor.cli.app, monitor.web.server; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'litestar', 'uvicorn', 'msgspec', 'pandas'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_answers_on_a_kept_alive_connection_are_not_held_back_by_nagle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listening socket comes from ``socket.create_server`` (proto 0), for which asyncio
    leaves Nagle's algorithm on: every answer after the first on a kept-alive connection
    (Prometheus' scrapes, a browser's static files) waited ~40 ms for the client's delayed
    ACK before its body left. The server turns it off on each connection."""
    from tests.monitor.web.http_helpers import read_reply  # noqa: PLC0415

    with running_api(tmp_path, monkeypatch) as a, socket.create_connection(("127.0.0.1", a.port), timeout=10) as s:
        for _ in range(3):  # kept alive: the same connection answers each
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_reply(s).json() == {"status": "ok"}
        ours = [c.transport.get_extra_info("socket") for c in a.server._server.server_state.connections]
        # the option itself, not a timing (Linux delays an ACK 40 ms at least: the median
        # answer was 44 ms, now ~1 ms; bench-like figures are never asserted in tests)
        assert [x.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0 for x in ours] == [True]
