"""Wiring the retention prune into the daemon: config -> policy, start-up vacuum, the job."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from monitor.config import Config
from storage.db import StorageError, Store
from storage.limits import DeadLetterCap
from storage.retention import Pruner, RetentionPolicy, RetentionStats

log = logging.getLogger("driftwarden.retention")


def dead_letter_cap(config: Config) -> DeadLetterCap:
    r = config.retention
    return DeadLetterCap(
        per_minute=r.dead_letters_per_minute, payloads_per_minute=r.dead_letter_payloads_per_minute
    )


def retention_policy(config: Config) -> RetentionPolicy:
    r = config.retention
    return RetentionPolicy(
        windows=r.windows, metrics=r.metrics, alerts=r.alerts, deliveries=r.deliveries,
        dead_letters=r.dead_letters, references_dir=Path(config.daemon.state_dir) / "references",
        window_samples=config.reports.sample_windows,
    )  # fmt: skip


def switch_to_incremental_vacuum(store: Store) -> None:
    """At start-up, before other threads use the store: rebuild a database created
    without incremental auto-vacuum, once. A failure (e.g. not enough free disk for
    the copy) is logged and start-up goes on; it is tried again at the next start."""
    if store.dialect.name != "sqlite" or store.auto_vacuum_mode() == "incremental":
        return  # a server vacuums by itself
    size = store.size_on_disk()["db"]
    log.info("storage: one-time VACUUM of %s (%.1f MiB) to enable incremental vacuum", store.path, size / 2**20)
    try:
        store.ensure_incremental_vacuum()
    except StorageError as exc:
        log.warning("storage: %s; the file will not shrink after a prune until this succeeds", exc)
        return
    log.info("storage: incremental vacuum enabled (now %.1f MiB)", store.size_on_disk()["db"] / 2**20)


class RetentionJob:
    """The scheduled prune: one :class:`Pruner` and the stats ``/metrics`` reads."""

    def __init__(self, config: Config, store: Store, *, clock: Callable[[], datetime]) -> None:
        self.stats = RetentionStats()
        self.interval = config.retention.prune_interval
        self.pruner = Pruner(store, retention_policy(config), clock=clock, stats=self.stats)

    def __call__(self) -> None:
        """Run once; an error is logged and counted, never raised (the next run retries)."""
        try:
            self.pruner.run_once()
        except Exception as exc:  # noqa: BLE001 - a failed prune must not stop the scheduler
            self.stats.record_error()
            log.error("retention: prune failed: %s", exc)

    def stop(self, timeout: float = 10.0) -> None:
        if not self.pruner.stop(timeout):
            log.warning("retention: prune still running after %.0fs at shutdown", timeout)
