"""``kafka.dead_letter_topic``: bad messages produced to a topic after they are durable.

The feed is the ``dead_letters`` table itself, read after its rows committed: a
letter is produced only once it is stored, and a restart picks up where the last
acknowledged produce left off (a cursor in ``stream_state``, advanced only over
letters the broker acknowledged, in id order). Delivery is at least once: a crash
between the broker's acknowledgement and the cursor's commit produces a letter again
with the same key, by which consumers deduplicate.

Each record: key ``"<topic>/<partition>/<offset>"`` of the source message; value the
stored payload (the first ``daemon.max_payload_bytes`` bytes; none if 0); headers
``driftwarden.reason``, ``driftwarden.source.topic``, ``driftwarden.source.partition``,
``driftwarden.source.offset``, ``driftwarden.received_at``. When the option is first
switched on, the letters already stored (within retention) are produced too.

Runs on the scheduler thread, never on the consumer loop: a slow or absent broker
delays the feed, never consumption. Bounded: at most ``batch`` letters (each at most
64 KiB by default) per run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from storage.db import Store
from storage.dead_letters import dead_letters_after
from storage.records import iso
from storage.state import load_state, save_state

log = logging.getLogger("driftwarden.dead_letter_topic")

CURSOR = "dead_letter_topic"
#: seconds a run waits for the broker's acknowledgements
FLUSH_TIMEOUT = 30.0


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
    """Produces stored dead letters to ``kafka.dead_letter_topic``; see the module doc."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        batch: int = 500,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        topic = config.kafka.dead_letter_topic
        if not topic:
            raise ValueError("kafka.dead_letter_topic is not set")
        self.topic = topic
        self.config = config
        self.store = store
        self.batch = batch
        self._factory = producer_factory or self._make_producer
        self._producer: Any = None
        self._failing = False
        self._lock = threading.Lock()  # the scheduler's run and the shutdown's never overlap

    def _make_producer(self) -> Any:
        from monitor.ingest.kafka_client import make_producer  # noqa: PLC0415

        # acks from every in-sync replica: the cursor moves only past what is safe
        return make_producer(self.config, acks="all", max_block_ms=10_000, linger_ms=20)

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
        if self.store.shared:
            # every instance runs this job: the lock (a PostgreSQL advisory lock held until
            # the cursor is saved) lets one at a time produce, so each letter goes out once
            with self.store.transaction():
                self.store.lock(CURSOR)
                sent, error = self._produce()
        else:  # one instance: no transaction held while the broker acknowledges
            sent, error = self._produce()
        if error is not None:
            raise error
        return sent

    def _produce(self) -> tuple[int, BaseException | None]:
        """Produce the letters after the cursor, move it past those acknowledged; returns
        how many were sent and the error that stopped the acknowledgements (if any)."""
        last = self.cursor()
        rows = dead_letters_after(self.store, last, self.batch, settled_before=self._settled())
        if not rows:
            return 0, None
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
        if acked > last:
            with self.store.transaction():
                save_state(self.store, CURSOR, {"last_id": acked})
        return len(futures), error

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
