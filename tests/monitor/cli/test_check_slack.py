"""``driftwarden check`` asks Slack ``auth.test`` as the notifier would send: no redirect
followed, so the bot token goes nowhere but ``base_url``. Real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from monitor.cli.check import check_slack

TOKEN = "xoxb-check-redirect-token"


@contextmanager
def server(answer: tuple[int, dict[str, str], bytes]) -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    """A receiver giving ``answer`` to every request; yields its URL and what it was sent
    (method, path, Authorization)."""
    seen: list[tuple[str, str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length") or 0))
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            status, headers, body = answer
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET  # noqa: N815

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_port}/", seen
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("status", [301, 302, 303])
def test_check_does_not_follow_a_redirect_with_the_bot_token(status: int) -> None:
    """urllib followed it (as a GET, Authorization kept) to any host, sending the token
    there, and reported ``auth.test ok`` from whatever answered."""
    with server((200, {"Content-Type": "application/json"}, b'{"ok": true, "team": "evil"}')) as (evil, stolen), \
         server((status, {"Location": f"{evil}steal"}, b"")) as (slack, asked):
        cfg = SimpleNamespace(secret=lambda key: TOKEN if key.endswith(".token") else None)
        n = SimpleNamespace(base_url=f"{slack}api/", channel="C0ML")
        with pytest.raises(ConnectionError, match=f"^auth.test refused: HTTP {status}: "):
            check_slack(cfg, "slack", n)  # type: ignore[arg-type]
    assert asked == [("POST", "/api/auth.test", f"Bearer {TOKEN}")]
    assert stolen == []
