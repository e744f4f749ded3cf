"""The outbox worker: sends due deliveries, retries with backoff, marks the dead.

Each attempt's outcome is committed right after the HTTP call (never inside a
transaction held across it). A delivery is sent at least once: if the process
dies between a receiver's 2xx and the commit, the next run sends it again with
the same id, which receivers deduplicate by (``webhook-id`` for webhooks; Slack
messages carry it in their metadata).

Backoff after the n-th failed attempt: ``d = min(max_delay, base_delay * 2**(n-1))``,
then "equal jitter" ``d/2 + uniform(0, d/2)`` from the injected ``rng``; a
``Retry-After`` from the receiver is a lower bound. After ``max_attempts``
attempts the delivery is ``dead`` (see :func:`storage.alerts.delivery_counts`).

A resolution or reminder waits while the firing message it refers to is still
pending, so Slack can thread it under that message.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from alerts.notifiers.base import Notifier, SendResult
from storage import alerts as db
from storage.alerts import DeliveryRecord
from storage.db import Store

log = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _ceil_ms(ts: datetime) -> datetime:
    """Round up to the store's millisecond precision (never earlier than asked)."""
    extra = ts.microsecond % 1000
    return ts if extra == 0 else ts + timedelta(microseconds=1000 - extra)


@dataclass(frozen=True)
class RetryPolicy:
    """How one notifier is retried (seconds); see the module doc for the formula."""

    max_attempts: int = 10
    base_delay: float = 30.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")


class DeliveryWorker:
    """Sends what :class:`alerts.engine.AlertEngine` queued.

    ``run_once()`` attempts every due delivery once and returns how many it
    attempted; ``next_due()`` says when to call it again. The daemon runs it
    from a scheduler thread; tests call it directly with an injected clock.
    ``max_attempts``/``base_delay``/``max_delay`` are the default policy;
    ``policies`` overrides it per notifier name.
    """

    def __init__(
        self,
        store: Store,
        notifiers: Mapping[str, Notifier],
        clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
        *,
        max_attempts: int = 10,
        base_delay: float | timedelta = 30.0,
        max_delay: float | timedelta = 3600.0,
        batch: int = 100,
        policies: Mapping[str, RetryPolicy] | None = None,
    ) -> None:
        self.store = store
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.rng = rng or random.Random()
        self.default_policy = RetryPolicy(max_attempts, _seconds(base_delay), _seconds(max_delay))
        self.policies = dict(policies or {})
        self.batch = batch

    def policy(self, notifier: str) -> RetryPolicy:
        return self.policies.get(notifier, self.default_policy)

    def backoff(
        self, attempts: int, retry_after: float | None = None, notifier: str | None = None
    ) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""
        p = self.policy(notifier or "")
        d = min(p.max_delay, p.base_delay * (2 ** max(0, attempts - 1)))
        d = d / 2 + self.rng.uniform(0, d / 2)
        if retry_after is not None and math.isfinite(retry_after):
            d = max(d, retry_after)
        return d

    def next_due(self) -> datetime | None:
        return db.next_due(self.store)

    def run_once(self) -> int:
        attempted = 0
        now = self.clock()
        for d in db.due_deliveries(self.store, now, self.batch):
            now = self.clock()
            parent = db.get_delivery(self.store, d.parent_id) if d.parent_id else None
            if parent is not None and parent.status == "pending":
                # send after the message it refers to (or after it is given up)
                until = max(parent.next_attempt_at or now, now)
                with self.store.transaction():
                    db.defer_delivery(self.store, d.id, _ceil_ms(until), now)
                continue
            notifier = self.notifiers.get(d.notifier)
            if notifier is None:
                result = SendResult.give_up(f"notifier {d.notifier!r} is not configured")
            else:
                result = self._send(notifier, d, parent)
                attempted += 1
            self._record(d, parent, result)
        return attempted

    def _send(
        self, notifier: Notifier, d: DeliveryRecord, parent: DeliveryRecord | None
    ) -> SendResult:
        try:
            return notifier.send(d, parent)
        except Exception as exc:  # a notifier bug or an unexpected client error
            log.exception("notifier %s raised on delivery %s", d.notifier, d.id)
            return SendResult.retry(f"{type(exc).__name__}: {exc}")

    def _record(self, d: DeliveryRecord, parent: DeliveryRecord | None, r: SendResult) -> None:
        now = self.clock()
        attempts = d.attempts + 1
        if r.outcome == "sent":
            status, nxt, error = "sent", None, r.error or None
        elif r.outcome == "retry" and attempts < self.policy(d.notifier).max_attempts:
            delay = self.backoff(attempts, r.retry_after, d.notifier)
            status, nxt, error = "pending", _ceil_ms(now + timedelta(seconds=delay)), r.error
        else:
            status, nxt = "dead", None
            error = (
                r.error
                if r.outcome == "give_up"
                else f"gave up after {attempts} attempts: {r.error}"
            )
        with self.store.transaction():
            db.record_attempt(
                self.store,
                d.id,
                status=status,
                attempts=attempts,
                now=now,
                next_attempt_at=nxt,
                error=error,
                response=r.response,
            )
            if parent is not None and r.parent_response is not None:
                db.set_response(self.store, parent.id, r.parent_response, now)
        if status == "dead":
            log.warning("delivery %s to %s is dead: %s", d.id, d.notifier, error)
