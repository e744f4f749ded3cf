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

Under systemd (``Type=notify``, see :mod:`monitor.service.systemd`): ``READY=1`` once
started (store, references, HTTP API; Kafka need not be reachable: its state is in
``STATUS=`` and ``/readyz``), ``WATCHDOG=1`` from the consumer loop itself (a stuck loop
stops kicking and gets restarted), a ``STATUS=`` line every few seconds, ``STOPPING=1``
on SIGTERM/SIGINT.

SIGHUP reloads rules, notifiers, alerting and drift settings (:mod:`monitor.service.reload`)
on the consumer thread between two polls, with ``RELOADING=1`` / ``READY=1`` around it; a
new config that is invalid or changes what needs a restart is refused and logged.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from monitor.config import Config
from monitor.ingest.kafka_client import log_starts
from monitor.ingest.skipped import SkippedOffsets
from monitor.service.heap import resettle_heap
from monitor.service.pipeline import Pipeline, instance_id
from monitor.service.retention import RetentionJob, switch_to_incremental_vacuum
from monitor.service.shared_references import follow_registered_references
from monitor.service.store import open_store
from monitor.service.systemd import SystemdNotifier, repeated
from monitor.service.telemetry import consumer_lag, log_shutdown, log_startup, package_version
from storage.db import StorageError, Store, brief_reason
from storage.state_dir import REPLAY_MARKER, StateDirError, lock_state_dir, secure_state_dir
from storage.stream import adopt_legacy_state, partition_rows, release_partitions

#: seconds between two attempts to claim partitions whose claim failed
CLAIM_RETRY_SECONDS = 2.0

log = logging.getLogger("driftwarden.daemon")

T = TypeVar("T")

#: seconds between two STATUS= lines to systemd
STATUS_EVERY = 5.0
#: a running consumer loop that has not turned for this long (or twice
#: storage.statement_timeout, if longer) is stalled: /healthz and /readyz say 503
STALL_AFTER_MIN_S = 60.0
#: how long an HTTP read waits on an SQLite lock (ms) before it fails (the API: 503)
READ_BUSY_TIMEOUT_MS = 2_000


#: the longest a reload's preparation (references read again, thresholds calibrated)
#: counts as the loop turning, in seconds (see :meth:`Daemon._kept_alive`)
RELOAD_KEEPALIVE_SECONDS = 600.0


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
        # 0700 / 0600, before anything is written (uploaded references live there with any store)
        secure_state_dir(config.daemon.state_dir, database=config.storage.url is None)
        if (Path(config.daemon.state_dir) / REPLAY_MARKER).exists():
            raise StateDirError(
                f"daemon.state_dir: {config.daemon.state_dir} is a `driftwarden replay` folder (it holds"
                f" {REPLAY_MARKER}): the next replay there would replace the daemon's tables. Give the daemon"
                " a folder of its own"
            )
        # one instance per SQLite file: a second daemon on it (a `driftwarden run` by hand
        # beside the service) would take half the partitions and overwrite the windows
        # the first computes with its own half; instances of a shared PostgreSQL store may
        # share a folder. A replay (exclusive) never runs beside either
        self._state_lock = lock_state_dir(config.daemon.state_dir, exclusive=config.storage.url is None)
        #: this instance in the store (partition owner, outbox claims)
        self.instance = instance_id()
        # -- systemd (all no-ops without NOTIFY_SOCKET)
        self.systemd = SystemdNotifier()
        # a schema migration, a first VACUUM or 100 references to prepare may outlast
        # TimeoutStartSec: systemd is asked for more time while they run
        store: Store | None = None
        try:
            with self.systemd.extending("starting: opening the store (migrating its schema if needed)"):
                self.store = store = open_store(config, application_name=f"driftwarden {self.instance}")
                switch_to_incremental_vacuum(self.store)
            self.prune = RetentionJob(config, self.store, clock=clock)
            #: what the prune removed so far (``/metrics``)
            self.retention = self.prune.stats
            from monitor.service.alerting import Alerting  # noqa: PLC0415

            self.alerting = Alerting(config, self.store, clock=clock, on_event=self.on_event, owner=self.instance)
            with self.systemd.extending("starting: loading and preparing the references"):
                # loads and validates every reference: a bad one raises ReferenceError
                self.pipeline = Pipeline(
                    config, self.store, clock=clock, on_window=self.alerting.on_window,
                    on_performance=self.alerting.on_performance,
                    max_payload_bytes=config.daemon.max_payload_bytes, owner=self.instance,
                    on_outcome=self.alerting.flush_outcome, after_windows=self.alerting.finish_slots,
                    performance_savepoint=self.alerting.engine.memory_savepoint,
                )
            self.pipeline.auto_claim = False  # partitions are claimed when Kafka assigns them
            # offsets Kafka skipped (records deleted before they were read): confirmed with
            # the broker after each poll that found a gap (see monitor.ingest.skipped)
            self.pipeline.watch_skipped(SkippedOffsets(config.kafka.auto_offset_reset))
            if self.pipeline.labels is not None:
                # a flush that builds a large id index (millions of pending predictions) turns
                # no loop for a while; each chunk it reads is progress, not a stall
                self.pipeline.labels.progress = self._advancing
            self.pipeline.register_initial_references()
            # the single-row label state; each partition's row, once claimed, takes over
            self.pipeline.restore_labels()
            adopt_legacy_state(self.store, self.pipeline.topic, clock())
        except BaseException:  # nothing of a start that failed is held on to
            if store is not None:
                store.close()
            self._state_lock.release()
            raise
        #: registered references this instance could not use (not tried again)
        self._failed_references: set[str] = set()
        #: assigned partitions not claimed yet (paused until a claim succeeds)
        self._unclaimed: set[int] = set()
        #: the HTTP layer's read-only SQLite connection (see :attr:`reads`)
        self._reads: Store | None = None
        self._reads_lock = threading.Lock()
        #: predictions partitions revoked by a rebalance still under way: kafka-python keeps
        #: them in the assignment (not fetched) until the join completes, and the group's
        #: generation moves on before that, so a claim of one now would be taken as current
        #: and take it back from the member it goes to; never claimed again until assigned
        self._revoking: set[int] = set()
        self._label_partitions_warned = False
        #: labels partitions assigned here and paused: no predictions partition of that number held
        self._label_orphans: list[int] = []
        self._claim_retry_at = 0.0
        #: every assigned partition was paused for a storage outage (see :meth:`_stay_in_group`)
        self._outage_paused = False
        #: monotonic times the stop was asked and the store last refused a flush
        self._stop_asked_at = float("inf")
        self._flush_failed_at = float("-inf")
        self._consumer: Any = None
        self._last_flush = time.monotonic()
        self._tick_due = threading.Event()
        #: seconds rebalance callbacks took inside the current poll() (excused from idleness)
        self._busy_in_poll = 0.0
        self._scheduler: Any = None
        self._http: Any = None
        self._want_http = http
        self._storage_error: str | None = None
        #: the same failure as :func:`storage.db.brief_reason` words it (no path, host or role)
        self._storage_brief: str | None = None
        self._notified_ready = False
        self._status_at = 0.0
        self._status_count = 0
        self._reload_due = threading.Event()
        #: time.monotonic() of the consumer loop's last turn: what the liveness checks
        #: (systemd's watchdog, /healthz) watch
        self.loop_turned_at = time.monotonic()
        self._looping = False
        #: seconds without a turn of the running loop after which it counts as stalled
        #: (/healthz and /readyz 503): a turn waits on the store for a few statements at
        #: most, each bounded by storage.statement_timeout, unless the store stopped
        #: answering altogether (a frozen host, a proxy that holds the socket open)
        self.stall_after = max(STALL_AFTER_MIN_S, 2 * config.storage.statement_timeout.total_seconds())
        #: kafka.dead_letter_topic's producer (monitor/service/dead_letter_topic.py), if set
        self.dead_letter_topic: Any = None

    @property
    def storage_error(self) -> str | None:
        """The storage failure that paused consumption, or None while storage is healthy."""
        return self._storage_error

    @property
    def storage_error_brief(self) -> str | None:
        """:attr:`storage_error` as an unauthenticated client may see it: its kind and a
        fixed phrase (:func:`storage.db.brief_reason`), or None while storage is healthy."""
        return None if self._storage_error is None else self._storage_brief

    @property
    def paused_for_storage(self) -> bool:
        """Whether the consumer loop found the store away and holds every assigned partition
        paused (consuming nothing, still taking part in the group) until a flush or
        keepalive reaches the store again; False otherwise, and before the loop starts."""
        return self._outage_paused

    def assigned_partitions(self, topic: str | None = None) -> frozenset[int]:
        """The partitions of ``topic`` (the predictions topic by default) Kafka assigns to
        this member now, claimed in the store or not; empty before the first assignment,
        while (re)connecting and once the consumer is closed. A copy: read-only."""
        return frozenset(self._owned(topic))

    def paused_partitions(self) -> frozenset[tuple[str, int]]:
        """``(topic, partition)`` of the assigned partitions the consumer holds paused now
        (not claimed yet, or a storage outage); empty without a consumer. A copy."""
        try:
            return frozenset((tp.topic, tp.partition) for tp in self._consumer.paused())
        except Exception:  # noqa: BLE001 - no consumer (before it is made, closing)
            return frozenset()

    def unclaimed_partitions(self) -> frozenset[int]:
        """The predictions partitions Kafka assigns to this member that it does not hold in
        the store (another instance holds them at a newer group generation, or the store
        was away at the claim): paused, nothing of them consumed; claimed again every
        :data:`CLAIM_RETRY_SECONDS`. A copy: read-only."""
        return frozenset(set(self._unclaimed) & self._owned())

    def stalled_for(self) -> float | None:
        """Seconds since the running consumer loop last turned, once that exceeds
        :attr:`stall_after`; None while it turns (and before it starts, after it ends)."""
        if not self._looping:
            return None
        quiet = time.monotonic() - self.loop_turned_at
        return quiet if quiet > self.stall_after else None

    @property
    def is_ready(self) -> bool:
        """Consuming: partitions assigned, Kafka reachable, the store healthy, the loop turning."""
        return (self.ready.is_set() and self.kafka_connected and self._storage_error is None
                and self.stalled_for() is None)

    @property
    def reads(self) -> Store:
        """The store the HTTP API, the dashboard and /metrics read: on SQLite a read-only
        connection of its own (opened at the first read), so a read does not wait behind
        the consumer's connection while it waits on a lock (a dashboard took 37 s); a
        shared store's pool serves every thread already."""
        if self.store.shared:
            return self.store
        if self._reads is None:
            with self._reads_lock:
                if self._reads is None:
                    self._reads = Store(self.store.path, readonly=True, busy_timeout_ms=READ_BUSY_TIMEOUT_MS)
        return self._reads

    @property
    def store_suspect(self) -> bool:
        """Whether a read of the store may fail or hang now (a storage error, a stalled
        loop): the dashboard and /metrics then show what is in memory without asking it."""
        return self._storage_error is not None or self.stalled_for() is not None

    # -- lifecycle ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            if self.stop_event.is_set():
                log.warning("second signal: exiting now")
                os._exit(1)
            timeout = self.config.daemon.shutdown_timeout.total_seconds()
            log.info("signal %s: draining (at most %.0fs)", signal.Signals(signum).name, timeout)
            self.stop()
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
        if not self.stop_event.is_set():
            self._stop_asked_at = time.monotonic()
        self.stop_event.set()

    def _drain_timed_out(self) -> None:
        log.error("drain did not finish within daemon.shutdown_timeout (a store or broker that does not"
                  " answer): exiting now; %s; offsets are committed only up to what is stored, so those"
                  " rows are read from Kafka again at the next start", self._unflushed())
        os._exit(1)

    @property
    def labels_topic(self) -> str | None:
        """The labels topic this daemon reads (None: no label join, or switched off)."""
        labels = self.pipeline.labels
        return labels.topic if labels is not None and labels.enabled else None

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the newest known offset, per assigned partition of the predictions
        topic and of the labels topic (``/metrics``)."""
        positions: dict[str, Mapping[int, int]] = {self.config.kafka.predictions_topic: self.pipeline.positions}
        if self.labels_topic is not None:
            positions[self.labels_topic] = self.pipeline.labels.positions
        return consumer_lag(self._consumer, positions)

    def _while_store_up(self, job: Callable[[], Any]) -> Callable[[], None]:
        """``job`` as a scheduled job that stands aside while the consumer loop knows the
        store is away (its last flush failed): the loop's flush retry alone asks the store
        until it is back. Each job would only fail after waiting for it (on SQLite the
        busy timeout, 10 s, holding the one connection the flush retry and the final flush
        of a stop then queue behind)."""

        def run() -> None:
            if self._store_up:
                job()

        return run

    def run(self) -> int:
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415

        started = time.monotonic()
        log_startup(self, version=package_version(), resumed_partitions=len(partition_rows(self.store, self.pipeline.topic)))

        sched = BackgroundScheduler(timezone="UTC")
        sched.add_job(self._tick_due.set, "interval", seconds=self.config.daemon.tick_interval.total_seconds(), id="tick")
        # through self.alerting at each run: a reload swaps it
        sched.add_job(self._while_store_up(lambda: self.alerting.deliver_due()), "interval", seconds=1.0, id="outbox", max_instances=1, coalesce=True)
        sched.add_job(self._while_store_up(lambda: self.alerting.tick()), "interval", seconds=self.config.daemon.tick_interval.total_seconds(), id="alert-tick", max_instances=1, coalesce=True)
        if self.config.kafka.dead_letter_topic:
            from monitor.service.dead_letter_topic import DeadLetterTopic  # noqa: PLC0415

            self.dead_letter_topic = DeadLetterTopic(self.config, self.store, owner=self.instance)
            sched.add_job(self._while_store_up(self.dead_letter_topic.run_once), "interval", seconds=1.0, id="dead-letter-topic", max_instances=1, coalesce=True)
        sched.add_job(self._while_store_up(self.prune), "interval", seconds=self.prune.interval.total_seconds(), id="prune", max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        if self.store.shared:
            from monitor.service.peers import Peers  # noqa: PLC0415
            from storage.instances import ANNOUNCE_EVERY  # noqa: PLC0415

            peers = Peers(self.store, self.instance, self._config_facts, self.clock)
            sched.add_job(self._while_store_up(peers.tick), "interval", seconds=ANNOUNCE_EVERY.total_seconds(), id="peers",
                          max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        sched.start()
        self._scheduler = sched
        if self._want_http:
            from monitor.web.server import ApiServer  # noqa: PLC0415

            self._http = ApiServer(self)
            try:
                self._http.start()
            except Exception:  # ListenError: nothing consumed yet; stop what started
                self._http = None
                self._shutdown()
                raise
        self._notify_started()
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
        labels, labels_topic = self.pipeline.labels, self.labels_topic
        topics = [topic] if labels_topic is None else [topic, labels_topic]
        daemon = self

        class Listener(AsyncConsumerRebalanceListener):
            """Runs on kafka-python's IO loop, the loop that sends the group's heartbeats:
            what asks the store (flush, claims) runs on a thread of its own meanwhile
            (:meth:`Daemon._off_the_io_loop`), the commit is awaited on the loop."""

            async def on_partitions_revoked(self, revoked: Any) -> None:
                daemon._revoking |= {tp.partition for tp in revoked if tp.topic == topic}
                with daemon._inside_poll_but_busy():
                    offsets = await daemon._off_the_io_loop(lambda: daemon._flush_for_rebalance(revoked))
                    if offsets is not None:
                        await daemon._commit_async(offsets, revoked)

            async def on_partitions_lost(self, lost: Any) -> None:
                # evicted from the group: others may own them already, so no commit; the
                # flush stores what is in hand only where our claim still stands
                gone = {tp.partition for tp in lost if tp.topic == topic}
                daemon._revoking |= gone

                def flush_and_release() -> None:
                    daemon._flush_for_rebalance(lost)
                    daemon.pipeline.release_partitions(daemon._owned() - gone, mark_free=daemon._store_up)

                with daemon._inside_poll_but_busy():
                    await daemon._off_the_io_loop(flush_and_release)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                daemon._revoking.clear()  # the assignment is settled: what it holds is ours
                with daemon._inside_poll_but_busy():
                    # eager assignors: ``assigned`` is the whole assignment; cooperative ones:
                    # only the added partitions. The consumer's assignment is the whole one in both.
                    # stop counting what went away at once, before anything is awaited
                    await daemon._off_the_io_loop(
                        lambda: daemon.pipeline.release_partitions(daemon._owned(), mark_free=daemon._store_up))
                    committed: dict[int, int] = {}
                    if not daemon.store.shared and daemon._store_up:
                        # a store of its own may hold a stale state of a partition that comes back
                        committed = await daemon._committed_async(daemon._owned())
                    await daemon._off_the_io_loop(lambda: daemon._on_assigned(committed))
                    if labels is not None and labels_topic is not None:
                        labels.release_partitions(daemon._owned(labels_topic))
                        for tp in assigned:
                            # where the join's durable state resumes (the claimed rows, or the
                            # single-row state for partitions no row keeps)
                            if tp.topic == labels_topic and tp.partition in labels.positions:
                                daemon._consumer.seek(tp, labels.positions[tp.partition])
                                labels.reading_from(tp.partition, labels.positions[tp.partition])
                    daemon._notify_ready()
                    daemon.on_event("assigned", {"partitions": sorted(daemon._owned())})

        from monitor.service.kafka_outage import (  # noqa: PLC0415
            BootstrapWatch,
            KafkaOutage,
            is_connection_error,
        )

        retry_max = max(30.0, float(self.config.kafka.consumer_options.get("reconnect_backoff_max_ms", 0)) / 1000)
        outage = KafkaOutage(self.config.kafka.bootstrap_servers, retry_max=retry_max, status=self.systemd.status)
        backoff = 1.0
        while not self.stop_event.is_set():
            connected = False
            try:
                with BootstrapWatch(outage):  # the first refused connection, not 30 s later
                    consumer = self._connect(make_consumer)
                if consumer is None:  # stop asked for while the client bootstrapped
                    return
                outage.recovered()
                connected = True
                self._consumer = consumer
                self._revoking = set()
                self._consumer.subscribe(topics, listener=Listener())
                self.kafka_connected = True
                backoff = 1.0
                self._poll_loop()
                return
            except KafkaError as exc:
                self.kafka_connected = False
                self.ready.clear()
                if connected and not is_connection_error(exc):
                    # the brokers answered (an authorisation failure, say): no outage, and
                    # the reconnect that follows is no "reachable again"
                    outage.error(str(exc))
                else:
                    outage.failed(str(exc))  # said once, then once a minute while it lasts
                self.systemd.status(f"kafka: {exc}; reconnecting in {backoff:.0f}s")
                self._close_consumer()
                self._wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _connect(self, make_consumer: Any) -> Any:
        """A new consumer, made on a helper thread: the client's bootstrap can block for
        tens of seconds (broker away, SASL refused), and a SIGTERM meanwhile must stop the
        daemon at once. Returns None when stopped first (the client is closed when it
        is made); raises what making it raised."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def make() -> None:
            try:
                box["consumer"] = make_consumer(self.config)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
                box["error"] = exc
            done.set()
            if self.stop_event.is_set() and "consumer" in box:
                with contextlib.suppress(Exception):
                    box["consumer"].close()

        threading.Thread(target=make, name="driftwarden-kafka-connect", daemon=True).start()
        while not done.is_set():
            if self.stop_event.is_set():
                return None
            self._wait(0.2)
        if "error" in box:
            raise box["error"]
        return box["consumer"]

    async def _off_the_io_loop(self, work: Callable[[], T]) -> T:
        """``work()`` (store calls of a rebalance callback) on a thread of its own, awaited
        from kafka-python's IO loop: the loop goes on sending the group's heartbeats while
        the store makes it wait. Run on the loop itself, a flush waiting out SQLite's busy
        timeout (10 s, as long as the default ``kafka.session_timeout``) or PostgreSQL's
        ``statement_timeout`` (30 s) stopped every heartbeat for that long, and the
        coordinator could evict the member in the middle of the rebalance.

        The wait itself is as long as the store makes it (each store call is bounded by
        those timeouts); the consumer thread waits meanwhile inside ``poll()``, as it waits
        for any rebalance, so nothing else touches the pipeline. A store that never
        answers stalls the loop, which ``/healthz`` and systemd's watchdog report.
        Returns what ``work`` returns and raises what it raises. Without the client's
        loop (its internals changed) ``work`` runs inline, as before."""
        from kafka.future import Future  # noqa: PLC0415

        net = getattr(getattr(self._consumer, "_coordinator", None), "_net", None)
        if net is None or not hasattr(net, "call_soon_threadsafe"):
            return work()
        done: Any = Future()

        def run() -> None:
            outcome: tuple[bool, Any]
            try:
                outcome = (True, work())
            except BaseException as exc:  # noqa: BLE001 - raised again on the loop
                outcome = (False, exc)

            def settle() -> None:  # returns None: the loop would take a Future for a wait
                ok, got = outcome
                if ok:
                    done.success(got)
                else:
                    done.failure(got)

            try:
                # resolved on the loop's own thread: a Future's callbacks reschedule the
                # awaiting task with the loop's (not thread-safe) call_soon
                net.call_soon_threadsafe(settle)
            except Exception as exc:  # noqa: BLE001 - the loop is closed: no one awaits it
                log.debug("rebalance callback: the IO loop is gone: %s", exc)

        threading.Thread(target=run, name="driftwarden-rebalance", daemon=True).start()
        return await done  # type: ignore[no-any-return]

    def _owned(self, topic: str | None = None) -> set[int]:
        """The partitions of ``topic`` (the predictions topic by default) Kafka assigns to
        this member now."""
        topic = topic or self.config.kafka.predictions_topic
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
        self._check_label_partitions()
        # all of them, kept ones too: the claim records the new generation (a member of an
        # older one cannot take them back) and tells whether what we hold is still current
        self._unclaimed = set(owned)
        if self._store_up:
            self._claim(force=True, committed=committed)
        else:
            # the store is away: a claim would only wait for it, holding the rebalance up;
            # paused, claimed by the consumer loop once the store is back
            log.warning("storage unavailable: assigned partitions %s stay paused until it is back and"
                        " they are claimed", sorted(owned))
            self._pause_partitions(set(owned))
        self.ready.set()

    def _check_label_partitions(self) -> None:
        """On a shared store, labels partition N is joined by the owner of predictions
        partition N (see :mod:`monitor.labels.join`). When the two topics' partition counts
        differ, labels of some models are joined by an instance that does not hold their
        predictions (or never): while other instances hold some predictions partitions, the
        join then looks up in the store the ids it does not hold in memory
        (:attr:`LabelJoin.lookup_misses`); this says so once."""
        labels = self.pipeline.labels
        if labels is None or labels.topic is None or not self.store.shared:
            return
        try:
            n = self._consumer.partitions_for_topic(labels.topic)
        except Exception:  # noqa: BLE001 - unknown: keep what was decided
            return
        preds = self.pipeline.topic_partitions
        if not n or not preds:
            return
        # an instance holding every predictions partition stores every prediction itself
        lookup = len(n) != preds and len(self._owned()) < preds
        if lookup != labels.lookup_misses:
            labels.lookup_misses = lookup
            log.info("label join: ids not held in memory are %s", "looked up in the store (other instances hold"
                     " predictions partitions)" if lookup else "not looked up in the store (no longer needed)")
        if len(n) != preds and not self._label_partitions_warned:
            self._label_partitions_warned = True
            log.warning(
                "labels topic %s has %d partitions, predictions topic %d: with a shared store the"
                " labels of partition N are joined by the owner of predictions partition N%s; labels"
                " of predictions another instance stored are looked up in the store by id (while the"
                " predictions topic is shared between instances: a read of the model's held"
                " predictions per flush with such labels); give both"
                " the same partition count and key both by model (README \"Scaling out\")",
                labels.topic, len(n), preds,
                "" if len(n) <= preds else
                f" (labels on partition {preds} are not joined at all)" if len(n) == preds + 1 else
                f" (labels on partitions {preds}..{len(n) - 1} are not joined at all)",
            )

    def _claim(self, force: bool = False, committed: dict[int, int] | None = None) -> None:
        """Claim the assigned partitions not claimed yet, seek them to their stored state;
        those still unclaimed stay paused (tried again every :data:`CLAIM_RETRY_SECONDS`)."""
        from kafka import TopicPartition  # noqa: PLC0415

        if not self._unclaimed or (not force and time.monotonic() < self._claim_retry_at):
            return
        topic = self.config.kafka.predictions_topic
        self._unclaimed &= self._owned() - self._revoking
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
        # the labels partition of the same number goes with the claim (see monitor.labels.join)
        labels = self.pipeline.labels
        orphans: list[Any] = []
        if self.labels_topic is not None:
            lowned = self._owned(labels.topic)
            ltps = self._label_partitions(wanted)
            for tp in ltps:
                if tp.partition not in refused and tp.partition in labels.positions:
                    self._consumer.seek(tp, labels.positions[tp.partition])
                    labels.reading_from(tp.partition, labels.positions[tp.partition])
            tps = tps + ltps
            if self.store.shared:
                # a labels partition whose predictions partition this instance does not hold
                # is not its to join (see monitor.labels.join): not fetched at all, rather
                # than fetched and dropped at every poll (again from its committed offset
                # after each rebalance)
                orphans = [TopicPartition(labels.topic, p) for p in sorted(lowned - set(self.pipeline.claims))]
                numbers = [tp.partition for tp in orphans]
                if numbers != self._label_orphans:
                    self._label_orphans = numbers
                    if numbers:
                        log.info("labels topic %s: partition(s) %s not read here (this instance holds no"
                                 " predictions partition of that number; see README \"Scaling out\")",
                                 labels.topic, ", ".join(map(str, numbers)))
        self._unclaimed = set(refused)
        self._claim_retry_at = time.monotonic() + CLAIM_RETRY_SECONDS
        paused = [tp for tp in tps if tp.partition in refused] + orphans
        resumed = [tp for tp in tps if tp.partition not in refused]
        for action, parts in ((self._consumer.pause, paused), (self._consumer.resume, resumed)):
            try:  # apart: a pause that fails must not leave the claimed partitions paused
                if parts:
                    action(*parts)
            except Exception as exc:  # noqa: BLE001 - assignment changed meanwhile
                log.debug("pause/resume: %s", exc)

    def _label_partitions(self, partitions: Iterable[int]) -> list[Any]:
        """The labels partitions of these numbers assigned here (none without a label join)."""
        from kafka import TopicPartition  # noqa: PLC0415

        topic = self.labels_topic
        if topic is None:
            return []
        owned = self._owned(topic)
        return [TopicPartition(topic, p) for p in sorted(partitions) if p in owned]

    def _pause_partitions(self, partitions: set[int]) -> None:
        """Pause these predictions partitions and the labels partitions of the same numbers
        (resumed by the claim that makes them ours, see :meth:`_claim`)."""
        from kafka import TopicPartition  # noqa: PLC0415

        tps = [TopicPartition(self.config.kafka.predictions_topic, p) for p in sorted(partitions)]
        tps += self._label_partitions(partitions)
        try:
            self._consumer.pause(*tps)
        except Exception as exc:  # noqa: BLE001 - assignment changed meanwhile
            log.debug("pause: %s", exc)

    def _poll_loop(self) -> None:
        # Idle clocks: only time spent waiting in poll() counts as a quiet stream. The
        # rest of each turn (flushes and claims that wait on the store, figures, reloads,
        # rebalance callbacks that run inside poll()) is excused, and a pause (Kafka or the
        # store away, partitions not claimed) restarts them. Otherwise a store that holds
        # the loop up past idle_timeout closes the open windows by the wall clock and the
        # rows still waiting in Kafka all turn late.
        self.pipeline.touch()  # what came before (start-up, a reconnect) was no quiet stream
        mark = time.monotonic()
        self.loop_turned_at = mark
        self._looping = True
        try:
            self._turn_until_stopped(mark)
        finally:
            self._looping = False

    def _turn_until_stopped(self, mark: float) -> None:
        k = self.config.kafka
        timeout_ms = int(k.poll_timeout.total_seconds() * 1000)
        commit_every = k.commit_interval.total_seconds()
        while not self.stop_event.is_set():
            self._service_tick()
            # assigned but not (or no longer: another instance claimed it) ours in the store;
            # not while a rebalance revokes it (its next owner may hold the claim already)
            newly = self._owned() - set(self.pipeline.claims) - self._revoking - self._unclaimed
            if newly:
                # paused at once, not at the next claim attempt (up to CLAIM_RETRY_SECONDS
                # later): what the consumer fetched of them meanwhile would be dropped as not
                # ours while its position moved past it
                self._pause_partitions(newly)
                self._unclaimed |= newly
            if self._unclaimed and self._store_up:  # during an outage: once it is over
                self._claim()
                if self._unclaimed:  # those partitions stay paused
                    self.pipeline.touch()
            if self._storage_error is not None:
                # storage is failing: do not consume more; retry the flush
                self.pipeline.touch()
                if self._outage_paused and self._coordinator_connected() and not self._kafka_reachable():
                    # a rebalance under way: finish it first (a flush attempt waits on the
                    # store for seconds, while the join needs poll() to go on). Not while the
                    # broker is away: no join to finish, and the store may be back already
                    # (the scheduled jobs, no-data alerts among them, wait for the retry)
                    self._stay_in_group()
                    continue
                if not self._flush_and_commit(force=True):
                    self._stay_in_group()
                    continue
                self._resume_after_outage()
            self._busy_in_poll = 0.0
            polling = time.monotonic()
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=k.max_poll_records)
            polled_at = time.monotonic()
            self.pipeline.excuse(timedelta(seconds=polling - mark + self._busy_in_poll))
            mark = polled_at
            self._dispatch(polled)
            self._confirm_skipped()
            if self.pipeline.claims.keys() - self._owned():
                # a cooperative rebalance revoked partitions without assigning any
                self.pipeline.release_partitions(self._owned())
            reachable = self._kafka_reachable()
            if reachable != self.kafka_connected:
                if reachable:
                    log.info("kafka: consuming (group coordinator reachable, group stable)")
                elif self.ready.is_set() and self._coordinator_connected():
                    # routine when instances join or leave: not worth an error
                    log.info("kafka: group rebalancing; not ready until it settles")
                elif self.ready.is_set():
                    log.error("kafka: group coordinator unreachable; not ready")
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
                        self._storage_failed(exc)  # paused; the next flush or keepalive clears it
                now = time.monotonic()
                self.pipeline.excuse(timedelta(seconds=now - mark))
                mark = now
                self.pipeline.tick()
            if self.pipeline.has_pending or time.monotonic() - self._last_flush >= commit_every:
                self._flush_and_commit()

    def _stay_in_group(self, seconds: float = 2.0) -> None:
        """The store is away: consume nothing, but keep taking part in the consumer group.

        Every assigned partition is paused and ``poll()`` is called all the same: without
        it the member would not rejoin when the group rebalances (an instance joining or
        leaving), holding up the whole group's rebalance for as long as the outage lasts
        (up to ``max.poll.interval.ms``, then dropped from the group). The rebalance
        listener, which then runs, leaves the store alone while it is known to be away."""
        self._outage_paused = True
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:  # each turn: a rebalance may have assigned more
                assigned = list(self._consumer.assignment())
                if assigned:
                    self._consumer.pause(*assigned)
            except Exception as exc:  # noqa: BLE001 - assignment changed meanwhile
                log.debug("pause: %s", exc)
            self._advancing()
            self._maybe_reload()
            polled = self._consumer.poll(timeout_ms=200, max_records=self.config.kafka.max_poll_records)
            self.pipeline.touch()
            self._dispatch(polled)  # rows fetched before the pause: kept, not dropped

    def _resume_after_outage(self) -> None:
        """The store answers again: claim every assigned partition again (as after an
        assignment: it tells whether what is held is still current), which resumes those
        claimed and keeps the others paused."""
        if not self._outage_paused:
            return
        self._outage_paused = False
        self._unclaimed = set(self._owned()) - self._revoking
        self._claim(force=True)
        # the claim resumes the labels partitions of the numbers it claims; with a store of
        # its own a labels partition of no predictions partition held here (the labels topic
        # has more partitions) is read here too, and :meth:`_stay_in_group` paused it as well
        # (on a shared store it is not this instance's to join: it stays paused)
        if self.labels_topic is not None and not self.store.shared:
            from kafka import TopicPartition  # noqa: PLC0415

            held = self._owned()
            extra = [TopicPartition(self.labels_topic, p) for p in sorted(self._owned(self.labels_topic) - held)]
            try:
                if extra:
                    self._consumer.resume(*extra)
            except Exception as exc:  # noqa: BLE001 - assignment changed meanwhile
                log.debug("resume: %s", exc)

    def _dispatch(self, polled: Mapping[Any, list[Any]]) -> None:
        """Hand polled records to the pipeline, by topic."""
        k = self.config.kafka
        labels = self.pipeline.labels
        for tp, records in polled.items():
            if tp.topic == k.predictions_topic:
                self.pipeline.process_records(records)
            elif labels is not None and tp.topic == labels.topic:
                self.pipeline.process_label_records(records)

    # -- systemd ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _inside_poll_but_busy(self) -> Iterator[None]:
        """A rebalance callback: it runs inside ``poll()`` but is not waiting for rows;
        its time is excused after the poll returns (see :meth:`_poll_loop`)."""
        started = time.monotonic()
        try:
            yield
        finally:
            self._busy_in_poll += time.monotonic() - started

    def _notify_started(self) -> None:
        """READY=1: start-up is over (config, references, store, scheduler, HTTP API up).

        Not at the first partition assignment: a daemon started while Kafka is away would
        then be killed at ``TimeoutStartSec`` and restarted in a loop, instead of running,
        answering ``/healthz`` and reporting the outage, as it does when Kafka goes away
        later. Kafka's state is in ``STATUS=`` (:meth:`status_text`, the reconnect lines)
        and ``/readyz`` (503 until partitions are assigned and the group is stable)."""
        self.systemd.ready(self.status_text(0.0))

    def _notify_ready(self) -> None:
        """``STATUS=consuming`` the first time partitions are assigned."""
        if not self._notified_ready:
            self._notified_ready = True
            self.systemd.status("consuming")

    @contextlib.contextmanager
    def _kept_alive(self, seconds: float) -> Iterator[None]:
        """Report the loop as turning (systemd's watchdog, /healthz) while the block runs,
        for at most ``seconds``: bounded work on the consumer loop that reports no progress
        of its own, such as a reload preparing models again (its references read, its
        thresholds calibrated: tens of seconds for a large reference, past the unit's
        ``WatchdogSec=60``, which killed the daemon in the middle of the reload). Past
        ``seconds`` the block is taken for stuck, as any other stalled turn."""
        step = max(0.05, min(1.0, (self.systemd.watchdog or 2.0) / 4))
        with repeated(self._advancing, step, name="kept-alive", for_at_most=seconds):
            yield

    def _wait(self, seconds: float) -> None:
        """``stop_event.wait`` that keeps kicking the watchdog: a deliberate pause
        (reconnect backoff, storage retry) is not a stuck loop."""
        deadline = time.monotonic() + seconds
        step = max(0.05, min(1.0, (self.systemd.watchdog or 2.0) / 4))
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._advancing()
            self._maybe_reload()
            self._retry_store_between_consumers()
            self.stop_event.wait(min(step, left))

    def _retry_store_between_consumers(self) -> None:
        """No consumer (reconnecting to Kafka) and the store known away: retry the flush
        every 2 s all the same. Only the consumer loop's retry clears the storage error, and
        the scheduled jobs (outbox, the alert tick with its no-data rules, prune) stand
        aside until it does: a broker outage must not keep them off once the store is back.
        Nothing is committed meanwhile (no consumer); the next assignment claims again."""
        if self._consumer is not None or self._store_up:
            return
        if time.monotonic() - self._flush_failed_at < 2.0:
            return
        if self._flush_and_commit(force=True):
            self._outage_paused = False  # the next assignment claims (and resumes) what it gives

    def _advancing(self) -> None:
        """The loop turned, or long work inside one turn made progress: what the liveness
        checks (systemd's watchdog, /healthz) watch."""
        self.loop_turned_at = time.monotonic()
        self.systemd.heartbeat()

    def _confirm_skipped(self) -> None:
        """Ask the broker about the gaps the last poll showed (a ListOffsets request per
        topic, only after a poll that had one): were their records deleted unread?"""
        skipped = self.pipeline.skipped
        if skipped is not None and skipped.pending:
            skipped.confirm(functools.partial(log_starts, self._consumer))

    def _service_tick(self) -> None:
        """Called on every turn of the consumer loop: watchdog kick, reload, the status line."""
        self._advancing()
        if self.pipeline.skipped is not None:
            self.pipeline.skipped.tell()  # what was skipped within the last minute, summed
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
            with self._kept_alive(RELOAD_KEEPALIVE_SECONDS):
                plan = prepare_reload(self, self.config_path)
            plan.apply(self)
        except ReloadRefused as exc:
            log.error("reload refused, the running config stays: %s", exc)
            self.systemd.ready(f"reload refused: {exc}")
            self.on_event("reload", {"ok": False, "reason": str(exc)})
            return
        log.info("reloaded %s: %s", self.config_path, plan.summary)
        resettle_heap()  # what the old config left in reference cycles is freed, the new one frozen
        for warning in plan.config.warnings:  # e.g. a secret file every user can read
            logging.getLogger("driftwarden.config").warning("%s", warning)
        self.systemd.ready(f"reloaded: {plan.summary}")
        self.on_event("reload", {"ok": True, "summary": plan.summary})

    def status_text(self, rate: float) -> str:
        """One line for ``systemctl status``: what the daemon is doing, events/s, open windows, lag.

        A storage failure is named as ``/readyz`` names it (:attr:`storage_error_brief`):
        anyone on the host may read ``systemctl status``, and the error's text names the
        SQLite path or the PostgreSQL host, role and database (it is in the log)."""
        brief = self.storage_error_brief
        if brief is not None:
            return f"paused: storage failing: {brief}"
        if not self.ready.is_set():
            return "waiting for Kafka partition assignment"
        if not self.kafka_connected:
            return "paused: Kafka group coordinator unreachable or group rebalancing"
        open_windows = sum(len(rt.windows.open) for rt in self.pipeline.models.values())
        line = f"consuming: {rate:.0f} events/s, {open_windows} open windows, lag {self._lag()}"
        return line + self._unclaimed_text()

    def _unclaimed_text(self) -> str:
        """What the status line says of the assigned partitions not held in the store
        (empty when there are none)."""
        unclaimed = sorted(self.unclaimed_partitions())
        if not unclaimed:
            return ""
        held = {self.pipeline.refused[p][0] for p in unclaimed if p in self.pipeline.refused}
        by = f" (held by {', '.join(sorted(held))})" if held else ""
        return f"; not consuming assigned partition(s) {', '.join(map(str, unclaimed))}: not claimed in the store{by}"

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

    def _coordinator_connected(self) -> bool:
        """Whether the group coordinator is connected (the group may be rebalancing)."""
        try:
            cid = self._consumer._coordinator.coordinator_id
            return cid is not None and bool(self._consumer._client.connected(cid))
        except Exception:  # noqa: BLE001 - client internals changed: say unreachable
            return False

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

    def _storage_failed(self, exc: StorageError) -> None:
        """The store refused or is away: say so once per distinct error, and show it in
        ``/readyz`` and the status until a flush or keepalive reaches the store again."""
        self._flush_failed_at = time.monotonic()
        known = self._storage_error
        # the brief first: a reader between the two (/readyz on another thread) would see an
        # error without its brief, or the brief of the failure before
        self._storage_brief = brief_reason(exc)
        self._storage_error = str(exc)
        if known != str(exc):
            log.error("storage: %s; consumption paused until it clears", exc)
        self.on_event("storage_error", {"error": str(exc)})

    def _flush_and_commit(self, force: bool = False) -> bool:
        try:
            offsets = self.pipeline.flush()
            if offsets is None:
                # nothing to write: an idle owner's rows stay fresh and lost ones are found,
                # and this is how a daemon with nothing to write finds its store away
                self.pipeline.keepalive()
        except StorageError as exc:
            # the flush's alert transitions stay with the alerting: if its COMMIT raised it
            # may have committed, and the pipeline says so (flush_outcome) once it knows
            self.pipeline.touch()  # paused from here on: the rows waiting in Kafka are not late
            self._storage_failed(exc)
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

    @property
    def _store_up(self) -> bool:
        """Whether the store answered the last time the consumer loop asked (no storage error)."""
        return self._storage_error is None

    def _flush_for_rebalance(self, partitions: Any) -> dict[int, int] | None:
        """Flush before partitions go (from the rebalance listener, on a thread of its own:
        :meth:`_off_the_io_loop`); the offsets to commit, or None when nothing may be
        committed (the store is away). During a known storage outage the store is not even
        asked: each call would wait for it (10 s on a PostgreSQL that refuses connections)
        with the whole group's rebalance waiting."""
        gone = sorted(tp.partition for tp in partitions if tp.topic == self.config.kafka.predictions_topic)
        if self._store_up:
            try:
                self.pipeline.flush()
                return self.pipeline.commit_offsets()
            except StorageError as exc:
                self._storage_failed(exc)
        log.warning(
            "rebalance while the store is unavailable: partitions %s go without a flush and without an"
            " offset commit; %s; their next owner re-reads them from Kafka", gone, self._unflushed(),
        )
        return None

    def _unflushed(self) -> str:
        """What is held in memory and not stored, for the log lines of a rebalance or a stop
        during a storage outage."""
        try:
            p = self.pipeline
            resume = p.resume_offsets()
            held = {q: (resume.get(q), o) for q, o in sorted(p.positions.items()) if resume.get(q, o) < o}
            closed, dead = p.pending_counts
            parts = ", ".join(f"{q}: offsets {a}..{b - 1}" for q, (a, b) in held.items()) or "none"
            return (f"not stored: {closed} closed window(s), {dead} dead letter(s) and the rows"
                    f" consumed since the last stored state (partition {parts})")
        except Exception as exc:  # noqa: BLE001 - a log line must not fail a stop
            return f"not stored: unknown ({exc})"

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
        """Drain: one final flush and commit, the outbox, the partitions given up.

        The final flush is tried once, however the store did before (it may be back),
        and waits on it no longer than any store call does; not at all when the consumer
        loop's own retry, made after the stop was asked, already found the store away. If the store cannot take it,
        the stop goes on at once without asking the store for anything else (each call
        would wait as long again, and the whole stop would outlast the stop timeout of
        systemd or Kubernetes and end in SIGKILL): one ERROR line says what was not
        stored. Nothing is lost: offsets were committed only up to what is stored, so the
        next start (or the partitions' next owner) reads those rows from Kafka again."""
        if self._scheduler is not None:
            # no scheduled job (outbox, alert tick, dead-letter topic) queues for the store
            # ahead of the final flush: on SQLite each would wait out the busy timeout there
            self._scheduler.shutdown(wait=False)
        if self._storage_error is not None and self._flush_failed_at >= self._stop_asked_at:
            # the loop's own retry, made after the stop was asked, found the store away:
            # asking again would only wait as long again
            log.info("final flush not tried: the store was away at the last attempt, after the stop")
        else:
            try:
                self.pipeline.tick()
                self._flush_and_commit(force=True)
            except Exception as exc:  # noqa: BLE001
                # not a storage error (_flush_and_commit takes those): the store answers, so
                # the outbox is drained and the partitions given up as at any stop
                log.error("final flush failed: %s", exc)
        store_up = self._store_up
        if not store_up:
            log.error(
                "stopping with the store unavailable (%s): %s; offsets are committed only up to what"
                " is stored, so those rows are read from Kafka again at the next start",
                self._storage_error, self._unflushed(),
            )
            self.on_event("unflushed", {"error": self._storage_error})
        try:
            if store_up:
                self.alerting.drain(self.alerting.drain_timeout())
        except Exception as exc:  # noqa: BLE001
            log.error("final outbox run failed: %s", exc)
        self.prune.stop()
        if self.dead_letter_topic is not None:
            if store_up:
                self.dead_letter_topic.run_once()  # what the final flush stored
            self.dead_letter_topic.close()
        if self._http is not None:
            self._http.stop()
        self._close_consumer()  # its revoke listener leaves the store alone while it is away
        try:
            # a clean stop: the next owner may claim at once, whatever its generation
            if store_up:
                release_partitions(self.store, self.pipeline.topic, self.instance, self.pipeline.claims, self.clock())
        except StorageError as exc:
            log.warning("storage: cannot give partitions up: %s", exc)
        self.close()
        self.on_event("stopped", {})

    def close(self) -> None:
        """Give up what a daemon holds (its store connections, the state-dir lock, the
        systemd socket): the end of :meth:`run`, and what a daemon built but never run (a
        test, the demo's set-up) must call. Idempotent."""
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        if self._store_up or self.store.shared:
            self.store.close()
        else:  # a scheduler job may be waiting on the locked file for seconds
            self.store.close(timeout=1.0)
        self._state_lock.release()
        self.systemd.close()

    def _config_facts(self) -> dict[str, Any]:
        """This instance's config as the others of a shared store compare it (see
        :mod:`monitor.service.peers`); read at each announcement, so a reload shows."""
        from monitor.service.peers import config_facts  # noqa: PLC0415

        refs = {name: rt.prepared.reference.sha256 for name, rt in self.pipeline.models.items()}
        return config_facts(self.config, refs)

    def _close_consumer(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None
