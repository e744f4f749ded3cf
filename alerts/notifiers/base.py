"""What every notifier shares: the send result and how HTTP answers map to it.

A notifier only knows how to send one stored delivery; retries, backoff, the
retry limit and bookkeeping belong to :class:`alerts.outbox.DeliveryWorker`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from storage.alerts import DeliveryRecord
from storage.redaction import quoted, redact

T = TypeVar("T")
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

    ``delivered`` (with ``retry``): the message itself reached the receiver and only a
    follow-up step is retried (Slack's ``chat.update`` of the original message after the
    resolution was posted). When the retries run out such a delivery ends ``sent``, its
    ``last_error`` saying what was not done, not ``dead``: the receiver was told.

    ``error`` is redacted when the result is made (:func:`storage.redaction.redact`): it
    is stored as the delivery's ``last_error``, logged and shown by the dashboard and the
    command line, and a receiver's answer may echo a secret (its own URL's token, the
    ``Authorization`` header).
    """

    outcome: Outcome
    error: str = ""
    retry_after: float | None = None
    status_code: int | None = None
    response: Mapping[str, Any] | None = None
    parent_response: Mapping[str, Any] | None = None
    delivered: bool = False

    def __post_init__(self) -> None:
        if self.error:
            object.__setattr__(self, "error", redact(str(self.error)))

    @classmethod
    def sent(cls, **kw: Any) -> SendResult:
        return cls("sent", **kw)

    @classmethod
    def retry(cls, error: str, retry_after: float | None = None, **kw: Any) -> SendResult:
        return cls("retry", error=error, retry_after=retry_after, **kw)

    @classmethod
    def give_up(cls, error: str, **kw: Any) -> SendResult:
        return cls("give_up", error=error, **kw)


class PayloadError(ValueError):
    """A delivery's stored payload cannot be turned into a request (a poison
    delivery): retrying cannot help, so the outbox marks it dead with this reason."""


def build(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a payload-building step; any error becomes a :class:`PayloadError`
    naming ``what`` failed (e.g. ``"the Slack blocks"``)."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - whatever the payload makes the renderer raise
        raise PayloadError(quoted(f"cannot build {what}: {type(exc).__name__}: {exc}", 500)) from exc


@runtime_checkable
class Notifier(Protocol):
    """Sends one delivery. Must not raise for receiver errors (return a result);
    :class:`PayloadError` makes the delivery dead at once, any other exception
    is treated by the worker as a retryable error. ``timeout`` (seconds, when
    present) bounds one request; the worker sends each notifier's deliveries in
    order on its own thread, so a slow receiver delays only its own."""

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


#: The longest wait a notifier may be told to keep (seconds, 7 days): ``Retry-After``
#: values and ``max_backoff`` above it are refused or cut to it, so no delay can
#: overflow date arithmetic.
MAX_RETRY_DELAY = 7 * 24 * 3600.0
#: ``Retry-After`` values longer than this many characters are garbage, not parsed.
_MAX_HEADER_CHARS = 64


def parse_retry_after(value: object, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when it says nothing usable.

    Accepts delay-seconds (also as a float, e.g. ``"1.5"``) and an HTTP date
    (relative to ``now``, the wall clock by default). Defensive against
    hostile receivers: the result is always finite and in
    ``0 <= s <= MAX_RETRY_DELAY`` (negative and past dates give 0, ``inf``,
    huge numbers and far-future dates give ``MAX_RETRY_DELAY``); ``NaN``,
    empty, over-long, or unparsable values give None. Never raises. A list
    (some clients give every value of a repeated header) uses the first item.
    The outbox clamps the result again to the notifier's ``max_backoff``.
    """
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_HEADER_CHARS:
        return None
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until_http_date(text, now)
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_DELAY)


def _seconds_until_http_date(text: str, now: datetime | None) -> float | None:
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return (when - (now or datetime.now(UTC))).total_seconds()
    except Exception:  # noqa: BLE001 - any garbage: ValueError, TypeError, OverflowError, ...
        return None


#: characters of a receiver's answer (or error code) quoted after ``HTTP <status>: ``
DETAIL_CHARS = 200


def classify_status(status: int, retry_after: str | None = None, detail: str = "") -> SendResult:
    """2xx sent; 408, 429 and 5xx retry (honouring ``Retry-After``); anything else gives up.
    ``detail`` (the receiver's answer) is quoted redacted, then cut to :data:`DETAIL_CHARS`
    (:func:`storage.redaction.quoted`: a secret it echoes is not cut in two first)."""
    detail = quoted(detail, DETAIL_CHARS)
    suffix = f": {detail}" if detail else ""
    if 200 <= status < 300:
        return SendResult.sent(status_code=status)
    if status in (408, 429) or 500 <= status < 600:
        return SendResult.retry(
            f"HTTP {status}{suffix}", parse_retry_after(retry_after), status_code=status
        )
    return SendResult.give_up(f"HTTP {status}{suffix}", status_code=status)
