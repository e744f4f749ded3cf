"""What every notifier shares: the send result and how HTTP answers map to it.

A notifier only knows how to send one stored delivery; retries, backoff, the
retry limit and bookkeeping belong to :class:`alerts.outbox.DeliveryWorker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol, runtime_checkable

from storage.alerts import DeliveryRecord

Outcome = Literal["sent", "retry", "give_up"]

#: Notifier kinds: ``alert`` receives firing / resolved / reminder messages;
#: ``retrain`` receives only ``retrain.requested`` (at most one per model per cooldown).
KINDS = ("alert", "retrain")


@dataclass(frozen=True)
class SendResult:
    """The answer to one attempt: sent, retry (maybe after ``retry_after`` s), or give up.

    ``response`` is stored on the delivery (e.g. Slack's channel and ``ts``, or
    partial progress a retry must not repeat); ``parent_response`` replaces the
    stored response of the delivery's parent (the firing message).
    """

    outcome: Outcome
    error: str = ""
    retry_after: float | None = None
    status_code: int | None = None
    response: Mapping[str, Any] | None = None
    parent_response: Mapping[str, Any] | None = None

    @classmethod
    def sent(cls, **kw: Any) -> SendResult:
        return cls("sent", **kw)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None, **kw: Any) -> SendResult:
        return cls("retry", error=error, retry_after=retry_after, **kw)

    @classmethod
    def give_up(cls, error: str, **kw: Any) -> SendResult:
        return cls("give_up", error=error, **kw)


@runtime_checkable
class Notifier(Protocol):
    """Sends one delivery. Must not raise for receiver errors (return a result);
    an exception is treated by the worker as a retryable error."""

    name: str
    kind: str
    cooldown: timedelta | None

    def send(
        self, delivery: DeliveryRecord, parent: DeliveryRecord | None = None
    ) -> SendResult: ...


@dataclass(frozen=True)
class NotifierSpec:
    """What the alert engine needs to know about a notifier (no I/O):
    its kind and, for retraining, the per-model cooldown."""

    kind: str = "alert"
    cooldown: timedelta | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"notifier kind must be 'alert' or 'retrain', got {self.kind!r}")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from datetime import UTC, datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def classify_status(status: int, retry_after: str | None = None, detail: str = "") -> SendResult:
    """2xx sent; 408, 429 and 5xx retry (honouring ``Retry-After``); anything else gives up."""
    suffix = f": {detail}" if detail else ""
    if 200 <= status < 300:
        return SendResult.sent(status_code=status)
    if status in (408, 429) or 500 <= status < 600:
        return SendResult.retry(
            f"HTTP {status}{suffix}", parse_retry_after(retry_after), status_code=status
        )
    return SendResult.give_up(f"HTTP {status}{suffix}", status_code=status)
