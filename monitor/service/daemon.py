"""The daemon: one consumer thread drives the pipeline; a scheduler ticks; HTTP serves.

Loop: ``poll(max_records)`` -> decode -> windows -> (closed windows) figures ->
one SQLite transaction -> commit Kafka offsets that are now durable. Offsets
are committed only after the transaction, so a crash at any point replays from
a position that the stored state accounts for.

Shutdown (SIGTERM/SIGINT): stop polling, flush what is in hand, run the outbox
once, commit, give the partitions' rows up, exit 0. A second signal exits at
once; SQLite's journal (or PostgreSQL's transactions) keep the store consistent.

Partitions: when Kafka assigns partitions, the daemon claims them in the store
(:meth:`Pipeline.adopt`) and seeks each to where its stored state resumes; a
partition whose claim fails (storage down, or a newer group generation holds
it) is paused and claimed again from the poll loop. With a store shared by
several instances this is the whole hand-over: the next owner resumes exactly
where the last stored state left off, and the previous owner can no longer
store anything for it (see :mod:`storage.stream`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.service.pipeline import Pipeline, instance_id
from monitor.service.retention import RetentionJob, switch_to_incremental_vacuum
from monitor.service.shared_references import follow_registered_references
from monitor.service.store import open_store
from storage.db import StorageError, Store
from storage.state_dir import secure_state_dir
from storage.stream import adopt_legacy_state, release_partitions

#: seconds between two attempts to claim partitions whose claim failed
CLAIM_RETRY_SECONDS = 2.0

log = logging.getLogger("driftwarden.daemon")


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        http: bool = True,
    ) -> None:
        self.config = config
        self.clock = clock
        self.on_event = on_event or (lambda kind, data: None)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.kafka_connected = False
        secure_state_dir(config.daemon.state_dir)  # 0700 / 0600, before anything is written
        #: this instance in the store (partition owner, outbox claims)
        self.instance = instance_id()
        self.store: Store = open_store(config, application_name=f"driftwarden {self.instance}")
        switch_to_incremental_vacuum(self.store)
        self.prune = RetentionJob(config, self.store, clock=clock)
        #: what the prune removed so far (``/metrics``)
        self.retention = self.prune.stats
        from monitor.service.alerting import Alerting  # noqa: PLC0415

        self.alerting = Alerting(config, self.store, clock=clock, on_event=self.on_event, owner=self.instance)
        try:
            # loads and validates every reference: a bad one raises ReferenceError
            self.pipeline = Pipeline(
                config, self.store, clock=clock, on_window=self.alerting.on_window,
                max_payload_bytes=config.daemon.max_payload_bytes, owner=self.instance,
            )
        except BaseException:
            self.store.close()
            raise
        self.pipeline.auto_claim = False  # partitions are claimed when Kafka assigns them
        self.pipeline.register_initial_references()
        adopt_legacy_state(self.store, self.pipeline.topic, clock())
        #: registered references this instance could not use (not tried again)
        self._failed_references: set[str] = set()
        #: assigned partitions not claimed yet (paused until a claim succeeds)
        self._unclaimed: set[int] = set()
        self._claim_retry_at = 0.0
        self._consumer: Any = None
        self._last_flush = time.monotonic()
        self._tick_due = threading.Event()
        self._scheduler: Any = None
        self._http: Any = None
        self._want_http = http
        self._storage_error: str | None = None

    @property
    def storage_error(self) -> str | None:
        """The storage failure that paused consumption, or None while storage is healthy."""
        return self._storage_error

    # -- lifecycle ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            if self.stop_event.is_set():
                log.warning("second signal: exiting now")
                os._exit(1)
            timeout = self.config.daemon.shutdown_timeout.total_seconds()
            log.info("signal %s: draining (at most %.0fs)", signal.Signals(signum).name, timeout)
            self.stop_event.set()
            # a drain stuck on an unreachable broker must not outlive the stop timeout
            watchdog = threading.Timer(timeout, self._drain_timed_out)
            watchdog.daemon = True
            watchdog.start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def stop(self) -> None:
        self.stop_event.set()

    def _drain_timed_out(self) -> None:
        log.error("drain did not finish within daemon.shutdown_timeout: exiting now")
        os._exit(1)

    def run(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415

        sched = BackgroundScheduler(timezone="UTC")
        sched.add_job(self._tick_due.set, "interval", seconds=self.config.daemon.tick_interval.total_seconds(), id="tick")
        sched.add_job(self.alerting.deliver_due, "interval", seconds=1.0, id="outbox", max_instances=1, coalesce=True)
        sched.add_job(self.alerting.tick, "interval", seconds=self.config.daemon.tick_interval.total_seconds(), id="alert-tick", max_instances=1, coalesce=True)
        # first run at start-up, beside consumption (it works in short batches)
        sched.add_job(self.prune, "interval", seconds=self.prune.interval.total_seconds(), id="prune", max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        sched.start()
        self._scheduler = sched
        if self._want_http:
            from monitor.web.server import ApiServer  # noqa: PLC0415

            self._http = ApiServer(self)
            self._http.start()
        try:
            self._consume()
        finally:
            self._shutdown()
        return 0

    def _consume(self) -> None:
        from kafka import AsyncConsumerRebalanceListener  # noqa: PLC0415
        from kafka.errors import KafkaError  # noqa: PLC0415

        from monitor.ingest.kafka_client import make_consumer  # noqa: PLC0415

        topic = self.config.kafka.predictions_topic
        daemon = self

        class Listener(AsyncConsumerRebalanceListener):
            """Runs on kafka-python's IO loop: flush to the store, then await the commit."""

            async def on_partitions_revoked(self, revoked: Any) -> None:
                offsets = daemon._flush_for_rebalance()
                if offsets:
                    await daemon._commit_async(offsets, revoked)

            async def on_partitions_lost(self, lost: Any) -> None:
                # evicted from the group: others may own them already, so no commit; the
                # flush stores what is in hand only where our claim still stands
                daemon._flush_for_rebalance()
                gone = {tp.partition for tp in lost if tp.topic == topic}
                daemon.pipeline.release_partitions(daemon._owned() - gone)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                # eager assignors: ``assigned`` is the whole assignment; cooperative ones:
                # only the added partitions. The consumer's assignment is the whole one in both.
                # stop counting what went away at once, before anything is awaited
                daemon.pipeline.release_partitions(daemon._owned())
                committed: dict[int, int] = {}
                if not daemon.store.shared:
                    # a store of its own may hold a stale state of a partition that comes back
                    committed = await daemon._committed_async(daemon._owned())
                daemon._on_assigned(committed)
                daemon.on_event("assigned", {"partitions": sorted(daemon._owned())})

        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                self._consumer = make_consumer(self.config)
                self._consumer.subscribe([topic], listener=Listener())
                self.kafka_connected = True
                backoff = 1.0
                self._poll_loop()
                return
            except KafkaError as exc:
                self.kafka_connected = False
                self.ready.clear()
                log.error("kafka: %s; reconnecting in %.0fs", exc, backoff)
                self._close_consumer()
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _owned(self) -> set[int]:
        """The partitions of the predictions topic Kafka assigns to this member now."""
        topic = self.config.kafka.predictions_topic
        try:
            return {tp.partition for tp in self._consumer.assignment() if tp.topic == topic}
        except Exception:  # noqa: BLE001 - no consumer (closing)
            return set()

    def _generation(self) -> int | None:
        """The consumer group's current generation (None when unknown: claims then take
        partitions unconditionally, still fenced by the claim epoch)."""
        try:
            gen = int(self._consumer._coordinator._generation.generation_id)
        except Exception:  # noqa: BLE001 - client internals changed
            return None
        return gen if gen >= 0 else None

    async def _committed_async(self, partitions: set[int]) -> dict[int, int]:
        """The group's committed offsets of ``partitions`` (from the IO loop); {} if unknown."""
        from kafka import TopicPartition  # noqa: PLC0415

        topic = self.config.kafka.predictions_topic
        try:
            got = await self._consumer._coordinator.fetch_committed_offsets_async(
                {TopicPartition(topic, p) for p in partitions}, timeout_ms=10_000
            )
        except Exception as exc:  # noqa: BLE001 - unknown: the stored state is taken as it is
            log.debug("committed offsets: %s", exc)
            return {}
        return {tp.partition: int(o.offset) for tp, o in got.items() if o is not None and o.offset >= 0}

    def _committed(self, partitions: set[int]) -> dict[int, int]:
        """As :meth:`_committed_async`, from the consumer thread."""
        from kafka import TopicPartition  # noqa: PLC0415

        topic = self.config.kafka.predictions_topic
        try:
            got = self._consumer._coordinator.fetch_committed_offsets(
                {TopicPartition(topic, p) for p in partitions}, timeout_ms=10_000
            )
        except Exception as exc:  # noqa: BLE001
            log.debug("committed offsets: %s", exc)
            return {}
        return {tp.partition: int(o.offset) for tp, o in got.items() if o is not None and o.offset >= 0}

    def _on_assigned(self, committed: dict[int, int]) -> None:
        """Kafka's assignment changed: forget what went away, claim what we hold now, seek."""
        owned = self._owned()
        self.pipeline.release_partitions(owned)
        try:
            parts = self._consumer.partitions_for_topic(self.config.kafka.predictions_topic)
            self.pipeline.topic_partitions = len(parts) if parts else None
        except Exception:  # noqa: BLE001
            self.pipeline.topic_partitions = None
        # all of them, kept ones too: the claim records the new generation (a member of an
        # older one cannot take them back) and tells whether what we hold is still current
        self._unclaimed = set(owned)
        self._claim(force=True, committed=committed)
        self.ready.set()

    def _claim(self, force: bool = False, committed: dict[int, int] | None = None) -> None:
        """Claim the assigned partitions not claimed yet, seek them to their stored state;
        those still unclaimed stay paused (tried again every :data:`CLAIM_RETRY_SECONDS`)."""
        from kafka import TopicPartition  # noqa: PLC0415

        if not self._unclaimed or (not force and time.monotonic() < self._claim_retry_at):
            return
        topic = self.config.kafka.predictions_topic
        self._unclaimed &= self._owned()
        wanted = sorted(self._unclaimed)
        tps = [TopicPartition(topic, p) for p in wanted]
        if committed is None:
            committed = {} if self.store.shared else self._committed(set(wanted))
        try:
            seek, refused = self.pipeline.adopt(wanted, self._generation(), committed)
        except StorageError as exc:
            log.error("storage: cannot claim partitions %s: %s; they stay paused", wanted, exc)
            seek, refused = {}, set(wanted)
        for tp in tps:
            if tp.partition in refused:
                continue
            if tp.partition in seek:
                self._consumer.seek(tp, seek[tp.partition])
        self._unclaimed = set(refused)
        self._claim_retry_at = time.monotonic() + CLAIM_RETRY_SECONDS
        try:
            paused = [tp for tp in tps if tp.partition in refused]
            resumed = [tp for tp in tps if tp.partition not in refused]
            if paused:
                self._consumer.pause(*paused)
            if resumed:
                self._consumer.resume(*resumed)
        except Exception as exc:  # noqa: BLE001 - assignment changed meanwhile
            log.debug("pause/resume: %s", exc)

    def _poll_loop(self) -> None:
        k = self.config.kafka
        timeout_ms = int(k.poll_timeout.total_seconds() * 1000)
        commit_every = k.commit_interval.total_seconds()
        while not self.stop_event.is_set():
            # assigned but not (or no longer: another instance claimed it) ours in the store
            self._unclaimed |= self._owned() - set(self.pipeline.claims)
            if self._unclaimed:
                self._claim()
            if self._storage_error is not None:
                # storage is failing: do not consume more; retry the flush
                self.pipeline.touch()
                if not self._flush_and_commit(force=True):
                    self.stop_event.wait(2.0)
                    continue
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=k.max_poll_records)
            for tp, records in polled.items():
                if tp.topic == k.predictions_topic:
                    self.pipeline.process_records(records)
            if self.pipeline.claims.keys() - self._owned():
                # a cooperative rebalance revoked partitions without assigning any
                self.pipeline.release_partitions(self._owned())
            reachable = self._kafka_reachable()
            if reachable != self.kafka_connected:
                if reachable:
                    log.info("kafka: consuming (group coordinator reachable, group stable)")
                elif self.ready.is_set():
                    log.error("kafka: group coordinator unreachable or group rebalancing; not ready")
                self.kafka_connected = reachable
            if not reachable:
                # an empty poll during an outage or a rebalance is not a quiet stream
                self.pipeline.touch()
            elif self._tick_due.is_set():
                self._tick_due.clear()
                if self.store.shared:
                    try:  # a reference registered through another instance's API
                        follow_registered_references(self.pipeline, self._failed_references)
                    except StorageError as exc:
                        log.warning("storage: %s", exc)
                self.pipeline.tick()
            if self.pipeline.has_pending or time.monotonic() - self._last_flush >= commit_every:
                self._flush_and_commit()

    def _kafka_reachable(self) -> bool:
        """Whether the group coordinator is connected and the member is in a stable group.

        kafka-python reconnects by itself and its ``poll`` just returns nothing while
        the broker is away or the group rebalances: neither is a quiet stream.
        """
        try:
            coord = self._consumer._coordinator
            cid = coord.coordinator_id
            return cid is not None and bool(self._consumer._client.connected(cid)) and bool(coord.stable())
        except Exception:  # noqa: BLE001 - client internals changed: assume reachable
            return True

    def _flush_and_commit(self, force: bool = False) -> bool:
        try:
            offsets = self.pipeline.flush()
        except StorageError as exc:
            if self._storage_error != str(exc):
                log.error("storage: %s; consumption paused until it clears", exc)
            self._storage_error = str(exc)
            self.on_event("storage_error", {"error": str(exc)})
            return False
        if self._storage_error is not None:
            log.info("storage recovered")
            self._storage_error = None
        self.alerting.deliver_after_commit()
        self._last_flush = time.monotonic()
        if offsets is None:
            try:
                self.pipeline.keepalive()  # an idle owner's rows stay fresh; lost ones are found
            except StorageError as exc:
                log.warning("storage: %s", exc)
        if offsets is None and not force:
            return True
        if offsets is None:
            offsets = self.pipeline.commit_offsets()
        self._commit(offsets)
        return True

    def _flush_for_rebalance(self) -> dict[int, int] | None:
        try:
            self.pipeline.flush()
        except StorageError as exc:
            log.error("storage: %s; not committing on rebalance", exc)
            self._storage_error = str(exc)
            return None
        return self.pipeline.commit_offsets()

    def _offset_payload(self, offsets: dict[int, int], partitions: Any = None) -> dict[Any, Any]:
        from kafka import TopicPartition  # noqa: PLC0415
        from kafka.structs import OffsetAndMetadata  # noqa: PLC0415

        topic = self.config.kafka.predictions_topic
        owned = {tp.partition for tp in (partitions if partitions is not None else self._consumer.assignment()) if tp.topic == topic}
        return {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items() if p in owned}

    async def _commit_async(self, offsets: dict[int, int], partitions: Any) -> None:
        payload = self._offset_payload(offsets, partitions)
        if not payload:
            return
        try:
            # the coroutine behind KafkaConsumer.commit(), awaitable from the IO loop
            await self._consumer._coordinator._commit_offsets_sync_async(payload)
        except Exception as exc:  # noqa: BLE001 - state on disk is the truth
            log.warning("offset commit on rebalance failed: %s", exc)

    def _commit(self, offsets: dict[int, int]) -> None:
        if not offsets or self._consumer is None:
            return
        try:
            payload = self._offset_payload(offsets)
            if payload:
                self._consumer.commit(payload)
        except Exception as exc:  # noqa: BLE001 - the state on disk is the truth; commit again later
            log.warning("offset commit failed (will retry): %s", exc)

    def _shutdown(self) -> None:
        try:
            self.pipeline.tick()
            self._flush_and_commit(force=True)
        except Exception as exc:  # noqa: BLE001
            log.error("final flush failed: %s", exc)
        try:
            self.alerting.drain(self.alerting.drain_timeout())
        except Exception as exc:  # noqa: BLE001
            log.error("final outbox run failed: %s", exc)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self.prune.stop()
        if self._http is not None:
            self._http.stop()
        self._close_consumer()
        try:
            # a clean stop: the next owner may claim at once, whatever its generation
            release_partitions(self.store, self.pipeline.topic, self.instance, self.pipeline.claims, self.clock())
        except StorageError as exc:
            log.warning("storage: cannot give partitions up: %s", exc)
        self.store.close()
        self.on_event("stopped", {})

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None
