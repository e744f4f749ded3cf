"""The columnar batch every stage after decoding works on, and the bad-message error."""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import numpy as np


class BadMessage(Exception):
    """A message that cannot be used; ``str(exc)`` is the dead-letter reason."""


@dataclass(slots=True)
class ColumnBatch:
    """Rows of one model decoded from one poll batch, one numpy array per column.

    Numerical columns are float64 with NaN for missing; categorical ones are
    object arrays of ``str`` with ``None`` for missing. ``ts_ms`` is event time
    in epoch milliseconds.
    """

    model: str
    ts_ms: np.ndarray
    partition: np.ndarray
    offset: np.ndarray
    event_id: np.ndarray
    version: np.ndarray
    segments: dict[str, np.ndarray]
    columns: dict[str, np.ndarray]
    #: what windows derive from the rows once per batch and share (a sliding window's
    #: panes): keyed by column name for the figures' inputs (see
    #: :mod:`monitor.windows.pane_columns`), by a tuple for anything else (never a column
    #: name); never part of the rows
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def take(self, idx: np.ndarray) -> ColumnBatch:
        """The rows selected by an index or boolean mask."""
        return ColumnBatch(
            model=self.model,
            ts_ms=self.ts_ms[idx],
            partition=self.partition[idx],
            offset=self.offset[idx],
            event_id=self.event_id[idx],
            version=self.version[idx],
            segments={k: v[idx] for k, v in self.segments.items()},
            columns={k: v[idx] for k, v in self.columns.items()},
        )

    @classmethod
    def of_records(
        cls, model: str, records: Sequence[Any], *, ts_ms: np.ndarray, event_id: list[Any], version: list[Any],
        segments: dict[str, np.ndarray], columns: dict[str, np.ndarray],
    ) -> ColumnBatch:
        """A batch whose partitions and offsets are those of ``records`` (Kafka records)."""
        partition, offset = record_positions(records)
        return cls(
            model=model,
            ts_ms=ts_ms,
            partition=partition,
            offset=offset,
            event_id=object_array(event_id),
            version=object_array(version),
            segments=segments,
            columns=columns,
        )


def object_array(values: Sequence[Any]) -> np.ndarray:
    """``values`` as a 1-d object array, each value one element (``np.array`` would make a
    2-d array of equal-length tuples). ``np.fromiter`` stores each value as it is, about
    half the cost of assigning the sequence to an empty array (numpy's sequence discovery)."""
    return np.fromiter(values, dtype=object, count=len(values))


def float_column(values: Sequence[Any]) -> np.ndarray:
    """``values`` (Python floats, ``None`` for missing) as a float64 array, ``None`` as NaN:
    what ``np.array(values, dtype=np.float64)`` gives, bit for bit. Packed with one
    ``struct.pack_into`` (a C loop over the floats, several times cheaper than numpy's
    conversion of a sequence); a ``None`` (or anything ``struct`` refuses) falls back to numpy.
    Ints are converted as numpy converts them (correctly rounded)."""
    a = np.empty(len(values), dtype=np.float64)
    try:
        struct.pack_into(f"{len(values)}d", a, 0, *values)
    except (struct.error, TypeError):
        return np.array(values, dtype=np.float64)
    return a


def record_positions(records: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Each Kafka record's partition (int32) and offset (int64)."""
    n = len(records)
    return (
        np.fromiter(map(_PARTITION, records), dtype=np.int32, count=n),
        np.fromiter(map(_OFFSET, records), dtype=np.int64, count=n),
    )


def record_timestamps(records: Sequence[Any]) -> np.ndarray:
    """Each record's Kafka timestamp in epoch ms, -1 where it has none (not an ``int``).

    All exactly ``int`` (the normal case): packed by one ``struct.pack_into``; anything
    else (None, a float, a bool, a numpy integer) sends the records through one by one."""
    n = len(records)
    ts = list(map(_TIMESTAMP, records))
    if n and set(map(type, ts)) == {int}:
        a = np.empty(n, dtype=np.int64)
        try:
            struct.pack_into(f"{n}q", a, 0, *ts)
        except struct.error:  # beyond int64: as the path below, which raises OverflowError
            pass
        else:
            return a
    return np.fromiter(
        (r.timestamp if isinstance(r.timestamp, int) else -1 for r in records), dtype=np.int64, count=n
    )


_PARTITION = attrgetter("partition")
_OFFSET = attrgetter("offset")
_TIMESTAMP = attrgetter("timestamp")


#: JSON escapes of the characters the columnar paths must not pass on: U+0000 (a raw
#: NUL byte is not valid JSON; PostgreSQL text cannot hold it), U+001F and U+FFFF (the
#: label join's segment separator and missing mark, see storage.text.segment_text)
_JSON_UNSAFE = re.compile(rb"\\u(?:0000|001[fF]|[fF]{4})")
#: U+FFFF written as itself (UTF-8)
_RAW_FFFF = "\uffff".encode()


def may_hold_unsafe_text(values: Sequence[bytes]) -> bool:
    """Whether a payload may hold U+0000, U+001F or U+FFFF (JSON escapes, an escaped
    backslash before one included, or U+FFFF itself). The columnar fast paths leave such
    a batch to the per-record path, which replaces them (:func:`storage.text.without_nul`,
    :func:`storage.text.segment_text`). Cheap: the payloads joined once, and a ``memchr``
    each for a backslash (JSON without escapes has none) and for U+FFFF's lead byte; the
    escapes and U+FFFF itself are looked for only when those are there."""
    joined = b"".join(values)
    # a memchr for U+FFFF's lead byte first: the 3-byte search costs ~50x more, and text
    # from U+F000 up is rare
    if b"\xef" in joined and _RAW_FFFF in joined:
        return True
    return b"\\" in joined and _JSON_UNSAFE.search(joined) is not None
