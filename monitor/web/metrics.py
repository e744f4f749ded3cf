"""Prometheus exposition for one daemon, from its own registry (never the global one).

Names follow Prometheus' conventions (``_total`` counters, ``_seconds`` and ``_bytes``
units, ``_info`` for build facts). Label values are bounded: models, columns,
notifiers from the config; versions by the stream's caps; reasons are our codes;
partitions by the topic; segments (per-alert series only) by that family's cap. The registry also holds the process, platform and GC
collectors (``process_*``, ``python_*``). The drift gauges: :mod:`monitor.web.drift_metrics`;
the performance gauges: :mod:`monitor.web.performance_metrics`; one series per pending or
firing alert: :mod:`monitor.web.alert_metrics`.

Families read from the store (outbox, alerts, label join, drift and performance gauges, dead-letter
drops, database size) are left out of a scrape while the store is failing or the
consumer loop is stalled, or when a read fails: the in-memory families (``driftwarden_ready``
among them) are still served at once, and ``driftwarden_store_readable`` says whether
this scrape read the store.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from storage.db import StorageError

if TYPE_CHECKING:
    from monitor.web.view import DaemonView

log = logging.getLogger("driftwarden.metrics")


class DaemonMetrics:
    def __init__(self, daemon: DaemonView) -> None:
        from prometheus_client import (  # noqa: PLC0415
            CollectorRegistry,  # noqa: PLC0415
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )

        self.daemon = daemon
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        from monitor.web.alert_metrics import alert_families  # noqa: PLC0415
        from monitor.web.drift_metrics import drift_families  # noqa: PLC0415
        from monitor.web.performance_metrics import performance_families  # noqa: PLC0415

        d = self.daemon
        st = d.pipeline.stats
        rows = CounterMetricFamily("driftwarden_rows", "Valid prediction rows consumed", labels=[])
        rows.add_metric([], st.rows)
        yield rows
        dl = CounterMetricFamily("driftwarden_dead_letters", "Messages dead-lettered, by reason", labels=["reason"])
        for reason, n in sorted(st.dead_letters.items()):
            dl.add_metric([reason], n)
        yield dl
        late = CounterMetricFamily("driftwarden_late_rows", "Rows that arrived after their window closed", labels=["model"])
        for name, rt in d.pipeline.models.items():
            late.add_metric([name], rt.windows.late_total)
        yield late
        closed = CounterMetricFamily("driftwarden_windows_closed", "Windows closed and stored", labels=[])
        closed.add_metric([], st.windows_closed)
        yield closed
        errors = CounterMetricFamily(
            "driftwarden_window_errors", "Windows stored with status error (their figures raised)", labels=[]
        )
        errors.add_metric([], st.window_errors)
        yield errors
        capped = CounterMetricFamily(
            "driftwarden_capped_rows",
            "Rows whose version or segment value went to the __other__ bucket (cap or length)",
            labels=["model", "dimension"],
        )
        for name, rt in d.pipeline.models.items():
            for dim, n in rt.windows.capped_rows().items():
                capped.add_metric([name, dim], n)
        yield capped
        read = [True]  # whether every store read of this scrape answered
        yield from self._performance(d)
        yield from self._from_store(lambda: self._labels(d), read)
        ready = GaugeMetricFamily("driftwarden_ready", "1 when consuming and storage is healthy (as /readyz)")
        ready.add_metric([], 1.0 if d.is_ready else 0.0)
        yield ready
        unclaimed = GaugeMetricFamily(
            "driftwarden_unclaimed_partitions",
            "Predictions partitions assigned by Kafka but not claimed in the store (another instance holds them): not consumed",
        )
        unclaimed.add_metric([], float(len(d.unclaimed_partitions())))
        yield unclaimed
        wm = GaugeMetricFamily("driftwarden_watermark_seconds", "Event-time watermark per model", labels=["model"])
        for name, rt in d.pipeline.models.items():
            if rt.windows.event_watermark is not None:
                wm.add_metric([name], rt.windows.event_watermark / 1000)
        yield wm
        yield from self._observability()
        caps = {name: rt.config.limits.max_versions for name, rt in d.pipeline.models.items()}
        yield from self._from_store(lambda: drift_families(d.reads, caps), read)
        yield from self._from_store(lambda: performance_families(d.reads, self._performance_models(d)), read)
        yield from self._from_store(lambda: alert_families(d.reads, caps, datetime.now(UTC)), read)
        yield from self._from_store(lambda: self._outbox(d), read)
        yield from self._retention(d)
        yield from self._from_store(lambda: self._storage(d), read)
        yield from self._from_store(lambda: self._window_shapes(d), read)
        readable = GaugeMetricFamily(
            "driftwarden_store_readable",
            "1 when this scrape read the store; 0 when it is failing (its families are left out)",
        )
        readable.add_metric([], 1.0 if read[0] else 0.0)
        yield readable

    def _from_store(self, families: Callable[[], Iterable[Any]], read: list[bool]) -> list[Any]:
        """``families()`` read in full, or none (``read[0]`` set False) while the store is
        failing: a scrape never waits on a store known to be away, nor fails with it."""
        if not read[0] or self.daemon.store_suspect:  # one failed read is enough per scrape
            read[0] = False
            return []
        try:
            return list(families())
        except StorageError as exc:
            log.warning("metrics: store families left out of this scrape: %s", exc)
            read[0] = False
            return []

    @staticmethod
    def _performance_models(d: DaemonView) -> dict[str, tuple[int, int]]:
        """Models with performance on: name -> (version cap, windows searched for the newest
        computed performance window, see :func:`monitor.web.performance_metrics.search_depth`)."""
        from monitor.web.performance_metrics import search_depth  # noqa: PLC0415

        return {
            name: (rt.config.limits.max_versions, search_depth(d.config.labels.delay, rt.config.window.step))
            for name, rt in d.pipeline.models.items()
            if rt.config.performance.enabled
        }

    @staticmethod
    def _outbox(d: DaemonView) -> Any:
        """Outbox rows and alerts by state, from the store."""
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        from alerts.rules import SEVERITIES  # noqa: PLC0415
        from storage.alerts import ALERT_STATES, DELIVERY_STATUSES, alert_counts, delivery_counts  # noqa: PLC0415

        # every state of every configured notifier (every severity), 0 when there is none: a
        # series that vanished when its last alert resolved left Grafana's stat panels
        # showing the last count for their whole range
        deliveries = GaugeMetricFamily(
            "driftwarden_deliveries", "Outbox rows by notifier and status (dead = gave up)", labels=["notifier", "status"]
        )
        counted = dict.fromkeys(((n, s) for n in d.config.notifiers for s in DELIVERY_STATUSES), 0)
        for (notifier, status), n in sorted({**counted, **delivery_counts(d.reads)}.items()):
            deliveries.add_metric([notifier, status], n)
        yield deliveries
        alerts = GaugeMetricFamily("driftwarden_alerts", "Alerts by state and severity", labels=["state", "severity"])
        counted = dict.fromkeys(((st, sv) for st in ALERT_STATES for sv in SEVERITIES), 0)
        for (state, severity), n in sorted({**counted, **alert_counts(d.reads)}.items()):
            alerts.add_metric([state, severity], n)
        yield alerts

    def _observability(self) -> Any:
        """Build facts, the window compute-time histogram, consumer lag (in memory)."""
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily  # noqa: PLC0415

        d = self.daemon
        info = GaugeMetricFamily("driftwarden_build_info", "driftwarden's version and Python's (always 1)", labels=["version", "python"])
        info.add_metric([_version(), platform.python_version()], 1.0)
        yield info
        compute = HistogramMetricFamily(
            "driftwarden_window_compute_seconds", "Seconds spent computing a closed window's figures", labels=["model"]
        )
        for model, (buckets, total) in sorted(d.pipeline.stats.compute.snapshot().items()):
            compute.add_metric([model], buckets, total)
        yield compute
        lag = GaugeMetricFamily(
            "driftwarden_consumer_lag_messages",
            "Messages of the predictions and labels topics not consumed yet, per assigned partition"
            " (from the last fetch)",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in sorted(d.consumer_lag().items()):
            lag.add_metric([topic, str(partition)], n)
        yield lag
        yield self._skipped(d)

    @staticmethod
    def _skipped(d: DaemonView) -> Any:
        """Offsets Kafka skipped unread (records deleted before they were read, see
        :mod:`monitor.ingest.skipped`), per topic and partition, since the start."""
        from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415

        skipped = CounterMetricFamily(
            "driftwarden_skipped_offsets",
            "Offsets of the predictions and labels topics Kafka skipped before they were read"
            " (records deleted by retention, then the consumer reset to auto_offset_reset)",
            labels=["topic", "partition"],
        )
        watch = getattr(d.pipeline, "skipped", None)
        for (topic, partition), n in sorted(watch.totals.items() if watch is not None else ()):
            skipped.add_metric([topic, str(partition)], n)
        return skipped

    @staticmethod
    def _storage(d: DaemonView) -> Any:
        """Dead-letter volume (what was dropped) and the database's size, from the store."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        from storage.dead_letters import dead_letter_drops  # noqa: PLC0415

        drops = dead_letter_drops(d.reads)
        dropped = CounterMetricFamily(
            "driftwarden_dead_letters_dropped",
            "Dead letters not stored (volume cap per reason, partition and minute), since the database was created",
            labels=["reason"],
        )
        stripped = CounterMetricFamily(
            "driftwarden_dead_letter_payloads_dropped",
            "Dead letters stored without their payload (volume cap), since the database was created",
            labels=["reason"],
        )
        for reason, (payloads, rows) in sorted(drops.items()):
            dropped.add_metric([reason], rows)
            stripped.add_metric([reason], payloads)
        yield dropped
        yield stripped
        size = GaugeMetricFamily("driftwarden_db_size_bytes", "Size of the SQLite database file and its WAL", labels=["file"])
        for name, n in sorted(d.reads.size_on_disk().items()):
            size.add_metric([name], n)
        yield size

    @staticmethod
    def _window_shapes(d: DaemonView) -> Any:
        """Per configured model: whether a partition row of the store holds its stream state
        built with another window shape than this instance's config (from the store)."""
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        from monitor.windows.shape import mismatches, stored_shapes  # noqa: PLC0415
        from storage.stream import partition_rows  # noqa: PLC0415

        configured = {name: rt.windows.shape for name, rt in d.pipeline.models.items()}
        differ = {s.model for s in mismatches(stored_shapes(partition_rows(d.reads, d.pipeline.topic)), configured)}
        g = GaugeMetricFamily(
            "driftwarden_window_shape_mismatch",
            "1 when the store holds a model's stream state built with another window shape than this"
            " instance's config (another instance runs another definition, or a restart is re-windowing it)",
            labels=["model"],
        )
        for name in sorted(configured):
            g.add_metric([name], 1.0 if name in differ else 0.0)
        yield g

    @staticmethod
    def _retention(d: DaemonView) -> Any:
        """The retention prune's running totals (in memory)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        st = d.retention
        pruned = CounterMetricFamily("driftwarden_pruned_rows", "Rows deleted by the retention prune, by table", labels=["table"])
        for table, n in sorted(st.pruned().items()):
            pruned.add_metric([table], n)
        yield pruned
        runs = CounterMetricFamily("driftwarden_prune_runs", "Retention prune runs", labels=["outcome"])
        runs.add_metric(["ok"], st.runs)
        runs.add_metric(["error"], st.errors)
        yield runs
        last = GaugeMetricFamily("driftwarden_last_prune_timestamp_seconds", "When the last prune run started (Unix time)")
        if st.last_run_at is not None:
            last.add_metric([], st.last_run_at.timestamp())
        yield last

    @staticmethod
    def _performance(d: DaemonView) -> Any:
        """Performance windows (re)computed since start (in memory; with labels only)."""
        from prometheus_client.core import CounterMetricFamily  # noqa: PLC0415

        if getattr(d.pipeline, "labels", None) is None:
            return
        perf = CounterMetricFamily(
            "driftwarden_performance_windows", "Performance windows (re)computed since start", labels=[]
        )
        perf.add_metric([], d.pipeline.stats.performance_windows)
        yield perf

    @staticmethod
    def _labels(d: DaemonView) -> Any:
        """The label join's durable counters per model and the windows owed, from the store."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily  # noqa: PLC0415

        from storage.labels import COUNTERS, label_counters, slots_waiting  # noqa: PLC0415

        if getattr(d.pipeline, "labels", None) is None:
            return
        join = CounterMetricFamily(
            "driftwarden_label_join",
            "Label join events per model: predictions, labels, joined, duplicate_labels, early,"
            " expired_labels, expired_predictions, unmatched_labels, dropped_early_labels, duplicate_predictions"
            " (durable)",
            labels=["model", "event"],
        )
        for model, counts in sorted(label_counters(d.reads).items()):
            for name in COUNTERS:
                join.add_metric([model, name], counts.get(name, 0))
        yield join
        owed = GaugeMetricFamily(
            "driftwarden_label_windows_waiting", "Time windows whose performance is not computed yet or is stale"
        )
        owed.add_metric([], slots_waiting(d.reads))
        yield owed
        held = GaugeMetricFamily(
            "driftwarden_label_held_ids",
            "Predictions awaiting labels in this instance's in-memory id index, per model (pruned ones"
            " included until compacted; a model appears once the index is built)",
            labels=["model"],
        )
        memory = GaugeMetricFamily(
            "driftwarden_label_held_ids_bytes", "Memory of this instance's in-memory id index, per model",
            labels=["model"],
        )
        for model, (entries, size) in sorted(d.pipeline.labels.held_id_memory().items()):
            held.add_metric([model], entries)
            memory.add_metric([model], size)
        yield held
        yield memory

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("driftwarden")
    except PackageNotFoundError:
        return "0+unknown"
