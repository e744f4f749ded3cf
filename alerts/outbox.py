"""The outbox worker: sends due deliveries, retries with backoff, marks the dead.

Each attempt's outcome is committed right after the HTTP call (never inside a
transaction held across it). A delivery is sent at least once: if the process
dies between a receiver's 2xx and the commit, the next run sends it again with
the same id, which receivers deduplicate by (``webhook-id`` for webhooks; Slack
messages carry it in their metadata).

Isolation: every notifier has its own *lane*, a thread that sends that
notifier's due deliveries one after the other, in creation order. Lanes run
concurrently, and a notifier whose lane is still busy is skipped by the next
dispatch, so a slow, hanging or failing receiver delays only its own
deliveries (each request is bounded by the notifier's ``timeout``). Within a
lane, one delivery's failure, whatever it is (an HTTP error, an exception from
the notifier's code, a payload that cannot be rendered), is recorded on that
delivery and the lane goes on with the next one.

Backoff after the n-th failed attempt: ``d = min(max_delay, base_delay * 2**(n-1))``,
then "equal jitter" ``d/2 + uniform(0, d/2)`` from the injected ``rng``; a
``Retry-After`` from the receiver is a lower bound, clamped to ``max_delay``
(the notifier's ``max_backoff``), so a receiver cannot park a delivery for
longer than the operator allowed. Every delivery ends ``sent`` or ``dead``:
after ``max_attempts`` attempts, at once on a permanent error (4xx, a payload
that cannot be built, a row that cannot be read), see
:func:`storage.alerts.delivery_counts`. A delivery whose message went out and
whose retries were only for a follow-up step (``SendResult.delivered``: Slack's
``chat.update`` of the original message) ends ``sent`` when they run out, with
its ``last_error`` saying what was not done: ``dead`` means the receiver was not told.

A resolution or reminder waits while the firing message it refers to is still
pending, so Slack can thread it under that message.

Several instances on one shared store: a lane claims each delivery just before
sending it (:func:`storage.alerts.claim_delivery`: ``FOR UPDATE SKIP LOCKED``, a
lease of :meth:`DeliveryWorker.lease` seconds), so each delivery is sent by one
instance; if that instance dies, another takes the delivery over when the lease
has passed (the receiver may then see it twice, with the same id). Order within
one notifier holds per instance, not across instances.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.notifiers.base import MAX_RETRY_DELAY, Notifier, PayloadError, SendResult
from storage import alerts as db
from storage.alerts import DeliveryRecord
from storage.db import Store
from storage.instances import names_elsewhere
from storage.text import CONTROL

log = logging.getLogger(__name__)

#: Longest error text stored in ``deliveries.last_error`` (characters).
MAX_ERROR_CHARS = 500
#: Exponents beyond this cannot change ``min(max_delay, base * 2**n)`` (and would overflow).
_MAX_EXPONENT = 60


#: A delivery scheduled (``updated_at``) further ahead of the wall clock than this was
#: scheduled before the clock was stepped back (instances of a shared store agree on the
#: time far better than this).
STEP_SLACK = timedelta(minutes=1)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _ceil_ms(ts: datetime) -> datetime:
    """Round up to the store's millisecond precision (never earlier than asked)."""
    extra = ts.microsecond % 1000
    return ts if extra == 0 else ts + timedelta(microseconds=1000 - extra)


def later(now: datetime, seconds: float) -> datetime:
    """``now + seconds`` rounded up to the millisecond, for any ``seconds``:
    NaN and negatives count as 0, more than :data:`MAX_RETRY_DELAY` as that,
    and a result past ``datetime.max`` as ``datetime.max``. Never raises."""
    s = seconds if math.isfinite(seconds) else (MAX_RETRY_DELAY if seconds > 0 else 0.0)
    s = min(max(s, 0.0), MAX_RETRY_DELAY)
    try:
        return _ceil_ms(now + timedelta(seconds=s))
    except OverflowError:
        return datetime.max.replace(microsecond=999000, tzinfo=now.tzinfo)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


@dataclass(frozen=True)
class RetryPolicy:
    """How one notifier is retried (seconds); see the module doc for the formula.

    ``max_delay`` is at most :data:`~alerts.notifiers.base.MAX_RETRY_DELAY` (7 days).
    """

    max_attempts: int = 10
    base_delay: float = 30.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not (math.isfinite(self.base_delay) and math.isfinite(self.max_delay)):
            raise ValueError("base_delay and max_delay must be finite")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")
        if self.max_delay > MAX_RETRY_DELAY:
            raise ValueError(f"max_delay must be at most {MAX_RETRY_DELAY:.0f} s (7 days)")


class _Lanes:
    """At most one running job per notifier, each on its own daemon thread
    (daemon, so a receiver that never answers cannot hold the process at exit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[str, Future[int]] = {}

    def busy(self, name: str) -> bool:
        with self._lock:
            return name in self._busy

    def running(self) -> list[Future[int]]:
        with self._lock:
            return list(self._busy.values())

    def start(self, name: str, job: Callable[[], int]) -> Future[int] | None:
        """Run ``job`` on ``name``'s lane; None if that lane is still busy."""
        fut: Future[int] = Future()
        with self._lock:
            if name in self._busy:
                return None
            self._busy[name] = fut

        def run() -> None:
            result, error = 0, None
            try:
                result = job()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                error = exc
            # idle again *before* waiters wake: their next dispatch may use this lane
            with self._lock:
                self._busy.pop(name, None)
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

        threading.Thread(target=run, name=f"outbox:{name}", daemon=True).start()
        return fut


class DeliveryWorker:
    """Sends what :class:`alerts.engine.AlertEngine` queued.

    ``dispatch()`` starts one lane per notifier with due deliveries (skipping
    notifiers whose lane is still busy) and returns at once: the daemon calls
    it every second. ``run_once()`` dispatches and waits for those lanes, and
    returns how many deliveries they attempted; tests call it with an
    injected clock. ``next_due()`` says when something is due again.
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
        owner: str | None = None,
    ) -> None:
        self.store = store
        #: this worker in ``deliveries.claimed_by``
        self.owner = owner or f"outbox:{uuid.uuid4().hex[:12]}"
        self.notifiers = dict(notifiers)
        self.clock = clock
        self.rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.default_policy = RetryPolicy(max_attempts, _seconds(base_delay), _seconds(max_delay))
        self.policies = dict(policies or {})
        self.batch = batch
        self._lanes = _Lanes()
        self._stopping = threading.Event()
        # a lane whose bookkeeping failed (storage trouble) rests until then
        self._resting: dict[str, datetime] = {}

    def policy(self, notifier: str) -> RetryPolicy:
        return self.policies.get(notifier, self.default_policy)

    def backoff(
        self, attempts: int, retry_after: float | None = None, notifier: str | None = None
    ) -> float:
        """Seconds to wait after ``attempts`` failed attempts, in ``[0, max_delay]``.

        ``retry_after`` (the receiver's wish) raises the wait, up to ``max_delay``
        (``inf`` included); NaN and values <= 0 are ignored."""
        p = self.policy(notifier or "")
        exponent = min(max(0, attempts - 1), _MAX_EXPONENT)
        d = min(p.max_delay, p.base_delay * 2.0**exponent)
        with self._rng_lock:
            d = d / 2 + self.rng.uniform(0, d / 2)
        if retry_after is not None and not math.isnan(retry_after) and retry_after > 0:
            d = max(d, min(retry_after, p.max_delay))
        return min(d, p.max_delay)

    def next_due(self) -> datetime | None:
        return db.next_due(self.store)

    def lease(self, notifier: str) -> float:
        """Seconds a claim lasts: twice the notifier's request timeout plus 30 s, so a
        live worker always records its attempt before another may take the delivery."""
        timeout = getattr(self.notifiers.get(notifier), "timeout", None)
        t = float(timeout) if isinstance(timeout, int | float) and math.isfinite(timeout) else 30.0
        return 2 * max(t, 0.0) + 30.0

    # -- dispatching ------------------------------------------------------------------

    def dispatch(self) -> dict[str, Future[int]]:
        """Start a lane for each notifier with due deliveries whose lane is idle;
        returns their futures by notifier name (each resolves to the number of
        attempts made).

        Deliveries to notifiers that are not configured are marked dead here, except, on a
        shared store, those to a notifier another live instance has (a rolling change of the
        config): they are left to it."""
        if self._stopping.is_set():
            return {}
        now = self.clock()
        exclude = set(self.notifiers)
        if self.store.shared:  # another live instance's notifiers: left to it, and out of the batch
            exclude |= names_elsewhere(self.store, now, "notifiers", other_than=self.owner)
        for d in db.due_deliveries(self.store, now, self.batch, exclude=sorted(exclude), claimable_by=self.owner):
            self._record(
                d, None, SendResult.give_up(f"notifier {d.notifier!r} is not configured"), claimed=False
            )
        started: dict[str, Future[int]] = {}
        for name in self.notifiers:
            if self._lanes.busy(name) or self._rests(name, now):
                continue
            self._reschedule_after_step_back(name, now)
            if not db.due_deliveries(self.store, now, 1, notifier=name, claimable_by=self.owner):
                continue
            fut = self._lanes.start(name, lambda name=name: self._run_lane(name))
            if fut is not None:
                started[name] = fut
        return started

    def _rests(self, name: str, now: datetime) -> bool:
        """Whether ``name``'s lane still rests at ``now`` after its bookkeeping failed. A rest
        ending further ahead than ``base_delay`` was set by a wall clock since stepped back:
        it is over (else a step back of an hour would rest the lane an hour)."""
        until = self._resting.get(name)
        return until is not None and now < until <= later(now, self.policy(name).base_delay)

    def _reschedule_after_step_back(self, name: str, now: datetime) -> None:
        """Deliveries to ``name`` scheduled more than :data:`STEP_SLACK` after ``now`` were
        scheduled by a wall clock since stepped back; they keep their wait counted from now
        (else a step back of an hour holds a new notification, or a retry, an hour more)."""
        with self.store.transaction():
            n = db.reschedule_after_step_back(self.store, name, now, STEP_SLACK)
        if n:
            log.warning(
                "outbox: %d deliveries to %s were scheduled after %s: the wall clock went back;"
                " each keeps its wait, counted from now", n, name, now.isoformat(),
            )

    def run_once(self, timeout: float | None = None) -> int:
        """Dispatch, then wait (at most ``timeout`` seconds, None = until done) for
        the lanes started; the number of attempts they made. An exception that
        escaped a lane (only ``BaseException``s such as ``SystemExit`` can) is raised here."""
        futures = list(self.dispatch().values())
        done, _ = wait_futures(futures, timeout)
        return sum(f.result() for f in futures if f in done)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no lane is sending (True) or ``timeout`` seconds passed (False)."""
        running = self._lanes.running()
        if not running:
            return True
        _, pending = wait_futures(running, timeout)
        return not pending

    def close(self, timeout: float | None = None) -> bool:
        """Let running lanes finish for at most ``timeout`` seconds, then tell them
        to stop after their current request (what is left stays pending, for the
        next start). Returns whether every lane had finished."""
        idle = self.wait_idle(timeout)
        self._stopping.set()
        return idle

    # -- one lane -------------------------------------------------------------------------

    def _run_lane(self, name: str) -> int:
        """Claim and send ``name``'s due deliveries one by one, oldest first (at most
        ``batch`` per run; a delivery met again in the same run ends it)."""
        attempted = 0
        seen: set[str] = set()
        for _ in range(self.batch):
            if self._stopping.is_set():
                break
            d: DeliveryRecord | None = None  # none claimed yet in this turn
            try:
                now = self.clock()
                d = db.claim_delivery(
                    self.store, notifier=name, now=now, owner=self.owner,
                    lease_until=later(now, self.lease(name)),
                )
                if d is None:
                    break
                if d.id in seen:  # deferred to now behind its parent: next run
                    db.release_claim(self.store, d.id, self.owner)
                    break
                seen.add(d.id)
                attempted += self._deliver(d)
            except Exception:  # noqa: BLE001 - bookkeeping failed: nothing else to record it on
                if d is None:  # the claim itself failed (the store away, a pool timeout)
                    log.exception("outbox: could not claim a delivery to %s; pausing the lane", name)
                else:
                    log.exception("outbox: could not record delivery %s to %s; pausing the lane", d.id, name)
                self._resting[name] = later(self.clock(), self.policy(name).base_delay)
                break
        return attempted

    def _deliver(self, d: DeliveryRecord) -> int:
        """One delivery: send and record it (1), or defer / give it up unsent (0)."""
        if d.payload_error:
            self._record(d, None, SendResult.give_up(d.payload_error))
            return 0
        now = self.clock()
        parent = db.get_delivery(self.store, d.parent_id) if d.parent_id else None
        # send after the message it refers to, and after every earlier message of its alert
        # group to this notifier (or after they are given up): a receiver that was away got
        # the newest first, then the older ones as their backoff ended, and its last word
        # on a firing alert was an old "resolved"
        before = parent if parent is not None and parent.status == "pending" else db.pending_before(self.store, d)
        if before is not None:
            until = max(before.next_attempt_at or now, now)
            if until <= now:
                # due, yet held by a claim (another instance sending it, or a lane that could
                # not record it): look again shortly, and let the lane go on to other groups
                until = later(now, 1.0)
            with self.store.transaction():
                db.defer_delivery(self.store, d.id, _ceil_ms(until), now)
            return 0
        result = self._send(self.notifiers[d.notifier], d, parent)
        self._record(d, parent, result)
        return 1

    def _send(
        self, notifier: Notifier, d: DeliveryRecord, parent: DeliveryRecord | None
    ) -> SendResult:
        try:
            result = notifier.send(d, parent)
        except PayloadError as exc:
            log.error("delivery %s to %s cannot be built: %s", d.id, d.notifier, exc)
            return SendResult.give_up(str(exc))
        except Exception as exc:  # a notifier bug or an unexpected client error
            log.exception("notifier %s raised on delivery %s", d.notifier, d.id)
            return SendResult.retry(f"{type(exc).__name__}: {exc}")
        if not isinstance(result, SendResult):
            return SendResult.retry(f"notifier returned {type(result).__name__}, not a SendResult")
        return result

    def _record(
        self, d: DeliveryRecord, parent: DeliveryRecord | None, r: SendResult, *, claimed: bool = True
    ) -> None:
        now = self.clock()
        attempts = d.attempts + 1
        nxt: datetime | None
        if r.outcome == "sent":
            status, nxt, error = "sent", None, r.error or None
        elif r.outcome == "retry" and attempts < self.policy(d.notifier).max_attempts:
            delay = self.backoff(attempts, _number_or_none(r.retry_after), d.notifier)
            status, nxt, error = "pending", later(now, delay), r.error
        elif r.outcome == "retry" and r.delivered:  # the receiver was told; a follow-up step was not done
            status, nxt, error = "sent", None, f"delivered; gave up after {attempts} attempts on: {r.error}"
        else:
            status, nxt = "dead", None
            error = (
                r.error
                if r.outcome == "give_up"
                else f"gave up after {attempts} attempts: {r.error}"
            )
        with self.store.transaction():
            mine = db.record_attempt(
                self.store,
                d.id,
                status=status,
                attempts=attempts,
                now=now,
                next_attempt_at=nxt,
                error=None if error is None else _cut(str(error)),
                response=r.response,
                claimed_by=self.owner if claimed else None,
            )
            if not mine:
                log.warning(
                    "delivery %s to %s: the claim ran out before the attempt was recorded;"
                    " another worker has it now (the receiver may see it twice, same id)",
                    d.id, d.notifier,
                )
                return
            if parent is not None and r.parent_response is not None:
                db.set_response(self.store, parent.id, r.parent_response, now)
        _log_outcome(d, status, attempts, nxt, error)


def _log_outcome(d: DeliveryRecord, status: str, attempts: int, nxt: datetime | None, error: str | None) -> None:
    """One line per delivery attempt's outcome: INFO when sent or retried, WARNING when dead
    or sent with an error (the message went out, a follow-up step did not)."""
    shown = "" if error is None else CONTROL.sub(" ", _cut(str(error)))  # a receiver's error text cannot forge log lines
    extra = {
        "event": "delivery", "delivery_id": d.id, "notifier": d.notifier, "kind": d.kind,
        "model": d.model, "status": status, "attempts": attempts, "error": shown or None,
        "next_attempt_at": None if nxt is None else nxt.isoformat().replace("+00:00", "Z"),
    }
    if status == "sent" and shown:  # sent, but a follow-up step failed (Slack's chat.update)
        log.warning(
            "delivery %s sent to %s (%s, attempt %d), but: %s", d.id, d.notifier, d.kind, attempts, shown,
            extra=extra,
        )
    elif status == "sent":
        log.info("delivery %s sent to %s (%s, attempt %d)", d.id, d.notifier, d.kind, attempts, extra=extra)
    elif status == "pending":
        log.info(
            "delivery %s to %s failed (%s, attempt %d), retrying at %s: %s", d.id, d.notifier, d.kind,
            attempts, extra["next_attempt_at"], shown, extra=extra,
        )
    else:
        log.warning("delivery %s to %s is dead: %s", d.id, d.notifier, shown, extra=extra)


def _number_or_none(value: Any) -> float | None:
    """A notifier's ``retry_after`` as a float (None if it is not a number or NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(f) else f
