"""Event times: parsing and the range every accepted event time must lie in.

An event time moves the watermark, so one hostile value could close every open
window (far future) or crash date arithmetic later (``year -1199 is out of
range``). Every event time is therefore checked at decoding, before anything
downstream sees it:

- it lies in ``[MIN_EVENT_MS, MAX_EVENT_MS]`` (1970-01-01 to 9999-12-31, UTC),
  so every later conversion to a ``datetime`` succeeds and int64 never overflows;
- it is at most ``max_future_skew`` ahead of the *earlier* of its Kafka record's
  timestamp and the wall clock (its *base*). Producers set record timestamps
  themselves, so the wall clock bounds a hostile record timestamp too; a record
  without a timestamp is bounded by the wall clock alone.

An accepted event time ahead of its base still moves clocks (the windows'
watermark, the label join's clock) no further than the base
(:func:`watermark_times`): one event stamped up to ``max_future_skew`` ahead
would otherwise make every normal row after it late for that long. The row
itself keeps its time (its windows are its time's).

The base only bounds an event at the live edge. A stream read behind the wall clock
(a backlog after an outage, a ``replay`` of history, whose rows have no record
timestamp) has its base far ahead of its rows, so one row stamped in the future (or
with a forged record timestamp) would still move a clock to the wall clock and make
every row after it late. Clocks therefore move by *vouched* times (:func:`vouch`): a
clock is the highest time that at least **two** rows of its stream reached (each row
counted at its capped time), the second-highest capped time seen. One row alone never
moves it past the rest of the stream; the stream's own progress does, one row later
than the row that first gets there: a stream resuming after a gap moves the clock at
its second row. No allowance, no setting: a bound relative to the wall clock cannot
help a stream behind it, and one relative to the stream's front needs a size that
either lets one row close windows early (wide) or holds back real jumps (narrow).

Times are epoch milliseconds (int) throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from monitor.ingest.batch import BadMessage, all_of_type

#: 1970-01-01T00:00:00Z
MIN_EVENT_MS = 0
#: 9999-12-31T23:59:59.999Z, the last instant ``datetime`` can hold
MAX_EVENT_MS = 253_402_300_799_999

#: "no time yet" of the clocks :func:`vouch` moves (far below any event time, and far
#: enough from int64's limits for a lateness to be subtracted)
NO_TIME = np.iinfo(np.int64).min // 4

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_to_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 / ISO 8601 time (no offset = UTC).

    Raises ``ValueError`` for text that is not such a time.
    """
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    d = dt - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1000 + d.microseconds // 1000


def parse_event_time(value: Any, field_name: str) -> int:
    """Event time in epoch milliseconds from an RFC 3339 string or epoch milliseconds.

    A string without offset is taken as UTC. Raises :class:`BadMessage` for a
    wrong type, a non-finite number, or a time outside ``[MIN_EVENT_MS, MAX_EVENT_MS]``
    (this catches epoch microseconds or nanoseconds sent as milliseconds).
    """
    if isinstance(value, bool):
        raise BadMessage(f"bad_type: {field_name} expected RFC 3339 string or epoch milliseconds, got bool")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise BadMessage(f"non_finite: {field_name}")
        if not MIN_EVENT_MS <= value <= MAX_EVENT_MS:
            raise BadMessage(f"bad_type: {field_name} out of range: {value!r} is not epoch milliseconds in 1970..9999")
        ms = int(value)
    elif isinstance(value, str):
        try:
            ms = iso_to_ms(value)
        except (ValueError, OverflowError):
            raise BadMessage(f"bad_type: {field_name} is not an RFC 3339 time: {value[:40]!r}") from None
    else:
        raise BadMessage(
            f"bad_type: {field_name} expected RFC 3339 string or epoch milliseconds, got {type(value).__name__}"
        )
    if not MIN_EVENT_MS <= ms <= MAX_EVENT_MS:
        shown = repr(value)[:40]
        raise BadMessage(f"bad_type: {field_name} out of range: {shown} is not epoch milliseconds in 1970..9999")
    return ms


def base_ms(record_ts: int | None, now_ms: int) -> int:
    """The time a record's event time is checked against and the furthest it may move a
    clock (epoch ms): the earlier of the record's timestamp and the wall clock, the wall
    clock alone for a record without one (``None`` or negative)."""
    return now_ms if record_ts is None or record_ts < 0 else min(record_ts, now_ms)


def future_limit_ms(record_ts: int | None, now_ms: int, max_future_skew_ms: int) -> int:
    """The latest acceptable event time for a record (epoch ms)."""
    return base_ms(record_ts, now_ms) + max_future_skew_ms


def check_future(ms: int, field_name: str, record_ts: int | None, now_ms: int, max_future_skew_ms: int) -> None:
    """Raise :class:`BadMessage` if ``ms`` is too far ahead of the record/wall clock."""
    limit = future_limit_ms(record_ts, now_ms, max_future_skew_ms)
    if ms > limit:
        ahead_s = (ms - (limit - max_future_skew_ms)) / 1000
        raise BadMessage(
            f"bad_type: {field_name} too far in the future: {ahead_s:.0f}s ahead of the record timestamp"
            f" (kafka.max_future_skew is {max_future_skew_ms / 1000:.0f}s)"
        )


def in_range(ts_ms: np.ndarray, record_ts: np.ndarray, now_ms: int, max_future_skew_ms: int) -> bool:
    """Whether every event time of a batch is acceptable (the fast path's check).

    ``record_ts`` holds each record's Kafka timestamp (negative when absent).
    """
    if ts_ms.shape[0] == 0:
        return True
    return bool(((ts_ms >= MIN_EVENT_MS) & (ts_ms <= _bases(record_ts, now_ms) + max_future_skew_ms)).all())


def watermark_times(ts_ms: np.ndarray, record_ts: np.ndarray, now_ms: int) -> np.ndarray | None:
    """Each row's time as it may move clocks: its event time, capped at its base
    (:func:`base_ms`). ``None`` when no row is ahead of its base (the normal case: the
    event times themselves). ``record_ts``: each record's Kafka timestamp, negative when
    absent; all epoch ms."""
    if ts_ms.shape[0] == 0:
        return None
    base = _bases(record_ts, now_ms)
    if not (ts_ms > base).any():
        return None
    return np.minimum(ts_ms, base)


def vouch(times: np.ndarray, front: int, clock: int) -> tuple[np.ndarray, int, int]:
    """Move a clock by vouched times: a time moves it once a second row reached it.

    ``times``: each row's capped time (:func:`watermark_times`), in consumption order, epoch
    ms (a row that must not count: any value at or below ``NO_TIME``). ``front``: the
    highest time seen so far (no row yet: ``NO_TIME``); ``clock``: the clock so far, the
    second-highest time seen (``NO_TIME`` until two rows were seen).

    Returns ``(before, front, clock)``: the clock in force before each row (int64, one per
    row) and the new front and clock. A row's time is vouched up to the highest time seen
    before it (the two rows reached at least the lower of the two), so the clock after row
    ``i`` is the running maximum of ``min(times[i], max(front, times[:i]))``. Two passes of
    running maxima: O(rows), no Python loop. Rows stamped in order move the clock to each
    row's predecessor; a jump (a stream resuming after a gap) is vouched by its second row;
    one row stamped ahead of its stream moves it no further than the row before it.
    """
    n = times.shape[0]
    if n == 0:
        return np.empty(0, dtype=np.int64), front, clock
    highest = np.maximum.accumulate(np.concatenate(([front], times)))
    vouched = np.minimum(times, highest[:-1])
    running = np.maximum.accumulate(np.concatenate(([clock], vouched)))
    return running[:-1], int(highest[-1]), int(running[-1])


def _bases(record_ts: np.ndarray, now_ms: int) -> np.ndarray:
    """:func:`base_ms` of each record (int64 epoch ms)."""
    return np.where(record_ts < 0, now_ms, np.minimum(record_ts, now_ms))


def epoch_ms_column(values: Sequence[Any]) -> np.ndarray | None:
    """The fast paths' event times: all epoch-ms integers or all RFC 3339 strings, as
    int64; ``None`` for anything else (mixed, floats, missing, unparsable, too big), which
    the per-record path then names. Range checks are :func:`in_range`'s."""
    try:
        if all_of_type(values, int):
            return np.array(values, dtype=np.int64)
        if all_of_type(values, str):
            return np.fromiter(map(iso_to_ms, values), dtype=np.int64, count=len(values))
    except (ValueError, OverflowError):
        return None
    return None
