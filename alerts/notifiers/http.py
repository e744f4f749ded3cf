"""The notifiers' one way to make an HTTP request: bounded in time and in what it reads.

A receiver (a webhook endpoint, Slack or whatever ``base_url`` points at) must not hold
a notifier's lane or the daemon's memory: each request is bounded by ``timeout``
seconds *as a whole*, not only per read (httpx's own timeouts apply to each
connect/read/write, so an answer trickled one byte at a time could last forever), and
at most ``max_bytes`` of an answer are read (a receiver streaming without end is not
awaited).

Host names are resolved within that time too: socket timeouts do not bound
``getaddrinfo``, so a hanging resolver held the lane (and the daemon's shutdown wait)
for as long as it hung. Each lookup runs on a daemon thread of its own and is waited for
at most the connect timeout (the request's ``timeout``); then the connection is made to
the address found, TLS still sending and verifying the host name (httpcore's
``server_hostname`` is the URL's host, not the address). A lookup that does not answer
is left running (one per host and port at a time; at most :data:`MAX_LOOKUPS` at once).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpcore
import httpx

from storage import redaction

#: host name lookups left running at once (a hung resolver's stay until it answers);
#: beyond that, a lookup fails at once rather than start another thread
MAX_LOOKUPS = 16

log = logging.getLogger(__name__)


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
        """The body as text (its charset, else UTF-8; undecodable bytes replaced), as it
        came: Slack's JSON is read from it (a secret redacted inside it could change its
        ``ts`` or break it). An error text quoting it goes through
        :func:`storage.redaction.quoted` (a receiver may echo the request: its path, its
        ``Authorization`` header)."""
        try:
            text = self.body.decode(self.charset or "utf-8", errors="replace")
        except (LookupError, UnicodeError, ValueError):  # unknown, or a codec that refuses
            # errors="replace" (charset=undefined, idna, punycode): read as UTF-8
            text = self.body.decode("utf-8", errors="replace")
        return text


class NotResolved(httpcore.ConnectError):
    """A host name was not resolved (in time); the message names the host."""


class _Lookups:
    """``getaddrinfo`` on daemon threads, each waited for at most a timeout. A lookup
    already running for the same host and port is waited for again, not repeated, so a
    hung resolver costs one thread per name, not one per attempt."""

    def __init__(self, limit: int = MAX_LOOKUPS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._running: dict[tuple[str, int], Future[list[Any]]] = {}

    def resolve(self, host: str, port: int, timeout: float | None) -> list[Any]:
        """``getaddrinfo(host, port)`` for TCP within ``timeout`` seconds (None: no limit).
        Raises :class:`NotResolved` when it failed, did not answer in time, or
        :attr:`limit` lookups are already left running."""
        key = (host, port)
        with self._lock:
            fut = self._running.get(key)
            if fut is None:
                if len(self._running) >= self.limit:
                    raise NotResolved(
                        f"host name {host!r} not resolved: {len(self._running)} host name lookups"
                        " are still unanswered (is the resolver hanging?)"
                    )
                fut = self._running[key] = Future()
                threading.Thread(
                    target=self._run, args=(key, fut), name=f"resolve:{host}", daemon=True
                ).start()
        if not wait_futures([fut], timeout).done:
            raise NotResolved(f"host name {host!r} not resolved within {timeout:g} s")
        try:
            return fut.result()
        except OSError as exc:
            raise NotResolved(f"host name {host!r} not resolved: {exc}") from exc

    def _run(self, key: tuple[str, int], fut: Future[list[Any]]) -> None:
        try:
            result: list[Any] | None = socket.getaddrinfo(key[0], key[1], 0, socket.SOCK_STREAM)
            error: BaseException | None = None
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
            result, error = None, exc
        with self._lock:
            self._running.pop(key, None)
        if error is None:
            fut.set_result(result or [])
        else:
            fut.set_exception(error)


_LOOKUPS = _Lookups()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Backend(httpcore.SyncBackend):
    """httpcore's network backend, its host name lookups bounded by the connect timeout
    (see the module doc). Addresses are tried in the resolver's order, within what is
    left of that timeout."""

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if _is_ip(host):
            return super().connect_tcp(host, port, timeout, local_address, socket_options)
        start = time.monotonic()
        infos = _LOOKUPS.resolve(host, port, timeout)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not addresses:
            raise NotResolved(f"host name {host!r} not resolved: no address")
        error: Exception | None = None
        for address in addresses:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            if left is not None and left <= 0:
                raise httpcore.ConnectTimeout(f"{host!r} not connected within {timeout:g} s")
            try:
                return super().connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


_BACKEND = _Backend()


def client(timeout: float) -> httpx.Client:
    """A client for bounded requests: no redirects followed, no keep-alive (each request
    opens its own connection, which its deadline can cut), host names resolved within
    ``timeout`` (proxies from the environment included)."""
    made = httpx.Client(
        timeout=timeout, follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
    )
    for transport in [made._transport, *made._mounts.values()]:
        if transport is None:  # a NO_PROXY pattern: the default transport
            continue
        pool = getattr(transport, "_pool", None)
        if not hasattr(pool, "_network_backend"):  # httpx/httpcore changed inside
            # degrade, not refuse: a notifier without the lookup bound still delivers
            # (what every release before the bound did); the operator is told once
            _unbounded_lookups_warning()
            continue
        pool._network_backend = _BACKEND
    return made


@functools.cache
def _unbounded_lookups_warning() -> None:
    """Say once that this httpx/httpcore cannot take the bounded resolver."""
    log.warning(
        "host name lookups of notifiers are not bounded by their timeout: httpx %s / httpcore %s"
        " do not take a network backend where httpx 0.28 / httpcore 1.0 did",
        httpx.__version__, httpcore.__version__,
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
    :class:`NoAnswer` when no answer came (in time); a failed connection names the
    receiver as :func:`storage.redaction.shown_url` shows it (``https://hooks.slack.com/…``).

    The request's secrets are registered first (:func:`register_secrets`), so no error
    text made of its answer or its failure can carry them into a delivery's ``last_error``
    or the log."""
    register_secrets(url, headers)
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
            if isinstance(exc.__cause__, NotResolved):  # httpx made it a ConnectError
                raise NoAnswer(str(exc.__cause__)) from exc
            if deadline.expired:
                raise NoAnswer(f"no complete answer within {timeout:g} s") from exc
            raise NoAnswer(f"{type(exc).__name__}: {exc} (to {redaction.shown_url(url)})") from exc


def register_secrets(url: str, headers: Mapping[str, str]) -> None:
    """Register what a notifier's request carries that is secret with
    :mod:`storage.redaction`: the receiver URL's parts (a Slack incoming-webhook path,
    ``?token=``, ``user:password@``) and the ``Authorization`` header (Slack's bot token),
    whole and without its scheme word. Every notifier's requests come here."""
    redaction.register_url(url)
    for name, value in headers.items():
        if name.lower() in ("authorization", "proxy-authorization"):
            redaction.register([value, value.partition(" ")[2]])
