"""What the web layer needs of a running daemon, as a protocol: ``web`` never imports ``service``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from monitor.config import Config
from storage.db import Store


class DaemonView(Protocol):
    """The daemon as the HTTP API and the metrics exposition see it.

    ``pipeline``, ``alerting`` and ``retention`` are the service objects (models, stats,
    reference swap; silences); they are typed loosely so that this package stays
    below ``monitor.service`` in the import graph.
    """

    config: Config
    store: Store
    ready: threading.Event
    kafka_connected: bool
    clock: Callable[[], datetime]
    pipeline: Any
    alerting: Any
    #: the retention prune's running totals (``storage.retention.RetentionStats``)
    retention: Any

    @property
    def storage_error(self) -> str | None:
        """The storage failure in full (paths, hosts): for the log and token holders only."""
        ...

    @property
    def storage_error_brief(self) -> str | None:
        """The storage failure's kind and a fixed phrase: what anyone may be shown."""
        ...

    @property
    def is_ready(self) -> bool:
        """What /readyz answers: consuming, Kafka reachable, the store healthy, the loop turning."""
        ...

    @property
    def reads(self) -> Store:
        """The store the HTTP layer reads (on SQLite a read-only connection of its own)."""
        ...

    @property
    def store_suspect(self) -> bool:
        """A store read may fail or hang now: show what is in memory instead."""
        ...

    def stalled_for(self) -> float | None:
        """Seconds the running consumer loop has not turned, once it counts as stalled."""
        ...

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        """Messages not consumed yet per assigned (topic, partition) of the predictions and
        labels topics."""
        ...
