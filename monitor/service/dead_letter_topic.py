"""``kafka.dead_letter_topic``: bad messages produced to a topic after they are durable.

The feed is the ``dead_letters`` table itself, read after its rows committed: a
letter is produced only once it is stored, and a restart picks up where the last
acknowledged produce left off (a cursor in ``stream_state``, advanced only over
letters the broker acknowledged, in id order, never backwards). Delivery is at least
once: a crash between the broker's acknowledgement and the cursor's commit produces a
letter again with the same key, by which consumers deduplicate.

Every instance runs this job; on a shared store one at a time produces, under a
**lease** kept in the cursor's row (``owner``, ``until``). A run that finds letters
to produce takes the lease in a short transaction (only if it is free, has lapsed or
is already its own), produces with no database connection held while it waits on
the broker, then in a second short transaction moves the cursor past what was
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
``driftwarden.source.offset``, ``driftwarden.received_at``. When the option is first
switched on, the letters already stored (within retention) are produced too.

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
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from monitor.config import Config
from storage.db import Store
from storage.dead_letters import dead_letters_after
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

    def _make_producer(self) -> Any:
        from monitor.ingest.kafka_client import make_producer  # noqa: PLC0415

        # acks from every in-sync replica: the cursor moves only past what is safe
        return make_producer(self.config, acks="all", max_block_ms=MAX_BLOCK_MS,
                             bootstrap_timeout_ms=MAX_BLOCK_MS, linger_ms=20)

    def cursor(self) -> int:
        state = load_state(self.store, CURSOR)
        return int(state.get("last_id", 0)) if state else 0

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
        # a look first, outside any transaction: an idle feed takes no lease, writes nothing
        if not dead_letters_after(self.store, self.cursor(), 1, settled_before=self._settled()):
            return 0
        last = self._claim()
        if last is None:
            return 0  # another instance holds the lease: its run produces these
        try:
            # read under the lease, outside any transaction: no connection is held from
            # here until the broker has answered
            rows = dead_letters_after(self.store, last, self.batch, settled_before=self._settled())
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

    def _claim(self) -> int | None:
        """Take the lease if it is free, has lapsed or is ours; the cursor then, or None
        when another instance holds it. One short transaction."""
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
            state["lease"] = {"owner": self.owner, "until": iso(now + self.lease)}
            save_state(self.store, CURSOR, state)
        return int(state.get("last_id", 0))

    def _finish(self, acked: int) -> None:
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
                    self.topic, lease.get("owner") or "nobody", state.get("last_id", 0), acked,
                )
                return
            del state["lease"]
            state["last_id"] = max(int(state.get("last_id", 0)), acked)
            save_state(self.store, CURSOR, state)

    def _produce(self, rows: list[dict[str, Any]], last: int) -> tuple[int, int, BaseException | None]:
        """Produce ``rows`` (the letters after ``last``); returns how many were sent, the
        last id acknowledged in order, and the error that stopped the acknowledgements."""
        if not rows:
            return 0, last, None
        if self._producer is None:
            self._producer = self._factory()
        futures = []
        for row in rows:
            key, value, headers = record_of(row)
            futures.append((row["id"], self._producer.send(self.topic, key=key, value=value, headers=headers)))
        self._producer.flush(timeout=FLUSH_TIMEOUT)
        acked = last
        error: BaseException | None = None
        for letter_id, fut in futures:
            if not fut.succeeded():
                cause = fut.exception if fut.is_done else TimeoutError("no acknowledgement")
                error = RuntimeError(f"produced up to dead letter {acked}, then: {cause}")
                break
            acked = letter_id
        return len(futures), acked, error

    def _settled(self) -> str | None:
        """On a shared store, letters newer than one statement timeout are left for the
        next run: ids come from one sequence but transactions commit out of order, and a
        cursor past an id not committed yet would skip that letter for good."""
        if not self.store.shared:
            return None
        return iso(datetime.now(UTC) - self.config.storage.statement_timeout)

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
