"""Frozen records that cross package boundaries (monitor -> storage -> alerts).

Times are timezone-aware UTC ``datetime`` objects in Python and ISO 8601 strings
with a ``Z`` suffix (millisecond precision) in SQLite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

#: The column name used in ``metrics`` for dataset-level figures (drift share,
#: row count, ...), which belong to no single column.
DATASET = ""

#: The segment name of the window that holds every row of a (model, version).
ALL_SEGMENTS = ""


def iso(ts: datetime) -> str:
    """Format an aware datetime as ``2026-11-23T14:00:00.123Z`` (UTC, milliseconds)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Parse what :func:`iso` writes (and any ISO 8601 string with an offset or ``Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class WindowKey:
    """A window's deterministic identity: writing the same key twice replaces it.

    ``start``/``end`` are event-time bounds for time windows and row ordinals
    (as epoch-based datetimes are meaningless there) encoded as
    ``count:<first>`` / ``count:<last+1>`` for count windows; see ``id``.
    """

    model: str
    version: str
    segment: str
    start: str
    end: str

    @property
    def id(self) -> str:
        """Stable text id: ``model|version|segment|start|end``."""
        return f"{self.model}|{self.version}|{self.segment}|{self.start}|{self.end}"


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """One closed window as stored in the ``windows`` table.

    ``status`` is ``ok`` (figures computed), ``insufficient`` (fewer rows than
    the model's ``min_rows``: stored with quality figures, no drift verdict) or
    ``error`` (the figures could not be computed: ``error`` says why; only the
    row count is stored).
    """

    key: WindowKey
    rows: int
    status: str
    computed_at: datetime
    late_rows: int = 0
    reference: str = ""
    #: why the figures could not be computed (status ``error``), else ""
    error: str = ""

    @property
    def id(self) -> str:
        return self.key.id


@dataclass(frozen=True, slots=True)
class MetricRow:
    """One figure of one window, as stored in the ``metrics`` table.

    ``column`` is :data:`DATASET` for dataset-level figures. ``p_value`` is set
    only for tests whose score is a p-value (then equal to ``value``).
    ``drifted`` is ``None`` for figures that carry no verdict. ``ci_low``/``ci_high``:
    the bootstrap interval of performance figures.
    """

    column: str
    metric: str
    value: float | None
    threshold: float | None = None
    drifted: bool | None = None
    p_value: float | None = None
    test: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: bootstrap confidence interval of ``value`` (performance figures), else None
    ci_low: float | None = None
    ci_high: float | None = None
