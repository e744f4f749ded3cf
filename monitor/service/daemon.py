"""The daemon: one consumer thread drives the pipeline; a scheduler ticks; HTTP serves.

Loop: ``poll(max_records)`` -> decode -> windows -> (closed windows) figures ->
one SQLite transaction -> commit Kafka offsets that are now durable. Offsets
are committed only after the transaction, so a crash at any point replays from
a position that the stored state accounts for.

Shutdown (SIGTERM/SIGINT): stop polling, flush what is in hand, run the outbox
once, commit, exit 0. A second signal exits at once; SQLite's journal keeps the
file consistent.
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
from monitor.service.pipeline import Pipeline
from storage.db import StorageError, Store

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
        self.store = Store.in_state_dir(config.daemon.state_dir, synchronous=config.daemon.sqlite_synchronous)
        from monitor.service.alerting import Alerting  # noqa: PLC0415

        self.alerting = Alerting(config, self.store, clock=clock, on_event=self.on_event)
        self.pipeline = Pipeline(
            config, self.store, clock=clock, on_window=self.alerting.on_window,
            on_performance=self.alerting.on_performance,
            max_payload_bytes=config.daemon.max_payload_bytes,
        )
        self.pipeline.register_initial_references()
        self._resume = self.pipeline.restore()
        #: where each partition of the labels topic resumes (durable state), until assigned
        self._label_resume = dict(self.pipeline.label_resume)
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
        labels = self.pipeline.labels
        labels_topic = labels.topic if labels is not None and labels.enabled else None
        topics = [topic] if labels_topic is None else [topic, labels_topic]
        daemon = self

        class Listener(AsyncConsumerRebalanceListener):
            """Runs on kafka-python's IO loop: flush to SQLite, then await the commit."""

            async def on_partitions_revoked(self, revoked: Any) -> None:
                offsets = daemon._flush_for_rebalance()
                if offsets is not None:
                    await daemon._commit_async(offsets, revoked)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                # eager assignors (range, round robin): ``assigned`` is the whole new assignment
                keep = {tp.partition for tp in assigned if tp.topic == topic}
                for p in daemon.pipeline.release_partitions(keep):
                    daemon._resume.pop(p, None)
                if labels is not None and labels_topic is not None:
                    for p in labels.release_partitions({tp.partition for tp in assigned if tp.topic == labels_topic}):
                        daemon._label_resume.pop(p, None)
                for tp in assigned:
                    p = tp.partition
                    if tp.topic == topic:
                        resume, positions = daemon._resume, daemon.pipeline.positions
                    elif labels is not None and tp.topic == labels_topic:
                        resume, positions = daemon._label_resume, labels.positions
                    else:
                        continue
                    if p in resume:
                        daemon._consumer.seek(tp, resume.pop(p))
                    elif p in positions:
                        daemon._consumer.seek(tp, positions[p])
                daemon.ready.set()
                daemon.on_event("assigned", {"partitions": sorted(tp.partition for tp in assigned)})

        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                self._consumer = make_consumer(self.config)
                self._consumer.subscribe(topics, listener=Listener())
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

    def _poll_loop(self) -> None:
        k = self.config.kafka
        timeout_ms = int(k.poll_timeout.total_seconds() * 1000)
        commit_every = k.commit_interval.total_seconds()
        while not self.stop_event.is_set():
            if self._storage_error is not None:
                # storage is failing: do not consume more; retry the flush
                self.pipeline.touch()
                if not self._flush_and_commit(force=True):
                    self.stop_event.wait(2.0)
                    continue
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=k.max_poll_records)
            labels = self.pipeline.labels
            for tp, records in polled.items():
                if tp.topic == k.predictions_topic:
                    self.pipeline.process_records(records)
                elif labels is not None and tp.topic == labels.topic:
                    self.pipeline.process_label_records(records)
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
        self._last_flush = time.monotonic()
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
        assigned = list(partitions if partitions is not None else self._consumer.assignment())
        owned = {tp.partition for tp in assigned if tp.topic == topic}
        out = {TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items() if p in owned}
        labels = self.pipeline.labels
        if labels is not None and labels.topic is not None:
            lowned = {tp.partition for tp in assigned if tp.topic == labels.topic}
            out.update(
                {TopicPartition(labels.topic, p): OffsetAndMetadata(o, "", -1)
                 for p, o in labels.commit_offsets().items() if p in lowned}
            )
        return out

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
        """Commit ``offsets`` of the predictions topic, and the durable ones of the labels topic."""
        if self._consumer is None:
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
            self.alerting.deliver_due()
        except Exception as exc:  # noqa: BLE001
            log.error("final outbox run failed: %s", exc)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._http is not None:
            self._http.stop()
        self._close_consumer()
        self.store.close()
        self.on_event("stopped", {})

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None
