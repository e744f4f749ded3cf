"""A receiver on 127.0.0.1 that answers every POST with one status and a page echoing the
request, as many do: a framework's 404 (``Cannot POST /path?query``), a debugging proxy
quoting the ``Authorization`` header. What a notifier's error text could quote of its own
request, and so of its secrets."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self


class EchoReceiver:
    """Answers ``status`` with ``Cannot POST <path>?<query> (authorization: <header>)``."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.paths.append(self.path)
                body = f"Cannot POST {self.path} (authorization: {self.headers.get('authorization')})".encode()
                self.send_response(outer.status)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
