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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from standardwebhooks import Webhook

from alerts.notifiers import http
from alerts.notifiers.base import KINDS, SendResult, build, classify_status
from alerts.payloads import webhook_body
from storage import redaction
from storage.alerts import DeliveryRecord
from storage.finite import dumps_finite

USER_AGENT = "driftwarden-webhook/1"
#: At most this much of a receiver's answer is read (bytes); the rest is not awaited.
MAX_RESPONSE_BYTES = 4096


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
            raise ValueError(f"notifier {name!r}: url must be http(s)://…, got {redaction.shown_url(url)!r}")
        self.name = name
        self.url = url
        self.kind = kind
        self.cooldown = cooldown
        self.timeout = timeout
        self._webhook = Webhook(check_secret(secret)) if secret else None
        self._headers = dict(headers or {})
        self._clock = clock or (lambda: datetime.now(UTC))
        self._client = client or http.client(timeout)

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
        try:
            answer = http.request(
                self._client, "POST", self.url, content=body, headers=headers, timeout=self.timeout,
                max_bytes=MAX_RESPONSE_BYTES,
            )
        except http.NoAnswer as exc:
            return SendResult.retry(str(exc))
        status, retry_after = answer.status, answer.headers.get("retry-after")
        return classify_status(status, retry_after, answer.text())


def _encode(kind: str, payload: Mapping[str, Any]) -> bytes:
    return dumps_finite(webhook_body(kind, payload), separators=(",", ":"), sort_keys=False).encode()
