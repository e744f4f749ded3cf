"""The notifiers' one way to make an HTTP request: bounded in time and in what it reads.

A receiver (a webhook endpoint, Slack or whatever ``base_url`` points at) must not hold
a notifier's lane or the daemon's memory: each request is bounded by ``timeout``
seconds *as a whole*, not only per read (httpx's own timeouts apply to each
connect/read/write, so an answer trickled one byte at a time could last forever), and
at most ``max_bytes`` of an answer are read (a receiver streaming without end is not
awaited).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx


class NoAnswer(OSError):
    """No complete answer: the connection failed or was refused, a read timed out, or
    the whole request outlasted its deadline (the message says which)."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: httpx.Headers
    #: the start of the body, at most the request's ``max_bytes``
    body: bytes
    #: False when the body was longer than ``max_bytes`` (the rest was not read)
    complete: bool
    #: the charset its ``Content-Type`` names (None: none named)
    charset: str | None = None

    def text(self) -> str:
        """The body as text (its charset, else UTF-8; undecodable bytes replaced)."""
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except (LookupError, UnicodeError, ValueError):  # unknown, or a codec that refuses
            # errors="replace" (charset=undefined, idna, punycode): read as UTF-8
            return self.body.decode("utf-8", errors="replace")


def client(timeout: float) -> httpx.Client:
    """A client for bounded requests: no redirects followed, no keep-alive (each request
    opens its own connection, which its deadline can cut)."""
    return httpx.Client(
        timeout=timeout, follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
    )


class Deadline:
    """Cuts one request's connection when ``seconds`` have passed (found through httpx's
    ``trace`` extension), so a blocked read returns."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shutdown(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def request(
    http: httpx.Client, method: str, url: str, *, content: bytes | None, headers: Mapping[str, str],
    timeout: float, max_bytes: int,
) -> Answer:
    """Make one request within ``timeout`` seconds in all; read at most ``max_bytes`` of
    the answer (asked for uncompressed: what is read is what is counted). Raises
    :class:`NoAnswer` when no answer came (in time)."""
    sent = {"accept-encoding": "identity", **headers}
    with Deadline(timeout) as deadline:
        try:
            with http.stream(
                method, url, content=content, headers=sent, extensions={"trace": deadline.trace}
            ) as resp:
                buf = bytearray()
                complete = True
                for chunk in resp.iter_raw():
                    buf += chunk
                    if len(buf) > max_bytes:
                        complete = False
                        break
                return Answer(resp.status_code, resp.headers, bytes(buf[:max_bytes]), complete, resp.charset_encoding)
        except httpx.HTTPError as exc:  # connect/read errors, timeouts, protocol errors
            if deadline.expired:
                raise NoAnswer(f"no complete answer within {timeout:g} s") from exc
            raise NoAnswer(f"{type(exc).__name__}: {exc}") from exc
