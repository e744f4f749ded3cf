"""The columnar batch every stage after decoding works on, and the bad-message error."""

from __future__ import annotations

import re
import struct
from collections import namedtuple
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, countOf, itemgetter
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
    #: each row's time as it may move clocks (the watermark, the label join's clock): its
    #: event time capped at min(record timestamp, wall clock), set by the decoders only
    #: when some row is ahead of that (None: ``ts_ms``; see
    #: :func:`monitor.ingest.event_time.watermark_times`)
    wm_ms: np.ndarray | None = field(default=None, repr=False)
    #: what windows derive from the rows once per batch and share (a sliding window's
    #: panes): keyed by column name for the figures' inputs (see
    #: :mod:`monitor.windows.pane_columns`), by a tuple for anything else (never a column
    #: name); never part of the rows
    derived: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def wm_times(self) -> np.ndarray:
        """Each row's time as it may move clocks (epoch ms): :attr:`wm_ms`, else ``ts_ms``."""
        return self.ts_ms if self.wm_ms is None else self.wm_ms

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
            wm_ms=None if self.wm_ms is None else self.wm_ms[idx],
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


@dataclass(frozen=True, slots=True)
class RecordFields:
    """C-level getters of the fields the decoders read from each Kafka record (see
    :func:`record_fields`)."""

    value: Callable[[Any], Any]
    partition: Callable[[Any], Any]
    offset: Callable[[Any], Any]
    timestamp: Callable[[Any], Any]


#: the descriptor type of a namedtuple's fields (``_collections._tuplegetter``)
_TUPLEGETTER = type(namedtuple("_Probe", "x").x)  # type: ignore[attr-defined]  # noqa: PYI024
_NAMES = ("value", "partition", "offset", "timestamp")
#: attribute getters: records of any other kind
_BY_NAME = RecordFields(*map(attrgetter, _NAMES))


def record_fields(records: Sequence[Any]) -> RecordFields:
    """How to read value, partition, offset and timestamp of every record of ``records``.

    Records all of one namedtuple type (kafka-python's ``ConsumerRecord``, the benches'
    ``Rec``): an ``itemgetter`` of each field's position, which the type's own field
    descriptor gives (an attribute look-up on a namedtuple walks the type's dictionaries
    to that descriptor: ~300 instructions, the index ~60). Anything else (several types,
    other objects, a field overridden in a subclass): ``attrgetter``. Either reads the
    same values; one ``type`` call per record to tell."""
    if not records:
        return _BY_NAME
    cls = type(records[0])
    if not all_of_type(records, cls) or not issubclass(cls, tuple):
        return _BY_NAME
    at = []
    for name in _NAMES:
        d = getattr(cls, name, None)
        if type(d) is not _TUPLEGETTER:
            return _BY_NAME
        at.append(itemgetter(d.__reduce__()[1][0]))  # (type, (index, doc))
    return RecordFields(*at)


def all_of_type(values: Sequence[Any], cls: type) -> bool:
    """Whether every one of ``values`` is exactly of type ``cls`` (no subclass; true when
    there are none). One C-level pass counting identities (``operator.countOf``), about
    two thirds of the cost of building ``set(map(type, values))``."""
    return countOf(map(type, values), cls) == len(values)


def record_values(records: Sequence[Any], fields: RecordFields | None = None) -> list[Any]:
    """Each record's value (``fields``: :func:`record_fields` of ``records``, found here
    when not given)."""
    return list(map((fields or record_fields(records)).value, records))


def record_positions(records: Sequence[Any], fields: RecordFields | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each Kafka record's partition (int32) and offset (int64) (``fields`` as in
    :func:`record_values`)."""
    f = fields or record_fields(records)
    return int_column(list(map(f.partition, records)), np.int32), int_column(list(map(f.offset, records)), np.int64)


#: ``struct`` codes of the integer dtypes :func:`int_column` packs
_INT_CODES = {np.dtype(np.int32): "i", np.dtype(np.int64): "q"}


def int_column(values: Sequence[Any], dtype: Any) -> np.ndarray:
    """``values`` (ints) as an int32 or int64 array: what ``np.fromiter`` gives, packed by
    one ``struct.pack_into`` (about half its cost); a value ``struct`` refuses (out of range,
    not an integer) sends them through ``np.fromiter``, which then converts or raises as it did."""
    a = np.empty(len(values), dtype=dtype)
    try:
        struct.pack_into(f"{len(values)}{_INT_CODES[a.dtype]}", a, 0, *values)
    except (struct.error, TypeError):
        return np.fromiter(values, dtype=dtype, count=len(values))
    return a


def record_timestamps(records: Sequence[Any], fields: RecordFields | None = None) -> np.ndarray:
    """Each record's Kafka timestamp in epoch ms, -1 where it has none (not an ``int``);
    ``fields`` as in :func:`record_values`.

    All exactly ``int`` (the normal case): packed by one ``struct.pack_into``; anything
    else (None, a float, a bool, a numpy integer) sends the records through one by one."""
    n = len(records)
    ts = list(map((fields or record_fields(records)).timestamp, records))
    if n and all_of_type(ts, int):
        a = np.empty(n, dtype=np.int64)
        try:
            struct.pack_into(f"{n}q", a, 0, *ts)
        except struct.error:  # beyond int64: as the path below, which raises OverflowError
            pass
        else:
            return a
    return np.fromiter((t if isinstance(t, int) else -1 for t in ts), dtype=np.int64, count=n)


def claimed(records: list[Any], claims: Container[int]) -> list[Any]:
    """The records of partitions in ``claims``, in order: ``records`` itself when all are
    (the normal case: one C-level pass over the partitions)."""
    partition = record_fields(records).partition
    if all(p in claims for p in set(map(partition, records))):
        return records
    return [r for r in records if partition(r) in claims]


def first_offsets(records: Sequence[Any]) -> dict[int, int]:
    """The offset of the first of ``records`` in each partition (``{partition: offset}``):
    where each partition's records of one poll begin. One partition (what a Kafka poll
    hands over per list): the first record's offset, after one C-level pass."""
    f = record_fields(records)
    parts = list(map(f.partition, records))
    if parts and parts.count(parts[0]) == len(parts):
        return {parts[0]: f.offset(records[0])}
    out: dict[int, int] = {}
    for p, r in zip(parts, records, strict=True):
        if p not in out:
            out[p] = f.offset(r)
    return out


def next_offsets(records: Sequence[Any], positions: tuple[np.ndarray, np.ndarray] | None = None) -> dict[int, int]:
    """The offset after the last of ``records`` in each partition (``{partition: highest
    offset + 1}``), partitions in order of first appearance. ``positions``: the records'
    :func:`record_positions`, read here when not given (the pipeline reads them once for
    the decoder and for this). One partition (what a Kafka poll hands over per list): a
    comparison and a ``max`` over the packed arrays."""
    partition, offset = positions if positions is not None else record_positions(records)
    if partition.shape[0] == 0:
        return {}
    first = int(partition[0])
    if (partition == first).all():
        return {first: int(offset.max()) + 1}
    out: dict[int, int] = {}
    for p, o in zip(partition.tolist(), offset.tolist(), strict=True):
        o += 1
        if o > out.get(p, -1):
            out[p] = o
    return out


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
