"""The daemon: one consumer thread drives the pipeline; a scheduler ticks; HTTP serves.

Loop: ``poll(max_records)`` -> decode -> windows -> (closed windows) figures ->
one SQLite transaction -> commit Kafka offsets that are now durable. Offsets
are committed only after the transaction, so a crash at any point replays from
a position that the stored state accounts for.

Shutdown (SIGTERM/SIGINT): stop polling, flush what is in hand, run the outbox
once, commit, exit 0. A second signal exits at once; SQLite's journal keeps the
file consistent.

Under systemd (``Type=notify``, see :mod:`monitor.service.systemd`): ``READY=1`` once
partitions are assigned, ``WATCHDOG=1`` from the consumer loop itself (a stuck loop
stops kicking and gets restarted), a ``STATUS=`` line every few seconds, ``STOPPING=1``
on SIGTERM/SIGINT.

SIGHUP reloads rules, notifiers, alerting and drift settings (:mod:`monitor.service.reload`)
on the consumer thread between two polls, with ``RELOADING=1`` / ``READY=1`` around it; a
new config that is invalid or changes what needs a restart is refused and logged.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from monitor.config import Config
from monitor.service.pipeline import Pipeline
from monitor.service.retention import RetentionJob, dead_letter_cap, switch_to_incremental_vacuum
from monitor.service.systemd import SystemdNotifier
from monitor.service.telemetry import consumer_lag, log_shutdown, log_startup, package_version
from storage.db import StorageError, Store
from storage.state_dir import secure_state_dir

log = logging.getLogger("driftwarden.daemon")

#: seconds between two STATUS= lines to systemd
STATUS_EVERY = 5.0


class Daemon:
    def __init__(
        self,
        config: Config,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
        http: bool = True,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        #: the file SIGHUP re-reads (None: reloading is refused)
        self.config_path = config_path
        self.clock = clock
        self.on_event = on_event or (lambda kind, data: None)
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self.kafka_connected = False
        secure_state_dir(config.daemon.state_dir)  # 0700 / 0600, before anything is written
        self.store = Store.in_state_dir(
            config.daemon.state_dir, synchronous=config.daemon.sqlite_synchronous,
            dead_letter_cap=dead_letter_cap(config),
        )
        switch_to_incremental_vacuum(self.store)
        self.prune = RetentionJob(config, self.store, clock=clock)
        #: what the prune removed so far (``/metrics``)
        self.retention = self.prune.stats
        from monitor.service.alerting import Alerting  # noqa: PLC0415

        self.alerting = Alerting(config, self.store, clock=clock, on_event=self.on_event)
        try:
            # loads and validates every reference: a bad one raises ReferenceError
            self.pipeline = Pipeline(
                config, self.store, clock=clock, on_window=self.alerting.on_window,
                on_performance=self.alerting.on_performance,
                max_payload_bytes=config.daemon.max_payload_bytes,
            )
        except BaseException:
            self.store.close()
            raise
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
        # -- systemd (all no-ops without NOTIFY_SOCKET)
        self.systemd = SystemdNotifier()
        self._notified_ready = False
        self._status_at = 0.0
        self._status_count = 0
        self._reload_due = threading.Event()
        #: time.monotonic() of the consumer loop's last turn: what a liveness check
        #: (systemd's watchdog here; /healthz could use it too) should watch
        self.loop_turned_at = time.monotonic()
        #: kafka.dead_letter_topic's producer (monitor/service/dead_letter_topic.py), if set
        self.dead_letter_topic: Any = None

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
            self.systemd.stopping("draining: flushing windows and committing offsets")
            # a drain stuck on an unreachable broker must not outlive the stop timeout
            watchdog = threading.Timer(timeout, self._drain_timed_out)
            watchdog.daemon = True
            watchdog.start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: self.request_reload())

    def request_reload(self) -> None:
        """Re-read the config file at the consumer loop's next turn (what SIGHUP does)."""
        self._reload_due.set()

    def stop(self) -> None:
        self.stop_event.set()

    def _drain_timed_out(self) -> None:
        log.error("drain did not finish within daemon.shutdown_timeout: exiting now")
        os._exit(1)

    def consumer_lag(self) -> dict[int, int]:
        """Messages behind the newest known offset, per assigned partition (``/metrics``)."""
        return consumer_lag(self._consumer, self.pipeline.positions, self.config.kafka.predictions_topic)

    def run(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415

        started = time.monotonic()
        log_startup(self, version=package_version(), resumed_partitions=len(self._resume))

        sched = BackgroundScheduler(timezone="UTC")
        sched.add_job(self._tick_due.set, "interval", seconds=self.config.daemon.tick_interval.total_seconds(), id="tick")
        # through self.alerting at each run: a reload swaps it
        sched.add_job(lambda: self.alerting.deliver_due(), "interval", seconds=1.0, id="outbox", max_instances=1, coalesce=True)
        sched.add_job(lambda: self.alerting.tick(), "interval", seconds=self.config.daemon.tick_interval.total_seconds(), id="alert-tick", max_instances=1, coalesce=True)
        if self.config.kafka.dead_letter_topic:
            from monitor.service.dead_letter_topic import DeadLetterTopic  # noqa: PLC0415

            self.dead_letter_topic = DeadLetterTopic(self.config, self.store)
            sched.add_job(self.dead_letter_topic.run_once, "interval", seconds=1.0, id="dead-letter-topic", max_instances=1, coalesce=True)
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
            log_shutdown(self, uptime_s=time.monotonic() - started)
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
                daemon._notify_ready()
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
                self.systemd.status(f"kafka: {exc}; reconnecting in {backoff:.0f}s")
                self._close_consumer()
                self._wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _poll_loop(self) -> None:
        k = self.config.kafka
        timeout_ms = int(k.poll_timeout.total_seconds() * 1000)
        commit_every = k.commit_interval.total_seconds()
        while not self.stop_event.is_set():
            self._service_tick()
            if self._storage_error is not None:
                # storage is failing: do not consume more; retry the flush
                self.pipeline.touch()
                if not self._flush_and_commit(force=True):
                    self._wait(2.0)
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

    # -- systemd ----------------------------------------------------------------------------

    def _notify_ready(self) -> None:
        """READY=1 the first time partitions are assigned (the daemon is consuming)."""
        if not self._notified_ready:
            self._notified_ready = True
            self.systemd.ready("consuming")

    def _wait(self, seconds: float) -> None:
        """``stop_event.wait`` that keeps kicking the watchdog: a deliberate pause
        (reconnect backoff, storage retry) is not a stuck loop."""
        deadline = time.monotonic() + seconds
        step = max(0.05, min(1.0, (self.systemd.watchdog or 2.0) / 4))
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.loop_turned_at = time.monotonic()
            self.systemd.heartbeat()
            self._maybe_reload()
            self.stop_event.wait(min(step, left))

    def _service_tick(self) -> None:
        """Called on every turn of the consumer loop: watchdog kick, reload, the status line."""
        self.loop_turned_at = time.monotonic()
        self.systemd.heartbeat()
        self._maybe_reload()
        now = time.monotonic()
        if not self.systemd.enabled or now - self._status_at < STATUS_EVERY:
            return
        count = self.pipeline.stats.rows + sum(self.pipeline.stats.dead_letters.values())
        rate = (count - self._status_count) / (now - self._status_at) if self._status_at else 0.0
        self._status_at, self._status_count = now, count
        self.systemd.status(self.status_text(rate))

    def _maybe_reload(self) -> None:
        """Apply a requested reload; a refused one is logged and changes nothing."""
        if not self._reload_due.is_set():
            return
        self._reload_due.clear()
        from monitor.service.reload import ReloadRefused, prepare_reload  # noqa: PLC0415

        if self.config_path is None:
            log.error("reload refused: the daemon was not started from a config file")
            return
        self.systemd.reloading(f"reloading {self.config_path}")
        try:
            plan = prepare_reload(self, self.config_path)
            plan.apply(self)
        except ReloadRefused as exc:
            log.error("reload refused, the running config stays: %s", exc)
            self.systemd.ready(f"reload refused: {exc}")
            self.on_event("reload", {"ok": False, "reason": str(exc)})
            return
        log.info("reloaded %s: %s", self.config_path, plan.summary)
        self.systemd.ready(f"reloaded: {plan.summary}")
        self.on_event("reload", {"ok": True, "summary": plan.summary})

    def status_text(self, rate: float) -> str:
        """One line for ``systemctl status``: what the daemon is doing, events/s, open windows, lag."""
        if self._storage_error is not None:
            return f"paused: storage failing: {self._storage_error}"
        if not self.ready.is_set():
            return "waiting for Kafka partition assignment"
        if not self.kafka_connected:
            return "paused: Kafka group coordinator unreachable or group rebalancing"
        open_windows = sum(len(rt.windows.open) for rt in self.pipeline.models.values())
        return f"consuming: {rate:.0f} events/s, {open_windows} open windows, lag {self._lag()}"

    def _lag(self) -> str:
        """Messages behind the last known high-water marks of the assigned partitions."""
        consumer = self._consumer
        if consumer is None:
            return "?"
        total, known = 0, False
        try:
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                pos = self.pipeline.positions.get(tp.partition)
                if hw is None or pos is None or tp.topic != self.config.kafka.predictions_topic:
                    continue
                total += max(0, hw - pos)
                known = True
        except Exception:  # noqa: BLE001 - a status line must never stop the loop
            return "?"
        return str(total) if known else "?"

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
            self.alerting.forget_uncommitted()
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
            self.alerting.forget_uncommitted()
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
            self.alerting.drain(self.alerting.drain_timeout())
        except Exception as exc:  # noqa: BLE001
            log.error("final outbox run failed: %s", exc)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        self.prune.stop()
        if self.dead_letter_topic is not None:
            self.dead_letter_topic.run_once()  # what the final flush stored
            self.dead_letter_topic.close()
        if self._http is not None:
            self._http.stop()
        self._close_consumer()
        self.store.close()
        self.systemd.close()
        self.on_event("stopped", {})

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None
