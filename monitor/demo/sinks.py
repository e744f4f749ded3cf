"""Local HTTP stand-ins for Slack and webhook receivers.

Used by the tests *and* by ``driftwarden demo``, so they ship in the package.
Both are real ``ThreadingHTTPServer`` instances on ``127.0.0.1`` (port 0, so
the OS picks a free one) served from a daemon thread:

- :class:`SlackStandIn` answers slack-sdk's Web API calls (``chat.postMessage``,
  ``chat.update``, ``auth.test``) the way Slack does, and incoming-webhook POSTs
  (any path not under ``/api/``) with ``ok``. Point ``slack_sdk.WebClient`` at
  ``base_url=stand_in.url``, an incoming-webhook client at ``stand_in.webhook_url``.
- :class:`WebhookSink` records every request (method, path, headers, body),
  optionally verifies Standard Webhooks signatures, and can be told to fail or
  to be down; :meth:`WebhookSink.unique` is the receiver's view after
  deduplicating by ``webhook-id``.

Responses are scriptable: queue ``(status, headers)`` or
``(status, headers, body)`` tuples (or a bare status) with ``script(...)``; each
request consumes one (a status of 0 drops the connection without an answer),
and when the queue is empty the normal answer is given::

    with SlackStandIn() as slack:
        slack.script((429, {"Retry-After": "3"}), (500, {}))
        ...  # first call -> 429, second -> 500, third -> a real "ok" answer

Example (webhook receiver down for a while)::

    with WebhookSink(secret="whsec_...") as sink:
        sink.set_down(True)           # 503 to everything
        ...
        sink.set_down(False)
        assert all(r.verified for r in sink.accepted())

Slow receivers: ``hold()`` keeps every request waiting (unanswered) until
``release()``; ``wait_arrived(n)`` blocks until ``n`` requests came in (held
or not). ``set_trickle(interval)`` answers one byte every ``interval``
seconds, so no single read ever times out but the answer takes ages.
``reset()`` forgets the script, outages, holds and recorded requests.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl

Scripted = int | tuple[int, Mapping[str, str]] | tuple[int, Mapping[str, str], Any]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in saw it, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    received_at: float
    #: The parsed body: JSON, or a form-encoded body as a dict; ``None`` if neither.
    data: Any = None
    #: Signature check (WebhookSink with a secret): True/False; None when not checked.
    verified: bool | None = None
    verify_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str, default: str = "") -> str:
        """Case-insensitive header lookup."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _normalise(item: Scripted) -> tuple[int, dict[str, str], Any]:
    if isinstance(item, int):
        return item, {}, None
    if len(item) == 2:
        status, headers = item  # type: ignore[misc]
        return int(status), dict(headers), None
    status, headers, body = item  # type: ignore[misc]
    return int(status), dict(headers), body


def _parse_body(headers: Mapping[str, str], body: bytes) -> Any:
    ctype = ""
    for key, value in headers.items():
        if key.lower() == "content-type":
            ctype = value.lower()
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    if "json" in ctype or text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            return None
    if "x-www-form-urlencoded" in ctype:
        return dict(parse_qsl(text, keep_blank_values=True))
    return None


class _StandIn:
    """Shared server plumbing: start/stop, context manager, recorded requests."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._requests: list[RecordedRequest] = []
        self._script: deque[tuple[int, dict[str, str], Any]] = deque()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._down: str | None = None  # None | "status" | "reset"
        self._down_status = 503
        self._released = threading.Event()
        self._released.set()
        self._hold_for = 60.0
        self._arrived = 0
        self._trickle: float | None = None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                stand_in._handle(self)

            def do_GET(self) -> None:  # noqa: N802
                stand_in._handle(self)

            def do_PUT(self) -> None:  # noqa: N802
                stand_in._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() returns quickly
            name=type(self).__name__,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()  # held requests end
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return int(self._server.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting ---------------------------------------------------------------

    def script(self, *responses: Scripted) -> None:
        """Queue answers for the next requests, in order (then back to normal)."""
        with self._lock:
            self._script.extend(_normalise(r) for r in responses)

    def set_down(self, down: bool = True, *, how: str = "status", status: int = 503) -> None:
        """Simulate an outage: ``how="status"`` answers ``status`` (503) to
        everything; ``how="reset"`` closes the connection without answering
        (the client sees a network error)."""
        if how not in ("status", "reset"):
            raise ValueError(f"how must be 'status' or 'reset', got {how!r}")
        with self._lock:
            self._down = how if down else None
            self._down_status = status

    def hold(self, max_seconds: float = 60.0) -> None:
        """Keep requests unanswered until :meth:`release` (at most ``max_seconds``)."""
        self._hold_for = max_seconds
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def set_trickle(self, interval: float | None) -> None:
        """Write answers one byte every ``interval`` seconds (None: all at once)."""
        with self._lock:
            self._trickle = interval

    def reset(self) -> None:
        """Back to normal: no script, outage, hold or trickle; no recorded requests."""
        with self._lock:
            self._script.clear()
            self._down = None
            self._trickle = None
            self._requests.clear()
            self._arrived = 0
        self._released.set()

    def wait_arrived(self, count: int, timeout: float = 5.0) -> bool:
        """Block (real time) until ``count`` requests came in, answered or not."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._arrived < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    # -- recorded ----------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far (thread-safe copy)."""
        with self._lock:
            return list(self._requests)

    def accepted(self) -> list[RecordedRequest]:
        """Requests that were answered with 2xx."""
        return [r for r in self.requests if r.ok]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block (real time) until ``count`` requests were accepted; for the demo.

        Tests drive the outbox synchronously and never need this."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(1 for r in self._requests if r.ok) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    # -- request handling -----------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k: v for k, v in handler.headers.items()}
        with self._lock:
            self._arrived += 1
            self._lock.notify_all()
        if not self._released.is_set():
            self._released.wait(self._hold_for)
        with self._lock:
            down, down_status = self._down, self._down_status
            scripted = self._script.popleft() if (down is None and self._script) else None
        if scripted is not None and scripted[0] == 0:
            down, scripted = "reset", None  # a scripted 0: drop this one connection
        if down == "reset":
            self._record(handler, headers, body, 0, None, {})
            handler.close_connection = True
            try:
                handler.connection.shutdown(2)
            except OSError:
                pass
            return
        extra_headers: dict[str, str]
        payload: Any
        if down == "status":
            status, extra_headers, payload = down_status, {}, {"error": "unavailable"}
        elif scripted is not None:
            status, extra_headers, payload = scripted
            if payload is None:
                payload = self._default_error_body(status)
        else:
            status, extra_headers, payload = self._answer(
                handler.command, handler.path, headers, body
            )
        self._record(handler, headers, body, status, payload, extra_headers)
        with self._lock:
            trickle = self._trickle
        if trickle is not None:
            self._respond_slowly(handler, status, extra_headers, payload, trickle)
        else:
            self._respond(handler, status, extra_headers, payload)

    def _record(
        self,
        handler: BaseHTTPRequestHandler,
        headers: dict[str, str],
        body: bytes,
        status: int,
        payload: Any,
        extra_headers: Mapping[str, str],
    ) -> None:
        rec = self._make_record(handler.command, handler.path, headers, body, status)
        with self._lock:
            self._requests.append(rec)
            self._lock.notify_all()

    def _make_record(
        self, method: str, path: str, headers: dict[str, str], body: bytes, status: int
    ) -> RecordedRequest:
        return RecordedRequest(
            method=method,
            path=path,
            headers=headers,
            body=body,
            status=status,
            received_at=time.time(),
            data=_parse_body(headers, body),
        )

    @staticmethod
    def _respond(
        handler: BaseHTTPRequestHandler, status: int, headers: Mapping[str, str], payload: Any
    ) -> None:
        if isinstance(payload, bytes):
            raw, ctype = payload, "text/plain; charset=utf-8"
        elif isinstance(payload, str):
            raw, ctype = payload.encode(), "text/plain; charset=utf-8"
        else:
            raw, ctype = json.dumps(payload).encode(), "application/json; charset=utf-8"
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(raw)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(raw)

    @staticmethod
    def _respond_slowly(
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: Mapping[str, str],
        payload: Any,
        interval: float,
    ) -> None:
        raw = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
        handler.close_connection = True
        try:
            for byte in head.encode() + raw:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(interval)
        except OSError:  # the client gave up
            pass

    def _default_error_body(self, status: int) -> Any:
        return {"ok": 200 <= status < 300}

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class SlackMessage:
    """A message as the stand-in holds it (after posts and updates)."""

    channel: str
    ts: str
    text: str
    blocks: list[Any]
    thread_ts: str | None
    updates: int = 0


class SlackStandIn(_StandIn):
    """Answers slack-sdk's ``chat.postMessage``/``chat.update`` like Slack.

    ``url`` is the Web API base (``http://127.0.0.1:PORT/api/``);
    ``webhook_url`` an incoming-webhook URL on the same server. ``token``, when
    given, is checked like Slack does (``invalid_auth`` otherwise).
    Scripted errors default to Slack's bodies (``ratelimited`` for 429).
    """

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token
        self._ts = itertools.count(1)
        self._messages: dict[tuple[str, str], SlackMessage] = {}
        self._order: list[tuple[str, str]] = []

    @property
    def url(self) -> str:
        return f"{self.base}/api/"

    @property
    def webhook_url(self) -> str:
        return f"{self.base}/services/T000/B000/XXXXXXXX"

    def calls(self, method: str | None = None) -> list[RecordedRequest]:
        """Accepted Web API calls (``method`` like ``"chat.postMessage"``)."""
        out = []
        for r in self.accepted():
            name = r.extra.get("method", "")
            if method is None or name == method:
                out.append(r)
        return out

    @property
    def messages(self) -> list[SlackMessage]:
        """Messages in posting order, as last updated (threads included)."""
        with self._lock:
            return [self._messages[k] for k in self._order]

    def _make_record(
        self, method: str, path: str, headers: dict[str, str], body: bytes, status: int
    ) -> RecordedRequest:
        rec = super()._make_record(method, path, headers, body, status)
        api = (
            path.split("?", 1)[0].rsplit("/api/", 1)[-1] if "/api/" in path else "incoming-webhook"
        )
        rec.extra["method"] = api
        return rec

    def _default_error_body(self, status: int) -> Any:
        if status == 429:
            return {"ok": False, "error": "ratelimited"}
        if 200 <= status < 300:
            return {"ok": True}
        return f"{status} error"  # Slack's 5xx bodies are not JSON

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        data = _parse_body(headers, body) or {}
        if "/api/" not in path:
            # Incoming webhook: Slack answers a plain "ok".
            if not isinstance(data, dict) or not (data.get("text") or data.get("blocks")):
                return 400, {}, "no_text"
            with self._lock:
                ts = self._next_ts()
                self._store(
                    SlackMessage(
                        "incoming-webhook", ts, data.get("text", ""), data.get("blocks") or [], None
                    )
                )
            return 200, {}, "ok"
        api = path.split("?", 1)[0].rsplit("/api/", 1)[-1]
        if self.token is not None:
            auth = headers.get("Authorization") or headers.get("authorization") or ""
            if auth != f"Bearer {self.token}" and data.get("token") != self.token:
                return 200, {}, {"ok": False, "error": "invalid_auth"}
        if api == "auth.test":
            return 200, {}, {"ok": True, "team": "stand-in", "user": "driftwarden", "bot_id": "B0"}
        if not isinstance(data, dict):
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        channel = str(data.get("channel") or "")
        if not channel:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        if api == "chat.postMessage":
            if not data.get("text") and not data.get("blocks"):
                return 200, {}, {"ok": False, "error": "no_text"}
            with self._lock:
                ts = self._next_ts()
                thread = data.get("thread_ts")
                if thread is not None and (channel, str(thread)) not in self._messages:
                    return 200, {}, {"ok": False, "error": "thread_not_found"}
                msg = SlackMessage(
                    channel,
                    ts,
                    str(data.get("text") or ""),
                    self._blocks(data),
                    thread and str(thread),
                )
                self._store(msg)
            return (
                200,
                {},
                {"ok": True, "channel": channel, "ts": ts, "message": {"text": msg.text, "ts": ts}},
            )
        if api == "chat.update":
            ts = str(data.get("ts") or "")
            with self._lock:
                old = self._messages.get((channel, ts))
                if old is None:
                    return 200, {}, {"ok": False, "error": "message_not_found"}
                new = SlackMessage(
                    channel,
                    ts,
                    str(data.get("text") or old.text),
                    self._blocks(data) or old.blocks,
                    old.thread_ts,
                    old.updates + 1,
                )
                self._messages[(channel, ts)] = new
            return 200, {}, {"ok": True, "channel": channel, "ts": ts, "text": new.text}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    @staticmethod
    def _blocks(data: Mapping[str, Any]) -> list[Any]:
        blocks = data.get("blocks") or []
        if isinstance(blocks, str):  # form-encoded calls send blocks as a JSON string
            try:
                blocks = json.loads(blocks)
            except ValueError:
                blocks = []
        return list(blocks)

    def _next_ts(self) -> str:
        n = next(self._ts)
        return f"{1_700_000_000 + n}.{n:06d}"

    def _store(self, msg: SlackMessage) -> None:
        key = (msg.channel, msg.ts)
        self._messages[key] = msg
        self._order.append(key)


class WebhookSink(_StandIn):
    """A webhook receiver: records requests, verifies signatures, deduplicates.

    With ``secret`` every request is checked with ``standardwebhooks.Webhook``
    (``RecordedRequest.verified``); with ``reject_invalid=True`` a bad
    signature is answered 401. ``status`` is the normal answer (200).
    """

    def __init__(
        self, secret: str | None = None, *, status: int = 200, reject_invalid: bool = False
    ) -> None:
        super().__init__()
        self.secret = secret
        self.status = status
        self.reject_invalid = reject_invalid

    @property
    def url(self) -> str:
        return f"{self.base}/hooks"

    def _make_record(
        self, method: str, path: str, headers: dict[str, str], body: bytes, status: int
    ) -> RecordedRequest:
        rec = super()._make_record(method, path, headers, body, status)
        if self.secret is None:
            return rec
        verified, error = self._verify(headers, body)
        return RecordedRequest(
            method=rec.method,
            path=rec.path,
            headers=rec.headers,
            body=rec.body,
            status=rec.status,
            received_at=rec.received_at,
            data=rec.data,
            verified=verified,
            verify_error=error,
        )

    def _verify(self, headers: dict[str, str], body: bytes) -> tuple[bool, str]:
        from standardwebhooks import Webhook

        try:
            Webhook(self.secret or "").verify(body, headers, json_parse=False)
        except Exception as exc:  # WebhookVerificationError, bad base64, ...
            return False, f"{type(exc).__name__}: {exc}"
        return True, ""

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        if self.secret is not None and self.reject_invalid:
            ok, error = self._verify(headers, body)
            if not ok:
                return 401, {}, {"error": error}
        return self.status, {}, {"received": True}

    def unique(self) -> dict[str, RecordedRequest]:
        """Accepted requests deduplicated by ``webhook-id`` (first one wins),
        in arrival order; requests without the header are keyed by position."""
        out: dict[str, RecordedRequest] = {}
        for i, r in enumerate(self.accepted()):
            key = r.header("webhook-id") or f"#{i}"
            out.setdefault(key, r)
        return out

    def events(self) -> list[Any]:
        """Parsed bodies of :meth:`unique` requests, in arrival order."""
        return [r.data for r in self.unique().values()]
