"""Signed JSON webhooks (Standard Webhooks), for alerts and retraining requests.

Each POST carries ``webhook-id`` (the delivery id, the same on every retry),
``webhook-timestamp`` (Unix seconds of this attempt) and, with a secret,
``webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>``
where ``key`` is the base64-decoded part of the ``whsec_…`` secret. Receivers
verify with ``standardwebhooks.Webhook(secret).verify(body, headers)``.

``kind="alert"`` posts ``alert.firing`` / ``alert.resolved`` bodies
(:func:`alerts.payloads.webhook_body`); ``kind="retrain"`` posts
``retrain.requested`` (DESIGN.md), at most one per model per ``cooldown``.
Non-finite numbers (NaN, ±inf) are sent as ``null``: JSON has no such values.

Each request is bounded by ``timeout`` (seconds) as a whole, not only per
read: a receiver that trickles its answer byte by byte has its connection cut
when the time is up (the attempt is retried). At most
:data:`MAX_RESPONSE_BYTES` of an answer are read.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import socket
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx
from standardwebhooks import Webhook

from alerts.notifiers.base import KINDS, SendResult, build, classify_status
from alerts.payloads import webhook_body
from storage.alerts import DeliveryRecord

USER_AGENT = "driftwarden-webhook/1"
#: At most this much of a receiver's answer is read (bytes); the rest is not awaited.
MAX_RESPONSE_BYTES = 4096


def _finite(value: Any) -> Any:
    """``value`` with NaN/±inf floats replaced by None, recursively (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _Deadline:
    """Cuts one request's connection when ``seconds`` have passed.

    httpx's timeouts apply to each connect/read/write, so an answer trickled
    one byte at a time could last forever; this shuts the socket down (found
    through httpx's ``trace`` extension) so the blocked read returns."""

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

    def __enter__(self) -> _Deadline:
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


def _read_capped(resp: httpx.Response, limit: int = MAX_RESPONSE_BYTES) -> str:
    """The start of an answer's body as text (at most ``limit`` bytes read)."""
    buf = bytearray()
    for chunk in resp.iter_raw():
        buf += chunk
        if len(buf) >= limit:
            break
    return bytes(buf[:limit]).decode("utf-8", errors="replace")


def check_secret(secret: str) -> str:
    """Validate a Standard Webhooks secret (``whsec_`` + base64, >= 24 bytes)."""
    raw = secret[len("whsec_") :] if secret.startswith("whsec_") else secret
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret must be 'whsec_' followed by base64") from exc
    if len(key) < 24:
        raise ValueError("webhook secret is too short: use at least 24 random bytes")
    return secret


def new_secret() -> str:
    """A fresh ``whsec_`` secret (32 random bytes)."""
    import os

    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class WebhookNotifier:
    """POSTs deliveries as signed JSON. ``clock`` stamps ``webhook-timestamp``:
    it is the real wall clock by default, because receivers reject timestamps
    more than five minutes from their own clock."""

    def __init__(
        self,
        name: str,
        url: str,
        secret: str | None = None,
        kind: str = "alert",
        cooldown: timedelta | None = None,
        timeout: float = 10.0,
        *,
        headers: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"notifier {name!r}: kind must be 'alert' or 'retrain', got {kind!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"notifier {name!r}: url must be http(s)://…, got {url!r}")
        self.name = name
        self.url = url
        self.kind = kind
        self.cooldown = cooldown
        self.timeout = timeout
        self._webhook = Webhook(check_secret(secret)) if secret else None
        self._headers = dict(headers or {})
        self._clock = clock or (lambda: datetime.now(UTC))
        # no keep-alive: each request opens its own connection, which its deadline can cut
        self._client = client or httpx.Client(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def close(self) -> None:
        self._client.close()

    def body(self, delivery: DeliveryRecord) -> bytes:
        """The exact bytes POSTed for ``delivery`` (the same on every attempt).

        Raises :class:`~alerts.notifiers.base.PayloadError` when the stored
        payload cannot be turned into a body (the delivery is then dead)."""
        return build("the webhook body", _encode, delivery.kind, delivery.payload)

    def headers(self, delivery: DeliveryRecord, body: bytes) -> dict[str, str]:
        now = self._clock().astimezone(UTC)
        headers = {
            **self._headers,
            "content-type": "application/json",
            "accept-encoding": "identity",  # the answer's start is read as is, never inflated
            "user-agent": USER_AGENT,
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self._webhook is not None:
            headers["webhook-signature"] = self._webhook.sign(delivery.id, now, body.decode())
        return headers

    def send(self, delivery: DeliveryRecord, parent: DeliveryRecord | None = None) -> SendResult:
        body = self.body(delivery)
        headers = self.headers(delivery, body)
        with _Deadline(self.timeout) as deadline:
            try:
                with self._client.stream(
                    "POST", self.url, content=body, headers=headers,
                    extensions={"trace": deadline.trace},
                ) as resp:  # fmt: skip
                    status, retry_after = resp.status_code, resp.headers.get("retry-after")
                    detail = _read_capped(resp)
            except httpx.HTTPError as exc:  # connect/read errors, timeouts, protocol errors
                if deadline.expired:
                    return SendResult.retry(f"no complete answer within {self.timeout:g} s")
                return SendResult.retry(f"{type(exc).__name__}: {exc}")
        return classify_status(status, retry_after, detail[:200])


def _encode(kind: str, payload: Mapping[str, Any]) -> bytes:
    data = _finite(webhook_body(kind, payload))
    return json.dumps(data, separators=(",", ":"), sort_keys=False, allow_nan=False).encode()
