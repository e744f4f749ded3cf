"""Offsets Kafka skipped before the daemon read them: records deleted unread.

When a partition's records are deleted (``retention.ms``/``retention.bytes``, or
``kafka-delete-records``) before the consumer reaches them, its next fetch is out of
range and Kafka resets it to ``kafka.auto_offset_reset`` (earliest: the log's new start;
latest: its end). The offsets in between are never read: never counted, never
dead-lettered. kafka-python 3 says so only in an INFO line of its fetcher (below the
WARNING its loggers are kept at), so the daemon finds it from the offsets it reads.

The rule (cheap on the hot path, quiet on transactional and compacted topics):

1. *Suspect*: a partition's first record of a poll is more than :data:`MARKER_GAP`
   offsets past where its consumer was reading next (one comparison per partition and
   poll, see :meth:`monitor.service.pipeline.Pipeline.process_records`). A gap of one
   offset at a poll boundary is a transaction's commit or abort marker.
2. *Confirm*: after the poll the daemon asks the broker each suspect partition's log
   start offset (one ListOffsets request per topic). Only when it is past where the
   consumer was reading were records deleted unread: the consumer cannot have moved
   from there but by an offset reset, and the whole gap is counted as skipped (with
   ``latest`` also the records that still exist between the log's start and its end).
   Otherwise the gap was a hole of the log (compaction, an aborted transaction's
   records under ``isolation_level = read_committed``, several markers) and nothing is said.

Not detected: a reset of a partition whose position the daemon did not know (no stored
state, it starts from the group's committed offset), a reset to ``latest`` after which
nothing was produced yet (counted once a record arrives), and a second gap of a
partition found while the broker could not be asked for :data:`RETRY_SECONDS` (kept
and asked again; at most :data:`MAX_PENDING` are kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.ingest.batch import first_offsets

log = logging.getLogger("driftwarden.ingest")

#: a gap of this many offsets at a poll boundary is normal: a transaction's marker
MARKER_GAP = 1
#: seconds between two WARNING lines per topic (what was skipped meanwhile is summed)
WARN_EVERY = 60.0
#: seconds before asking the broker again after it did not answer
RETRY_SECONDS = 10.0
#: suspect gaps kept unconfirmed at most (the broker away); later ones are dropped
MAX_PENDING = 1000

#: where each ``kafka.auto_offset_reset`` moves a consumer whose offset was deleted
_RESET_TO = {
    "earliest": "the log's new start",
    "latest": "the log's end (skipping the records still there too)",
}

#: ``log_starts(topic, partitions)``: the broker's log start offset of each partition
LogStarts = Callable[[str, list[int]], Mapping[int, int]]


@dataclass(frozen=True)
class Gap:
    """Offsets ``expected`` up to ``first - 1`` of a partition were not read."""

    topic: str
    partition: int
    expected: int
    first: int


@dataclass
class _Unsaid:
    """Skipped offsets of one partition not logged yet: how many, lowest and highest."""

    count: int
    low: int
    high: int


class SkippedOffsets:
    """Suspect gaps, confirmed against the broker's log start; counted and logged.

    ``totals`` (``{(topic, partition): offsets}``) only grows: ``/metrics`` exposes it as
    ``driftwarden_skipped_offsets_total``. ``reset``: the consumer's ``auto_offset_reset``
    (named in the WARNING). ``clock``: monotonic seconds.
    """

    def __init__(self, reset: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.reset = reset
        self.clock = clock
        self.pending: list[Gap] = []
        self.totals: dict[tuple[str, int], int] = {}
        self._unsaid: dict[str, dict[int, _Unsaid]] = {}
        self._told_at: dict[str, float] = {}
        self._retry_at = 0.0

    def suspect(self, topic: str, partition: int, expected: int, first: int) -> None:
        """A poll's first record of ``partition`` at ``first`` where ``expected`` was next
        (the caller checked ``first > expected + MARKER_GAP``); confirmed by :meth:`confirm`."""
        if len(self.pending) < MAX_PENDING:
            self.pending.append(Gap(topic, partition, expected, first))
        else:
            log.debug("topic %s partition %d: gap %d..%d not checked (too many pending)", topic, partition, expected, first - 1)

    def confirm(self, log_starts: LogStarts) -> None:
        """Ask the broker the log start of each suspect partition; count the gaps whose
        records were deleted before they were read, drop the others (holes of the log).
        A topic whose answer fails keeps its gaps for :data:`RETRY_SECONDS`. Never raises."""
        if not self.pending or self.clock() < self._retry_at:
            return
        kept: list[Gap] = []
        for topic in sorted({g.topic for g in self.pending}):
            gaps = [g for g in self.pending if g.topic == topic]
            try:
                starts = log_starts(topic, sorted({g.partition for g in gaps}))
            except Exception as exc:  # noqa: BLE001 - a question to the broker must not stop the loop
                log.debug("topic %s: log start offsets not known (%s); asked again later", topic, exc)
                self._retry_at = self.clock() + RETRY_SECONDS
                kept.extend(gaps)
                continue
            for g in gaps:
                start = starts.get(g.partition)
                if start is not None and start > g.expected:
                    self._count(g)
                else:
                    log.debug("topic %s partition %d: offsets %d..%d not in the log (compaction or"
                              " transactions)", topic, g.partition, g.expected, g.first - 1)
        self.pending = kept
        self.tell()

    def _count(self, g: Gap) -> None:
        n = g.first - g.expected
        key = (g.topic, g.partition)
        self.totals[key] = self.totals.get(key, 0) + n
        u = self._unsaid.setdefault(g.topic, {}).get(g.partition)
        if u is None:
            self._unsaid[g.topic][g.partition] = _Unsaid(n, g.expected, g.first - 1)
        else:
            u.count, u.low, u.high = u.count + n, min(u.low, g.expected), max(u.high, g.first - 1)

    def tell(self) -> None:
        """Log what was skipped and not logged yet: per topic at most one WARNING every
        :data:`WARN_EVERY` seconds, summing what came meanwhile (called again each turn)."""
        if not self._unsaid:
            return
        now = self.clock()
        for topic in sorted(self._unsaid):
            told = self._told_at.get(topic)
            if told is not None and now - told < WARN_EVERY:
                continue
            parts = self._unsaid.pop(topic)
            self._told_at[topic] = now
            total = sum(u.count for u in parts.values())
            where = "; ".join(
                f"partition {p}: {u.count} (offsets {u.low}..{u.high})" for p, u in sorted(parts.items())
            )
            log.warning(
                "topic %s: %d offsets skipped unread (%s): records were deleted (the topic's"
                " retention.ms/retention.bytes, or deleted by hand) before this daemon read them,"
                " and Kafka reset the consumer to %s (kafka.auto_offset_reset = %s); those offsets"
                " were not counted nor dead-lettered. The daemon was down or lagging for longer"
                " than the topic's retention: raise the retention or add instances",
                topic, total, where, _RESET_TO.get(self.reset, self.reset), self.reset,
            )


def went_back(
    records: Sequence[Any], fetch_next: Mapping[int, int], skipped: SkippedOffsets | None, topic: str
) -> list[tuple[int, int, int]]:
    """Where each partition's records of one poll of ``topic`` begin, against where its
    consumer was reading next (``fetch_next``; a partition not in it is not checked).
    Records beginning more than :data:`MARKER_GAP` offsets after it are a gap, handed to
    ``skipped`` (None: not looked for) to confirm with the broker; the partitions whose
    records begin before it are returned as ``(partition, first offset, expected
    offset)``: their log went back (the topic deleted and recreated, or its records
    deleted), which the caller handles. Kafka hands each partition's records in offset
    order: one comparison per partition and poll."""
    back: list[tuple[int, int, int]] = []
    for p, first in first_offsets(records).items():
        expected = fetch_next.get(p)
        if expected is None:
            continue
        if first > expected + MARKER_GAP:
            if skipped is not None:
                skipped.suspect(topic, p, expected, first)
        elif first < expected:
            back.append((p, first, expected))
    return back
