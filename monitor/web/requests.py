"""Reading what an HTTP client sends, as hostile input: query values, declared lengths, bodies.

Every failure is an :class:`ApiError` with a 4xx status and a short message that
quotes nothing of the server (no path, no exception text); the app turns it into
``{"error": message}``. Only the framework-free parts live here, so they stay
importable without litestar.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

#: ``limit`` query values are clamped to this range
LIMIT_MIN, LIMIT_MAX = 1, 1000


class ApiError(Exception):
    """A request the API refuses: ``status`` (4xx) and a message for the client."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def clamp_limit(raw: str | None, default: int) -> int:
    """``?limit=``: an integer clamped to 1..1000 (0 or negative -> 1); not an integer -> 400."""
    if raw is None or raw == "":
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be an integer ({LIMIT_MIN}..{LIMIT_MAX})") from None
    return max(LIMIT_MIN, min(LIMIT_MAX, n))


def declared_length(headers: Mapping[str, str], cap: int) -> int:
    """The body length a POST declares, checked before a byte of it is read.

    No ``Content-Length`` (or a chunked body) -> 411; not a non-negative integer ->
    400 (h11 already refuses those at the protocol level); larger than ``cap`` -> 413.
    """
    if "transfer-encoding" in headers:
        raise ApiError(411, "send the body with a Content-Length; chunked bodies are not accepted")
    raw = headers.get("content-length")
    if raw is None:
        raise ApiError(411, "Content-Length required")
    raw = raw.strip()
    if not raw.isascii() or not raw.isdigit():
        raise ApiError(400, "Content-Length must be a non-negative integer")
    n = int(raw)
    if n > cap:
        raise ApiError(413, f"body larger than {cap} bytes")
    return n


async def receive_body(
    receive: Callable[[], Awaitable[Any]], length: int, timeout: float, sink: Callable[[bytes], Any]
) -> int:
    """Feed the request body to ``sink`` chunk by chunk (never all in memory).

    The whole body must arrive within ``timeout`` seconds (a trickled body is cut
    off: 408) and hold exactly ``length`` bytes. Returns the bytes received.
    """
    got = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ApiError(400, "client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                got += len(chunk)
                if got > length:
                    raise ApiError(400, "body longer than its Content-Length")
                if chunk:
                    sink(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise ApiError(408, f"request body not received within {timeout:g}s") from None
    if got != length:
        raise ApiError(400, "body shorter than its Content-Length")
    return got


class TurnsFull(Exception):
    """Every turn of a :class:`Turns` is taken or queued for: answer 503."""


class Turns:
    """Heavy work (a dashboard page, a report) done ``running`` at a time, with at most
    ``waiting`` more requests queued for a turn; beyond, :meth:`take` raises
    :class:`TurnsFull` at once. On the event loop only (not thread-safe)."""

    def __init__(self, running: int, waiting: int) -> None:
        self.slots = asyncio.Semaphore(running)
        self.most = running + waiting
        self.inside = 0

    @contextlib.asynccontextmanager
    async def take(self) -> AsyncIterator[None]:
        if self.inside >= self.most:
            raise TurnsFull
        self.inside += 1
        try:
            async with self.slots:
                yield
        finally:
            self.inside -= 1


#: bytes of request line + headers accepted (h11 refuses an incomplete head over 16 KiB;
#: a complete one that arrived in a single read is measured here)
MAX_HEAD_BYTES = 16 * 1024


async def _send_error(send: Any, status: int, message: str, *, retry_after: bool = False) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *([(b"retry-after", b"5")] if retry_after else [])]})
    await send({"type": "http.response.body", "body": body})


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name == "localhost" or name.endswith(".localhost")


def loopback_hosts(listen_host: str, public_url: str | None = None) -> frozenset[str] | None:
    """The host names a request may give in its ``Host`` header when the daemon is reached
    on loopback only: it listens on a loopback address, or ``public_url`` (where users
    reach it) is a loopback URL, as in a container published on the host's 127.0.0.1.
    None otherwise (any name goes). The names: ``localhost``, the listen address and
    ``public_url``'s host (loopback IP literals are always accepted, see
    :func:`host_allowed`), the last being the name a reverse proxy in front may forward.

    Why: a web page the operator opens can make its own host name resolve to 127.0.0.1
    (DNS rebinding) and then read the loopback API, dashboard and reports (sampled rows
    of production data) as same-origin; its requests still carry its own name in ``Host``.
    """
    host = listen_host.strip("[]").lower()
    public = (urlsplit(public_url).hostname or "").lower() if public_url else ""
    if not (_is_loopback(host) or (public and _is_loopback(public))):
        return None
    return frozenset(n for n in ("localhost", host, public) if n)


def host_allowed(value: bytes | None, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header (None: none, as HTTP/1.0 allows) names this server:
    a name in ``allowed`` or under ``.localhost``, or a loopback IP literal, with any port."""
    if value is None:
        return True
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        name = text[1:text.find("]")] if "]" in text else text[1:]
    else:
        name = text.rpartition(":")[0] if text.count(":") == 1 else text
    name = name.rstrip(".")
    return name in allowed or _is_loopback(name)


def guard_requests(
    app: Callable[..., Awaitable[None]], *, max_requests: int | None = None, max_client_requests: int | None = None,
    hosts: frozenset[str] | None = None,
) -> Callable[..., Awaitable[None]]:
    """ASGI wrapper applied before the application sees a request.

    - A request head over :data:`MAX_HEAD_BYTES` is refused (431) unread.
    - With ``hosts`` (see :func:`loopback_hosts`), a ``Host`` header naming another
      server is refused (421, unread): a page using DNS rebinding reads nothing.
    - At most ``max_requests`` requests are in progress, ``max_client_requests`` of them
      from one client address (beyond: 503, unread). A request goes on when its client
      closes the connection, which the connection caps then no longer count: a client
      that sent 200 wide ``windows?metrics=1`` requests, closing each, queued a store
      read for every one ahead of everyone else's (an alerts read waited 14 s).
    - A response sent before the request body was read says ``Connection: close``:
      a refused upload (no token, too large) is answered at once and its body is
      never read; the server closes the connection instead of draining it.
    """

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        raw_headers = scope.get("headers") or ()
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(k) + len(v) + 4 for k, v in raw_headers)
        if size > MAX_HEAD_BYTES:
            await _send_error(send, 431, f"request line and headers larger than {MAX_HEAD_BYTES} bytes")
            return
        if hosts is not None:
            host = next((v for k, v in raw_headers if k.lower() == b"host"), None)
            if not host_allowed(host, hosts):
                shown = (host or b"").decode("latin-1")[:100]
                await _send_error(send, 421, f"Host {shown} is not this daemon's: it is reached on loopback"
                                  f" only and answers {', '.join(sorted(hosts))} or a loopback IP; behind a"
                                  " proxy that forwards another name, set daemon.public_url to it")
                return
        client = scope.get("client")
        address = str(client[0]) if client else ""
        if max_requests is not None and total[0] >= max_requests:
            await _send_error(send, 503, "too many requests in progress; try again later", retry_after=True)
            return
        if max_client_requests is not None and in_progress.get(address, 0) >= max_client_requests:
            await _send_error(send, 503, "too many requests in progress from this address; try again later",
                              retry_after=True)
            return
        headers = dict(raw_headers)
        pending = [b"transfer-encoding" in headers or headers.get(b"content-length", b"0").strip() not in (b"0", b"")]

        async def receive_() -> Any:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                pending[0] = False
            return message

        async def send_(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and pending[0]:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        in_progress[address] = in_progress.get(address, 0) + 1
        total[0] += 1
        try:
            await app(scope, receive_, send_)
        finally:
            total[0] -= 1
            left = in_progress[address] - 1
            if left:
                in_progress[address] = left
            else:
                del in_progress[address]

    #: requests in progress, by client address and in all (the event loop's thread only)
    in_progress: dict[str, int] = {}
    total = [0]
    return wrapped
