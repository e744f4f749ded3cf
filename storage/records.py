"""Frozen records that cross package boundaries (monitor -> storage -> alerts).

Times are timezone-aware UTC ``datetime`` objects in Python and ISO 8601 strings
with a ``Z`` suffix (millisecond precision) in SQLite.
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from detectors._fast_init import fast_init

#: The column name used in ``metrics`` for dataset-level figures (drift share,
#: row count, ...), which belong to no single column.
DATASET = ""

#: The segment name of the window that holds every row of a (model, version).
ALL_SEGMENTS = ""


def iso(ts: datetime) -> str:
    """Format an aware datetime as ``2026-11-23T14:00:00.123Z`` (UTC, milliseconds)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_ms(ms: int) -> str:
    """Format epoch milliseconds as :func:`iso` does: ``1_795_442_400_123`` ->
    ``2026-11-23T14:00:00.123Z``.

    Exact integer arithmetic: ``-1`` -> ``1969-12-31T23:59:59.999Z``, and the last
    millisecond of year 9999 keeps its ``.999`` (``datetime.fromtimestamp(ms / 1000)``
    goes through a float and loses a millisecond for about a third of times after
    2109). Accepts any integer (numpy's too); a float raises ``TypeError``, a time
    outside years 1..9999 ``OverflowError``.
    """
    return iso(_EPOCH + timedelta(milliseconds=operator.index(ms)))


def parse_iso(text: str) -> datetime:
    """Parse what :func:`iso` writes (and any ISO 8601 string with an offset or ``Z``)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


_URL_ID = re.compile(r"[A-Za-z0-9_-]+")
#: longest URL-safe window id accepted (characters): a window id is five short fields
MAX_URL_ID = 2048


def window_url_id(window_id: str) -> str:
    """A window id as one URL path segment: base64url (RFC 4648 section 5) of its UTF-8
    bytes, without ``=`` padding. Only ``A-Z a-z 0-9 - _``: no ``|``, ``/``, ``%`` or
    space, so it survives Slack's ``<url|label>`` links, proxies and path routing.

    ``churn|v12||2026-11-23T14:00:00.000Z|…`` → ``Y2h1cm58djEyfHwyMDI2…``; decode with
    :func:`window_id_from_url` (or ``base64.urlsafe_b64decode`` after re-padding).
    """
    return base64.urlsafe_b64encode(window_id.encode()).decode("ascii").rstrip("=")


def window_id_from_url(text: str) -> str:
    """The window id a :func:`window_url_id` stands for; ``ValueError`` when ``text`` is
    not one (wrong alphabet, length, not UTF-8, or longer than :data:`MAX_URL_ID`)."""
    if not text or len(text) > MAX_URL_ID or len(text) % 4 == 1:
        raise ValueError("not a window id")
    if not _URL_ID.fullmatch(text):
        raise ValueError("not a window id")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        decoded = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a window id") from None
    # one encoding per id: a text with stray bits in its last character is not ours
    if window_url_id(decoded) != text or decoded.count("|") < 4:
        raise ValueError("not a window id")
    return decoded


def id_field(text: str) -> str:
    """``text`` as one ``|``-separated field of a window id: ``%`` becomes ``%25`` and
    ``|`` becomes ``%7C``, so versions and segment values from the stream (which may hold
    either) cannot make two windows' ids equal. Text holding neither (every model name,
    time, and nearly every version) is returned as it is."""
    if "|" not in text and "%" not in text:
        return text
    return text.replace("%", "%25").replace("|", "%7C")


def group_key(version: str, segment: str) -> str:
    """One text for a (version, segment) pair of a model's windows, as its count
    windows' counters are keyed: the two window-id fields joined by ``|``."""
    return f"{id_field(version)}|{id_field(segment)}"


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
        """Stable text id: ``model|version|segment|start|end``, each field through
        :func:`id_field` (a ``|`` or ``%`` in a version or segment value is escaped)."""
        return f"{id_field(self.model)}|{group_key(self.version, self.segment)}|{self.start}|{self.end}"

    @property
    def url_id(self) -> str:
        """The id as one URL path segment (:func:`window_url_id`)."""
        return window_url_id(self.id)


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


@fast_init
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
    #: bootstrap confidence interval of ``value`` (performance figures), else None
    ci_low: float | None = None
    ci_high: float | None = None
