"""``kafka.dead_letter_topic``: bad messages produced to a topic after they are durable.

The feed is the ``dead_letters`` table itself, read in the order its rows' transactions
are known to have finished: a letter is produced only once it is stored, and a restart
picks up where the last acknowledged produce left off (a cursor in ``stream_state``,
advanced only over letters the broker acknowledged, never backwards). Delivery is at
least once: a crash between the broker's acknowledgement and the cursor's commit
produces a letter again with the same key, by which consumers deduplicate.

No letter is skipped, however late its transaction commits (a flush held through a
storage outage, a slow one): ids come from one sequence but transactions commit out of
order, so the cursor is not an id but ``(txid, id)``, the storing transaction's id first
(:mod:`storage.dialect`, item 13). A run reads only letters whose transaction id is below
every transaction still running (:func:`storage.dead_letters.finished_below`), so none
can commit behind the cursor later. A transaction left open anywhere on the server
(another database's too) holds the feed back until it ends, never loses a letter; when
letters have waited behind one for :data:`STALL_SECONDS` a WARNING says how many, for how
long and which transaction (once per stall, at most one per :data:`STALL_REPEAT_SECONDS`),
and an INFO when the feed moves again. On
SQLite one writer commits in id order and every letter has ``txid`` 0: the cursor is
the id. Stored transaction ids only compare on one server: after a restore into
another one (``pg_dump``/``pg_restore``; seen as another ``system_identifier``, or the
cursor at or above the server's running transactions) the next run gives every stored
letter the id 0 and starts again from the beginning, so every letter within retention
is produced again (same keys), none skipped.

Every instance runs this job; on a shared store one at a time produces, under a
**lease** kept in the cursor's row (``owner``, ``until``). A run that finds letters
to produce takes the lease in a short transaction (only if it is free, has lapsed or
is already its own), produces with no database connection held while it waits on the
broker, then in a second short transaction moves the cursor past what was
acknowledged and gives the lease back; a run that fails gives it back too. Others
skip their runs while it is held. A run that outlives its lease (the lease is
:data:`LEASE_SECONDS`, well over a run's worst case; a stalled process) may see
another instance take the lease over and produce the same letters again, with the
same keys; the late run then leaves the cursor alone (the new owner moves it) and
logs a warning. On SQLite (one instance) the same code runs; the lease is never
contested.

Each record: key ``"<topic>/<partition>/<offset>"`` of the source message; value the
stored payload (the first ``daemon.max_payload_bytes`` bytes; none if 0); headers
``driftwarden.reason``, ``driftwarden.source.topic``, ``driftwarden.source.partition``,
``driftwarden.source.offset``, ``driftwarden.received_at``. A record the producer or the
broker refuses for its size (a ``daemon.max_payload_bytes`` above the topic's
``max.message.bytes``) is produced again without its value, with a header
``driftwarden.payload_dropped`` saying why (and a WARNING): one such letter would
otherwise hold every later one back for ever. When the option is first switched on, the
letters already stored (within retention) are produced too.

Runs on the scheduler thread, never on the consumer loop: a slow or absent broker
delays the feed, never consumption, and holds none of the store's pooled connections
(which the consumer's flushes, the HTTP API and the outbox share). Bounded: at most
``batch`` letters (each at most 64 KiB by default) per run.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.config import Config
from storage.db import Store
from storage.dead_letters import (
    NO_CUT,
    Position,
    dead_letters_after,
    finished_below,
    rebase_feed,
    server_identity,
    waiting_letters,
)
from storage.records import iso, parse_iso
from storage.state import load_state, save_state

log = logging.getLogger("driftwarden.dead_letter_topic")

CURSOR = "dead_letter_topic"
#: seconds a run waits for the broker's acknowledgements
FLUSH_TIMEOUT = 30.0
#: milliseconds the producer waits for a broker at all: to bootstrap, and in each send
#: for the topic's metadata or buffer room
MAX_BLOCK_MS = 10_000
#: seconds a run's lease lasts. A run's worst case with the broker away is about 50 s
#: (bootstrap 10 s, a send 10 s, the flush 30 s) plus the store's reads (each bounded by
#: ``storage.statement_timeout``); instances compare ``until`` with their own wall
#: clocks, so this also absorbs their difference (a minute of skew would still be safe).
LEASE_SECONDS = 120.0
#: seconds stored letters may wait behind a transaction still open on the server (they
#: cannot be produced before it ends) before a WARNING says so. A flush's transaction
#: lasts well under a second; a minute is a session left open (idle in transaction) or a
#: long batch job, on any database of the PostgreSQL server.
STALL_SECONDS = 60.0
#: seconds at least between two stall WARNINGs: a stall over :data:`STALL_SECONDS`
#: sooner after the last warning is counted, and named in the next warning, not logged
STALL_REPEAT_SECONDS = 900.0


#: the header of a letter produced without its payload: the record with it was too large for
#: the topic (the broker's ``max.message.bytes``) or for the producer's ``max_request_size``
PAYLOAD_DROPPED = "driftwarden.payload_dropped"


def _too_large(exc: BaseException | None) -> bool:
    """Whether a produce failed for the record's size alone (for good: retrying the same
    record fails the same way, and would hold every later letter back for ever)."""
    from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError  # noqa: PLC0415

    return isinstance(exc, (MessageSizeTooLargeError, RecordListTooLargeError))


@dataclass
class _Stall:
    """The feed's next letter waits behind an open transaction (PostgreSQL)."""

    #: the clock (seconds) when this instance first found it waiting
    since: float
    #: the cursor then: the stall ends when the cursor moves (this or another instance
    #: produced), or when the next letter no longer waits
    at: Position
    #: "watching" (under the bound), "logged" (a WARNING went out: an INFO when it ends),
    #: "quiet" (over the bound, but too soon after the last WARNING)
    stage: str = "watching"


def position(state: dict[str, Any]) -> Position:
    """The cursor in a state: (txid, id) of the last letter produced. A state written before
    letters had a ``txid`` holds ``last_id`` alone: (0, last_id), the txid every letter stored
    then was given (and every one stored since has a larger one)."""
    return int(state.get("last_xid", 0)), int(state.get("last_id", 0))


def _moved(state: dict[str, Any], below: int, server: str | None) -> bool:
    """Whether the stored cursor belongs to another server's transaction ids: another
    ``system_identifier`` (when both are known), or a cursor at or above ``below``, which one
    server never shows (the cursor was set below an earlier cut, and the cut never goes
    down). ``below`` must be taken after ``state`` was read."""
    known = state.get("server")
    return (known is not None and server is not None and known != server) or int(state.get("last_xid", 0)) >= below


def record_of(row: dict[str, Any]) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(key, value, headers) of the record produced for one stored dead letter."""
    key = f"{row['topic']}/{row['partition']}/{row['offset']}".encode()
    headers = [
        ("driftwarden.reason", str(row["reason"]).encode()),
        ("driftwarden.source.topic", str(row["topic"]).encode()),
        ("driftwarden.source.partition", str(row["partition"]).encode()),
        ("driftwarden.source.offset", str(row["offset"]).encode()),
        ("driftwarden.received_at", str(row["received_at"]).encode()),
    ]
    payload = row["payload"]
    return key, (bytes(payload) if payload is not None else None), headers


class DeadLetterTopic:
    """Produces stored dead letters to ``kafka.dead_letter_topic``; see the module doc.

    ``owner``: this object's name in the lease (default ``host:pid:random``; unique per
    object). ``lease_seconds``: how long a run's lease lasts (:data:`LEASE_SECONDS`).
    ``stall_seconds``: how long letters wait behind an open transaction before a WARNING
    (:data:`STALL_SECONDS`); ``clock``: seconds, for those waits (monotonic).
    """

    def __init__(  # noqa: PLR0913 - the options of one job
        self,
        config: Config,
        store: Store,
        *,
        batch: int = 500,
        producer_factory: Callable[[], Any] | None = None,
        owner: str | None = None,
        lease_seconds: float = LEASE_SECONDS,
        stall_seconds: float = STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        topic = config.kafka.dead_letter_topic
        if not topic:
            raise ValueError("kafka.dead_letter_topic is not set")
        self.topic = topic
        self.config = config
        self.store = store
        self.batch = batch
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = timedelta(seconds=lease_seconds)
        self._factory = producer_factory or self._make_producer
        self._producer: Any = None
        self._failing = False
        self._lock = threading.Lock()  # the scheduler's run and the shutdown's never overlap
        self.stall_seconds = stall_seconds
        self._clock = clock
        self._stall: _Stall | None = None
        self._last_warning: float | None = None  # clock() of the last stall WARNING
        self._unlogged = 0  # stalls over the bound since then, not logged

    def _make_producer(self) -> Any:
        from monitor.ingest.kafka_client import make_producer  # noqa: PLC0415

        # acks from every in-sync replica: the cursor moves only past what is safe
        return make_producer(self.config, acks="all", max_block_ms=MAX_BLOCK_MS,
                             bootstrap_timeout_ms=MAX_BLOCK_MS, linger_ms=20)

    def cursor(self) -> Position:
        """(txid, id) of the last letter produced (acknowledged): the feed goes on after it."""
        return position(load_state(self.store, CURSOR) or {})

    def run_once(self) -> int:
        """Produce the next stored letters; returns how many the broker acknowledged.
        Never raises: a failure is logged (once per streak) and retried on the next run."""
        try:
            with self._lock:
                sent = self._run()
        except Exception as exc:  # noqa: BLE001 - the broker may be away; try again later
            if not self._failing:
                log.error("dead-letter topic %s: %s; retrying", self.topic, exc)
            self._failing = True
            self._close_producer()
            return 0
        if self._failing and sent:
            log.info("dead-letter topic %s: producing again", self.topic)
            self._failing = False
        return sent

    def _run(self) -> int:
        # a look first, outside any transaction: an idle feed takes no lease, writes nothing.
        # The state before the cut: its cursor was below a cut taken earlier, so below this one
        state = load_state(self.store, CURSOR) or {}
        below = finished_below(self.store)
        server = server_identity(self.store)
        if not _moved(state, below, server):
            # the next letter whatever its transaction: none, one to produce, or one that
            # waits (its txid not below the cut: an older transaction is still open)
            after = dead_letters_after(self.store, position(state), 1, below=NO_CUT)
            waits = bool(after) and int(after[0]["txid"]) >= below
            self._watch(position(state), below, waits=waits)
            if not after or waits:
                return 0
        claimed = self._claim(server)
        if claimed is None:
            return 0  # another instance holds the lease: its run produces these
        last, below = claimed
        try:
            # read under the lease, outside any transaction: no connection is held from
            # here until the broker has answered
            rows = dead_letters_after(self.store, last, self.batch, below=below)
            sent, acked, error = self._produce(rows, last)
        except BaseException:
            try:
                self._finish(last)  # the lease back at once: another instance may do better
            except Exception:  # noqa: BLE001 - the store may be away too: the lease lapses
                pass
            raise
        self._finish(acked)
        if error is not None:
            raise error
        return sent

    def _watch(self, at: Position, below: int, *, waits: bool) -> None:
        """Follow a stall: the next letter after the cursor ``at`` waits behind the cut
        ``below`` (``waits``). A WARNING once it has lasted :attr:`stall_seconds` (at most
        one per :data:`STALL_REPEAT_SECONDS`), an INFO when a stall warned about ends."""
        now = self._clock()
        stall = self._stall
        if stall is not None and (not waits or stall.at != at):
            if stall.stage == "logged":
                log.info("dead-letter topic %s: moving again, after %.0f s held back by an open transaction",
                         self.topic, now - stall.since)
            stall = self._stall = None
        if not waits:
            return
        if stall is None:
            stall = self._stall = _Stall(now, at)
        if stall.stage != "watching" or now - stall.since < self.stall_seconds:
            return
        if self._last_warning is not None and now - self._last_warning < STALL_REPEAT_SECONDS:
            stall.stage = "quiet"
            self._unlogged += 1
            return
        stall.stage = "logged"
        n = self._unlogged
        more = (f" {n} more stall{'s' if n > 1 else ''} over {self.stall_seconds:.0f} s since the last"
                " warning went unlogged.") if n else ""
        self._last_warning, self._unlogged = now, 0
        log.warning(
            "dead-letter topic %s: %d stored letter(s) held back for at least %.0f s by a transaction"
            " still open on the PostgreSQL server (the oldest one running: %d); produced when it ends,"
            " nothing is lost. Usually a long or idle-in-transaction session, on any database of"
            " the server: see pg_stat_activity (backend_xid = '%d', state 'idle in transaction') or"
            " pg_prepared_xacts.%s",
            self.topic, waiting_letters(self.store, below), now - stall.since, below, below % 2**32, more,
        )

    def _claim(self, server: str | None) -> tuple[Position, int] | None:
        """Take the lease if it is free, has lapsed or is ours; then the cursor and the cut
        to read under (starting the feed again if the server changed), or None when another
        instance holds it. One short transaction."""
        now = datetime.now(UTC)
        with self.store.transaction():
            self.store.lock(CURSOR)  # read-modify-write of one row that may not exist yet
            state = load_state(self.store, CURSOR) or {}
            lease = state.get("lease")
            if lease and lease.get("owner") != self.owner:
                if parse_iso(lease["until"]) > now:
                    return None
                log.warning(
                    "dead-letter topic %s: the lease of %s lapsed at %s; taking over (letters it"
                    " produced after the cursor go out again, with the same keys)",
                    self.topic, lease.get("owner"), lease["until"],
                )
            below = finished_below(self.store)  # after the state was read: see _moved
            if _moved(state, below, server):
                n = rebase_feed(self.store, below)
                log.warning(
                    "dead-letter topic %s: the store's transaction ids no longer follow the"
                    " cursor's (server %s, was %s; cursor at transaction %s, the oldest one"
                    " running is %s): restored into another server? Every stored letter is"
                    " produced again, with the same keys (%d renumbered)",
                    self.topic, server, state.get("server"), state.get("last_xid", 0), below, n,
                )
                state["last_xid"], state["last_id"] = 0, 0
            if server is not None:
                state["server"] = server
            state["lease"] = {"owner": self.owner, "until": iso(now + self.lease)}
            save_state(self.store, CURSOR, state)
        return position(state), below

    def _finish(self, acked: Position) -> None:
        """Move the cursor up to ``acked`` (never back) and give the lease back, if the
        lease is still ours; else leave both to their new owner. One short transaction."""
        with self.store.transaction():
            self.store.lock(CURSOR)
            state = load_state(self.store, CURSOR) or {}
            lease = state.get("lease") or {}
            if lease.get("owner") != self.owner:
                log.warning(
                    "dead-letter topic %s: this run outlived its lease (now held by %s); the"
                    " cursor (%s) is left to it, not moved to %s here: letters acknowledged in"
                    " this run may be produced twice, with the same keys",
                    self.topic, lease.get("owner") or "nobody", position(state), acked,
                )
                return
            del state["lease"]
            state["last_xid"], state["last_id"] = max(position(state), acked)
            save_state(self.store, CURSOR, state)

    def _produce(self, rows: list[dict[str, Any]], last: Position) -> tuple[int, Position, BaseException | None]:
        """Produce ``rows`` (the letters after ``last``); returns how many were sent, the
        position of the last one acknowledged in order, and the error that stopped the
        acknowledgements."""
        if not rows:
            return 0, last, None
        if self._producer is None:
            self._producer = self._factory()
        futures = []
        stripped: list[str] = []
        for row in rows:
            key, value, headers = record_of(row)
            try:
                sent = self._producer.send(self.topic, key=key, value=value, headers=headers)
            except Exception as exc:  # the producer's own size check raises at once
                if not (_too_large(exc) and value is not None):
                    raise
                sent = self._without_payload(row, exc)
                stripped.append(key.decode())
            futures.append(((int(row["txid"]), int(row["id"])), sent, row))
        self._producer.flush(timeout=FLUSH_TIMEOUT)
        acked = last
        error: BaseException | None = None
        for at, fut, row in futures:
            if not fut.succeeded() and fut.is_done and _too_large(fut.exception) and row["payload"] is not None:
                # the broker refused it (the topic's max.message.bytes)
                fut = self._without_payload(row, fut.exception)
                self._producer.flush(timeout=FLUSH_TIMEOUT)
                stripped.append(record_of(row)[0].decode())
            if not fut.succeeded():
                cause = fut.exception if fut.is_done else TimeoutError("no acknowledgement")
                error = RuntimeError(f"produced up to dead letter {acked[1]}, then: {cause}")
                break
            acked = at
        if stripped:
            log.warning(
                "dead-letter topic %s: %d letter(s) too large for the topic or for the producer's"
                " max_request_size were produced without their payload (header %s; the payload"
                " stays in the dead_letters table): %s",
                self.topic, len(stripped), PAYLOAD_DROPPED, ", ".join(stripped[:5]) + (" ..." if len(stripped) > 5 else ""),
            )
        return len(futures), acked, error

    def _without_payload(self, row: dict[str, Any], cause: BaseException) -> Any:
        """Send ``row``'s letter with no value, and a header saying why (with it, the record
        was refused for its size); the future of that send."""
        key, value, headers = record_of(row)
        why = f"{type(cause).__name__}: {len(value or b'')} bytes of payload".encode()
        return self._producer.send(self.topic, key=key, value=None, headers=[*headers, (PAYLOAD_DROPPED, why)])

    def close(self) -> None:
        with self._lock:
            self._close_producer()

    def _close_producer(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:  # noqa: BLE001
                pass
            self._producer = None
