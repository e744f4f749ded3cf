"""Signed JSON webhooks (Standard Webhooks), for alerts and retraining requests.

Each POST carries ``webhook-id`` (the delivery id, the same on every retry),
``webhook-timestamp`` (Unix seconds of this attempt) and, with a secret,
``webhook-signature: v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>``
where ``key`` is the base64-decoded part of the ``whsec_…`` secret. Receivers
verify with ``standardwebhooks.Webhook(secret).verify(body, headers)``.

``kind="alert"`` posts ``alert.firing`` / ``alert.resolved`` bodies
(:func:`alerts.payloads.webhook_body`); ``kind="retrain"`` posts
``retrain.requested`` (DESIGN.md), at most one per model per ``cooldown``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

import httpx
from standardwebhooks import Webhook

from alerts.notifiers.base import KINDS, SendResult, classify_status
from alerts.payloads import webhook_body
from storage.alerts import DeliveryRecord

USER_AGENT = "driftwarden-webhook/1"


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
        self._client = client or httpx.Client(timeout=timeout, follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def body(self, delivery: DeliveryRecord) -> bytes:
        """The exact bytes POSTed for ``delivery`` (the same on every attempt)."""
        data = webhook_body(delivery.kind, delivery.payload)
        return json.dumps(data, separators=(",", ":"), sort_keys=False).encode()

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
        try:
            resp = self._client.post(self.url, content=body, headers=self.headers(delivery, body))
        except httpx.HTTPError as exc:  # connect/read errors, timeouts, protocol errors
            return SendResult.retry(f"{type(exc).__name__}: {exc}")
        return classify_status(resp.status_code, resp.headers.get("retry-after"), resp.text[:200])
