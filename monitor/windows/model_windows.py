"""Assigning rows to windows, watermarks, and the durable state of open windows.

Time windows
    A row with event time ``t`` (epoch ms) belongs to every window
    ``[start, start + size)`` with ``start`` a multiple of ``step`` (``step`` =
    ``size`` for tumbling windows). The watermark is the running maximum event
    time minus the allowed lateness, advanced **per row in consumption order**,
    so the figures never depend on how ``poll()`` happened to cut batches. A
    row's time moves the watermark no further than min(its record's timestamp,
    the wall clock) (:func:`monitor.ingest.event_time.watermark_times`), and only
    once a second row vouched for it: the "maximum event time" is the highest
    time two rows reached, the second-highest (:func:`monitor.ingest.event_time.vouch`;
    :attr:`ModelWindows.front` is the highest). So one row stamped ahead of its
    stream does not make the rows after it late, at the live edge or far behind it
    (a backlog, a replay of history); its own window closes when the stream (or
    the idle close, by the wall clock) gets there. A window closes when the
    watermark reaches its end, one row after the first row past it. A row whose
    newest window has already closed is *late*: counted against that window,
    never added.

Count windows
    Rows of one (version, segment) are numbered in consumption order; window
    ``[start, start + size)`` of ordinals closes when its last row arrives.

Crash safety
    :meth:`ModelWindows.snapshot` returns the watermark, counters and, for each
    open window, the per-partition offset range of its rows. The pipeline
    persists it in the same transaction as the windows it closed. After a
    restart, records before the persisted consumed offset (``replay_before``)
    are re-read from Kafka and only re-fill the open windows of the snapshot:
    nothing already stored is counted again.

Window shape
    The snapshot records the :class:`~monitor.windows.shape.WindowShape` it was built
    with. Restored into another shape (the config changed between the two runs, or
    another instance with another definition wrote it), its open windows are not
    resumed but *carried* (:mod:`monitor.windows.carry`): their rows, re-read, go to
    the windows of the current shape. A snapshot without a recorded shape (older
    versions) resumes as before when its open windows fit the current shape, and is
    carried otherwise.

Partitions
    :attr:`ModelWindows.partitions` are the Kafka partitions the model's rows came
    from. The pipeline stores the model's snapshot with one of them (the lowest it
    owns), so the instance that takes the partition over resumes the model exactly:
    same watermark, same count-window positions, same open windows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from monitor.config import LimitsConfig, WindowConfig
from monitor.ingest.batch import ColumnBatch
from monitor.ingest.event_time import NO_TIME, vouch
from monitor.windows.arrival import ARRIVAL, arrival_order, joined_in_order
from monitor.windows.caps import ValueCap
from monitor.windows.carry import CarriedWindow, CarryEnded, CarryOver
from monitor.windows.shape import WindowShape
from storage.records import ALL_SEGMENTS, group_key

_NO_WM = NO_TIME
#: :meth:`OpenWindow.order` not computed since the window last changed
_UNKNOWN: Any = object()


@dataclass(slots=True)
class OpenWindow:
    """Rows collected so far for one (version, segment, start, end): ``chunks`` (shared
    with the overlapping windows of a sliding shape), read in consumption order through
    :meth:`order` (see :mod:`monitor.windows.arrival`)."""

    version: str
    segment: str
    start: int
    end: int
    chunks: list[ColumnBatch] = field(default_factory=list)
    rows: int = 0
    ranges: dict[int, list[int]] = field(default_factory=dict)
    #: offset ranges of a window restored from a snapshot (rows not yet re-read)
    saved_ranges: dict[int, list[int]] = field(default_factory=dict)
    _order: Any = field(default=_UNKNOWN, init=False, repr=False, compare=False)

    def add(self, rows: ColumnBatch) -> None:
        n = len(rows)
        if n == 0:
            return
        self.chunks.append(rows)
        self._order = _UNKNOWN
        self.rows += n
        for p, (lo, hi) in partition_ranges(rows).items():
            r = self.ranges.get(p)
            if r is None:
                self.ranges[p] = [lo, hi]
            else:
                if lo < r[0]:
                    r[0] = lo
                if hi > r[1]:
                    r[1] = hi

    def truncate(self, n_chunks: int, rows: int, ranges: dict[int, list[int]]) -> None:
        """Back to its first ``n_chunks`` chunks (an undo: ``rows`` and ``ranges`` as they were)."""
        del self.chunks[n_chunks:]
        self.rows = rows
        self.ranges = ranges
        self._order = _UNKNOWN

    def order(self) -> np.ndarray | None:
        """Positions, in the concatenation of :attr:`chunks`, of the rows in consumption
        order; None when the chunks hold them in that order already (always, but for a
        sliding window that got rows of several panes out of event-time order in one
        batch). Computed once until the window changes."""
        got = self._order
        if got is _UNKNOWN:
            got = self._order = arrival_order(self.chunks)
        return got

    def columns(self) -> dict[str, np.ndarray]:
        """All rows as one array per column, in consumption order ({} when no rows)."""
        if not self.chunks:
            return {}
        order = self.order()
        return {c: joined_in_order([ch.columns[c] for ch in self.chunks], order) for c in self.chunks[0].columns}

    def ts_ms(self) -> np.ndarray:
        """Event times (epoch ms) of the rows, in consumption order."""
        if not self.chunks:
            return np.empty(0, dtype=np.int64)
        return joined_in_order([ch.ts_ms for ch in self.chunks], self.order())

    def event_ids(self) -> np.ndarray:
        """Event ids of the rows, in consumption order."""
        if not self.chunks:
            return np.empty(0, dtype=object)
        return joined_in_order([ch.event_id for ch in self.chunks], self.order())


@dataclass(frozen=True, slots=True)
class LateRows:
    """``count`` late rows that belonged to the window (version, segment, start, end)."""

    version: str
    segment: str
    start: int
    end: int
    count: int


#: key of a chunk's partition ranges in :attr:`ColumnBatch.derived` (not a column name)
_RANGES = ("partition_ranges",)


def partition_ranges(rows: ColumnBatch) -> dict[int, tuple[int, int]]:
    """``{partition: (lowest offset, highest offset)}`` of the non-empty ``rows``, computed
    once per chunk and kept on it (a pane's chunk is added to every overlapping window)."""
    got = rows.derived.get(_RANGES)
    if got is None:
        parts = rows.partition
        first = int(parts[0])
        if (parts == first).all():
            got = {first: (int(rows.offset.min()), int(rows.offset.max()))}
        else:
            got = {}
            for p in np.unique(parts).tolist():
                offs = rows.offset[parts == p]
                got[p] = (int(offs.min()), int(offs.max()))
        rows.derived[_RANGES] = got
    return got


class _Panes:
    """The rows of one batch and group by pane (the slide-sized slot of their newest
    window), each pane's rows taken from the batch once and shared by every window
    that receives the whole pane: a sliding window of size/slide = k holds its rows
    once instead of k times. A window that receives only part of a pane (the
    watermark passed its end between two rows) gets its own copy of that part.

    ``panes`` lists, in ascending pane order, each pane's start and the positions of
    its rows in ``idx`` (ascending, so rows keep the batch's order). ``first``: the
    arrival number of the batch's first row, to number each chunk's rows by (see
    :mod:`monitor.windows.arrival`); None: not numbered (a window gets one pane per
    batch: its chunks are in consumption order by construction)."""

    __slots__ = ("_batch", "_first", "_idx", "_taken", "panes")

    def __init__(self, batch: ColumnBatch, idx: np.ndarray, newest_start: np.ndarray, first: int | None = None) -> None:
        self._batch = batch
        self._idx = idx
        self._first = first
        self._taken: dict[int, ColumnBatch] = {}
        if newest_start.shape[0] == 0:
            self.panes: list[tuple[int, np.ndarray]] = []
        elif (newest_start == newest_start[0]).all():
            self.panes = [(int(newest_start[0]), np.arange(newest_start.shape[0]))]
        else:
            uniq, inv = np.unique(newest_start, return_inverse=True)
            order = np.argsort(inv, kind="stable")
            bounds = np.searchsorted(inv[order], np.arange(uniq.shape[0] + 1))
            self.panes = [(int(u), order[bounds[i]:bounds[i + 1]]) for i, u in enumerate(uniq.tolist())]

    def rows(self, pane: int, pos: np.ndarray, sel: np.ndarray) -> ColumnBatch:
        """The rows at positions ``sel`` (a subset of pane ``pane``'s positions ``pos``),
        the pane's shared chunk when ``sel`` is all of it, else a copy of those rows."""
        if sel.shape[0] != pos.shape[0]:
            return self._numbered(self._idx[sel])
        got = self._taken.get(pane)
        if got is None:
            got = self._taken[pane] = self._numbered(self._idx[pos])
        return got

    def _numbered(self, at: np.ndarray) -> ColumnBatch:
        # ``at`` ascends without repeats: as long as the batch, it is all of it, which then is
        # the chunk itself (its arrays are the decoder's own, never written again), not a copy
        rows = self._batch if at.shape[0] == len(self._batch) else self._batch.take(at)
        if self._first is not None:
            rows.derived[ARRIVAL] = at + self._first
        return rows


def _group_indices(labels: np.ndarray) -> Iterator[tuple[Any, np.ndarray]]:
    """(label, row indices in original order) for each distinct label."""
    if labels.shape[0] == 0:
        return
    first = labels[0]
    if (labels == first).all():
        yield first, np.arange(labels.shape[0])
        return
    uniq, inv = np.unique(labels.astype(str), return_inverse=True)
    for i, u in enumerate(uniq.tolist()):
        yield u, np.nonzero(inv == i)[0]


class ModelWindows:
    """The open windows of one model across its versions and segments."""

    def __init__(
        self, model: str, window: WindowConfig, segments: tuple[str, ...] = (), limits: LimitsConfig | None = None
    ) -> None:
        self.model = model
        self.by = window.by
        self.shape = WindowShape.of(window)
        self.segments = segments
        if window.by == "time":
            self.size = _ms(window.size)
            self.step = _ms(window.step)
            self.lateness = _ms(window.lateness)
        else:
            self.size = int(window.size)
            self.step = int(window.step)
            self.lateness = 0
        self.per_row = self.size // self.step
        self.watermark: int = _NO_WM
        #: the event clock (ms): the highest (capped) event time two fresh rows reached,
        #: None until two rows were seen (see :func:`monitor.ingest.event_time.vouch`);
        #: count windows keep it too (a replay stamps their windows by it)
        self.max_ts: int | None = None
        #: the highest (capped) event time of a fresh row (ms): the clock's candidate,
        #: None before the first row
        self.front: int | None = None
        self.counters: dict[str, int] = {}
        self.open: dict[tuple[str, str, int, int], OpenWindow] = {}
        #: windows restored from a snapshot, still being re-filled from Kafka
        self._restored: set[tuple[str, str, int, int]] = set()
        self.late_total = 0
        lim = limits or LimitsConfig()
        #: fresh rows seen so far: the clock of the caps for count windows
        self.rows_seen = 0
        #: rows given to :meth:`add` so far (replayed ones too), never undone: the next
        #: arrival number of a sliding time window's rows (see :mod:`monitor.windows.arrival`)
        self.arrived = 0
        self.version_cap = ValueCap(lim.max_versions, lim.max_value_length, retire_after=self.size)
        self.segment_caps = {s: ValueCap(lim.max_segment_values, lim.max_value_length, retire_after=self.size) for s in segments}
        #: windows to close at the next :meth:`close_due` though not complete (their value was evicted)
        self._forced: set[tuple[str, str, int, int]] = set()
        #: the last batch :meth:`add` assigned, with versions and segment values capped as
        #: its windows saw them (the label join keys its rows the same way)
        self.last_capped: ColumnBatch | None = None
        #: Kafka partitions this model's rows came from (restored from snapshots too)
        self.partitions: set[int] = set()
        #: rows of old-shape windows being re-read into this shape (see :mod:`monitor.windows.carry`)
        self.carry: CarryOver | None = None
        #: count windows: per group, the first position of the current shape (windows start
        #: there or later; positions before it belong to windows of an earlier shape)
        self.origins: dict[str, int] = {}
        #: set when a carry ended; the pipeline logs it and clears it
        self.carry_ended: CarryEnded | None = None

    def capped_rows(self) -> dict[str, int]:
        """Rows sent to the ``__other__`` bucket so far, by dimension (``version``, ``segment:KEY``)."""
        out = {"version": self.version_cap.capped_rows}
        out.update({f"segment:{s}": c.capped_rows for s, c in self.segment_caps.items()})
        return out

    # -- adding rows ------------------------------------------------------------

    def add(self, batch: ColumnBatch, replay_before: Mapping[int, int] | None = None) -> list[LateRows]:
        """Assign a batch's rows; returns the late rows found (not added anywhere).

        ``replay_before`` maps a partition to the first offset not yet reflected
        in durable state; rows before it only re-fill restored open windows.
        """
        n = len(batch)
        if n == 0:
            return []
        first = int(batch.partition[0])
        if first not in self.partitions or not (batch.partition == first).all():
            self.partitions.update(np.unique(batch.partition).tolist())
        replay = np.zeros(n, dtype=bool)
        if replay_before:
            for p, o in replay_before.items():
                replay |= (batch.partition == p) & (batch.offset < o)
        late: list[LateRows] = []
        if self.by == "time":
            wm_before = self._advance_watermark(batch.wm_times(), replay)
            batch = self._capped(batch, batch.ts_ms, wm_before, replay)
            self.last_capped = batch
            first = None
            if self.per_row > 1:  # a window gets rows of several panes: number them
                first = self.arrived
                self.arrived += n
            for version, segment, idx in self._groups(batch):
                late.extend(self._add_time(batch, version, segment, idx, wm_before, replay, first))
        else:
            self._advance_clock(batch.wm_times(), replay)
            ordinal = self.rows_seen + np.cumsum(~replay)
            self.rows_seen = int(ordinal[-1])
            batch = self._capped(batch, ordinal, ordinal, replay)
            self.last_capped = batch
            for version, segment, idx in self._groups(batch):
                self._add_count(batch, version, segment, idx, replay)
        self.late_total += sum(x.count for x in late)
        return late

    def _capped(self, batch: ColumnBatch, seen_at: np.ndarray, clock: np.ndarray, replay: np.ndarray) -> ColumnBatch:
        """The batch with versions and segment values beyond their caps replaced by ``__other__``."""
        version, gone = self.version_cap.apply(batch.version, seen_at, clock, replay)
        if self.by == "count":
            self._forced.update(k for k in self.open if k[0] in gone)
        segments = dict(batch.segments)
        for s, cap in self.segment_caps.items():
            segments[s], gone = cap.apply(batch.segments[s], seen_at, clock, replay)
            if self.by == "count" and gone:
                names = {f"{s}={v}" for v in gone}
                self._forced.update(k for k in self.open if k[1] in names)
        if version is batch.version and all(segments[s] is batch.segments[s] for s in segments):
            return batch
        return ColumnBatch(
            model=batch.model, ts_ms=batch.ts_ms, partition=batch.partition, offset=batch.offset,
            event_id=batch.event_id, version=version, segments=segments, columns=batch.columns, wm_ms=batch.wm_ms,
        )

    def _groups(self, batch: ColumnBatch) -> Iterator[tuple[str, str, np.ndarray]]:
        for version, idx in _group_indices(batch.version):
            yield str(version), ALL_SEGMENTS, idx
            for s in self.segments:
                vals = batch.segments[s][idx]
                present = np.array([v is not None for v in vals], dtype=bool)
                if not present.any():
                    continue
                sub_idx = idx[present]
                for value, j in _group_indices(vals[present]):
                    yield str(version), f"{s}={value}", sub_idx[j]

    def _advance_clock(self, ts: np.ndarray, replay: np.ndarray) -> np.ndarray:
        """The event clock in force *before* each row (epoch ms, ``_NO_WM`` while none);
        moves :attr:`front` and :attr:`max_ts` by the fresh rows (replayed ones are in the
        snapshot's already).

        ``ts``: each row's time as it may move clocks (:meth:`ColumnBatch.wm_times`: its
        event time, capped at min(record timestamp, wall clock)); the clock is the highest
        of them two rows reached (:func:`monitor.ingest.event_time.vouch`), so a row stamped
        ahead of the stream moves it no further than the row before it; it is still
        windowed by its own time."""
        fresh_ts = np.where(replay, _NO_WM, ts) if replay.any() else ts
        front = self.front if self.front is not None else _NO_WM
        clock = self.max_ts if self.max_ts is not None else _NO_WM
        before, front, clock = vouch(fresh_ts, front, clock)
        if front > _NO_WM:
            self.front = front
        if clock > _NO_WM:
            self.max_ts = clock
        return before

    def _advance_watermark(self, ts: np.ndarray, replay: np.ndarray) -> np.ndarray:
        """Watermark in force *before* each row (the event clock before it minus the
        lateness, never back); updates the model's watermark. ``ts``: as for
        :meth:`_advance_clock`."""
        wm = np.maximum(self._advance_clock(ts, replay) - self.lateness, self.watermark)
        if self.max_ts is not None:
            self.watermark = max(self.watermark, self.max_ts - self.lateness)
        return wm

    def _add_time(
        self, batch: ColumnBatch, version: str, segment: str, idx: np.ndarray,
        wm_before: np.ndarray, replay: np.ndarray, first: int | None,
    ) -> list[LateRows]:
        ts = batch.ts_ms[idx]
        wm = wm_before[idx]
        rep = replay[idx]
        refill, carried = self._replayed(batch, idx, version, segment, ts, rep)
        newest_start = (ts // self.step) * self.step
        panes = _Panes(batch, idx, newest_start, first)
        late: list[LateRows] = []
        is_late = (newest_start + self.size <= wm) & ~rep
        if is_late.any():
            starts = newest_start[is_late]
            for s in np.unique(starts).tolist():
                late.append(LateRows(version, segment, s, s + self.size, int((starts == s).sum())))
        any_rep = bool(rep.any())
        carrying = self.carry is not None and bool(carried.any())
        placed = np.zeros_like(rep)
        for j in range(self.per_row):
            for pane, pos in panes.panes:
                start = pane - j * self.step
                end = start + self.size
                wm_p = wm[pos]
                if not any_rep and end > wm_p[-1]:  # watermarks only grow along the batch
                    sel = pos
                else:
                    ok = (end > wm_p) & ~rep[pos]
                    if any_rep:
                        # replayed rows re-fill the windows restored from the snapshot (they
                        # held them whatever the watermark is now), or are carried into this shape
                        key = (version, segment, start, end)
                        if key in self._restored:
                            ok |= refill[pos]
                        if carrying and key not in self.carry.stored:  # type: ignore[union-attr]
                            take = carried[pos]
                            placed[pos] |= take
                            ok |= take
                    sel = pos[ok]
                if sel.shape[0]:
                    self._window(version, segment, start, end).add(panes.rows(pane, pos, sel))
        if carrying:
            self.carry.skipped_rows += int((carried & ~placed).sum())  # type: ignore[union-attr]
        return late

    def _replayed(
        self, batch: ColumnBatch, idx: np.ndarray, version: str, segment: str, ts: np.ndarray, rep: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Which replayed rows re-fill restored windows, and which are carried into this
        shape (see :mod:`monitor.windows.carry`); without a carry, every replayed row
        may re-fill and none is carried."""
        if self.carry is None or not rep.any():
            return rep, np.zeros_like(rep)
        parts, offs = batch.partition[idx], batch.offset[idx]
        early = rep & self.carry.early(parts, offs)
        carried = early & self.carry.members(version, segment, ts, parts, offs)
        self.carry.carried_rows += int(carried.sum())
        return rep & ~early, carried

    def _add_count(
        self, batch: ColumnBatch, version: str, segment: str, idx: np.ndarray, replay: np.ndarray
    ) -> None:
        rep = replay[idx]
        if rep.any():
            refill, carried = self._replayed(batch, idx, version, segment, batch.ts_ms[idx], rep)
            ridx = idx[refill]
            parts, offs = batch.partition[ridx], batch.offset[ridx]
            for key in list(self._restored):
                if key[0] != version or key[1] != segment:
                    continue
                w = self.open[key]
                mask = np.zeros(ridx.shape[0], dtype=bool)
                for p, (lo, hi) in w.saved_ranges.items():
                    mask |= (parts == p) & (offs >= lo) & (offs <= hi)
                if mask.any():
                    w.add(batch.take(ridx[mask]))
            # carried rows take the next positions, as fresh rows do
            idx = idx[~rep | carried]
        if idx.shape[0] == 0:
            return
        gkey = group_key(version, segment)
        first = self.counters.get(gkey, 0)
        seq = first + np.arange(idx.shape[0], dtype=np.int64)
        self.counters[gkey] = first + idx.shape[0]
        newest_start = (seq // self.step) * self.step
        panes = _Panes(batch, idx, newest_start)
        origin = self.origins.get(gkey, 0)
        for j in range(self.per_row):
            for pane, pos in panes.panes:
                start = pane - j * self.step
                if start >= origin:
                    self._window(version, segment, start, start + self.size).add(panes.rows(pane, pos, pos))

    def _window(self, version: str, segment: str, start: int, end: int) -> OpenWindow:
        key = (version, segment, start, end)
        w = self.open.get(key)
        if w is None:
            w = self.open[key] = OpenWindow(version, segment, start, end)
        return w

    # -- closing ------------------------------------------------------------------

    def close_due(self) -> list[OpenWindow]:
        """Remove and return the windows that are complete, oldest first (none while rows
        are being carried into this shape: a window may still get some)."""
        if self.carry is not None:
            return []
        if self.by == "time":
            due = [k for k in self.open if k[3] <= self.watermark]
        else:
            due = [k for k in self.open if k[3] <= self.counters.get(group_key(k[0], k[1]), 0) or k in self._forced]
            for k in self._forced & set(due):
                # an evicted value that comes back starts with fresh windows
                g = group_key(k[0], k[1])
                self.counters[g] = max(self.counters.get(g, 0), k[3])
            self._forced.clear()
        due.sort(key=lambda k: (k[3], k[2], k[0], k[1]))
        out = [self.open.pop(k) for k in due]
        self._restored.difference_update(due)
        return out

    def close_idle(self, now_ms: int) -> list[OpenWindow]:
        """For an idle stream: close every window that has ended by the wall clock.

        The watermark moves to ``max(event clock, now - lateness)``: a stream
        that went quiet still gets its last windows closed once their end has
        passed. Rows that arrive later for them are late. The event clock is
        :attr:`max_ts`, which no single row moved (a row stamped ahead moves it no
        further than the rows before it): that row's window closes once ``now -
        lateness`` passes it. A stream of one row so far has no event clock; the wall
        clock alone closes its window.
        """
        if self.carry is not None:
            # idle while rows were still to be re-read: they are not coming (gone from Kafka)
            self._end_carry(idle=True)
        if self.by != "time" or self.front is None:
            return []
        clock = self.max_ts if self.max_ts is not None else _NO_WM
        self.watermark = max(self.watermark, clock, now_ms - self.lateness)
        return self.close_due()

    def passed(self, next_offsets: Mapping[int, int]) -> None:
        """The consumer has read each partition up to ``next_offsets`` (exclusive): a carry
        whose rows have all been re-read ends (windows close again from the next
        :meth:`close_due`; :attr:`carry_ended` says what it did)."""
        if self.carry is not None and self.carry.passed(next_offsets):
            self._end_carry(idle=False)

    def _end_carry(self, *, idle: bool) -> None:
        c = self.carry
        assert c is not None
        self.carry = None
        self.carry_ended = CarryEnded(self.model, len(c.windows), c.carried_rows, c.skipped_rows, idle)

    def first_offsets(self) -> dict[int, int]:
        """Per partition, the smallest offset held by an open window."""
        out: dict[int, int] = self.carry.first_offsets() if self.carry is not None else {}
        for w in self.open.values():
            for src in (w.saved_ranges, w.ranges):
                for p, (lo, _hi) in src.items():
                    out[p] = min(out.get(p, lo), lo)
        return out

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget the open windows holding rows of ``partitions`` (now owned by another
        group member, which rebuilds them from the committed offset). Returns how many."""
        gone = [
            k for k, w in self.open.items()
            if any(p in partitions for src in (w.ranges, w.saved_ranges) for p in src)
        ]
        for k in gone:
            del self.open[k]
            self._restored.discard(k)
        self.partitions -= partitions
        if self.carry is not None:
            self.carry.drop_partitions(partitions)
            if not self.carry.windows:
                self.carry = None
        return len(gone)

    # -- undo -----------------------------------------------------------------------

    def checkpoint(self) -> dict[str, Any]:
        """An in-memory undo point: O(open windows), no row copied."""
        return {
            "scalars": (self.watermark, self.max_ts, self.front, self.late_total, self.rows_seen),
            "partitions": set(self.partitions),
            "counters": dict(self.counters),
            "open": dict(self.open),
            "windows": [
                (w, len(w.chunks), w.rows, {p: list(r) for p, r in w.ranges.items()}) for w in self.open.values()
            ],
            "restored": set(self._restored),
            "forced": set(self._forced),
            "caps": (self.version_cap.snapshot(), {s: c.snapshot() for s, c in self.segment_caps.items()}),
            "carry": (self.carry, self.carry.mark() if self.carry is not None else None, self.carry_ended),
        }

    def rollback(self, cp: dict[str, Any]) -> None:
        """Return to ``cp`` (from :meth:`checkpoint`), undoing every row added since."""
        self.watermark, self.max_ts, self.front, self.late_total, self.rows_seen = cp["scalars"]
        self.partitions = cp["partitions"]
        self.counters = cp["counters"]
        self.open = cp["open"]
        for w, n_chunks, rows, ranges in cp["windows"]:
            w.truncate(n_chunks, rows, ranges)
        self._restored = cp["restored"]
        self._forced = cp["forced"]
        self.carry, mark, self.carry_ended = cp["carry"]
        if self.carry is not None:
            self.carry.undo(mark)
        version, segments = cp["caps"]
        self.version_cap.restore(version)
        for s, c in self.segment_caps.items():
            c.restore(segments.get(s, {}))

    # -- persistence --------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state: the window shape, watermark, counters and open windows with
        offset ranges (and the rows still being carried into this shape, if any)."""
        wins = []
        for (v, s, start, end), w in self.open.items():
            ranges: dict[int, list[int]] = {}
            for src in (w.saved_ranges, w.ranges):
                for p, (lo, hi) in src.items():
                    r = ranges.get(p)
                    ranges[p] = [lo, hi] if r is None else [min(r[0], lo), max(r[1], hi)]
            wins.append({"v": v, "s": s, "start": start, "end": end, "rows": w.rows,
                         "ranges": {str(p): r for p, r in ranges.items()}})
        out = {
            "shape": self.shape.to_state(),
            "watermark": int(self.watermark),
            "max_ts": self.max_ts,
            "front": self.front,
            "counters": dict(self.counters),
            "late_total": self.late_total,
            "open": wins,
            "rows_seen": self.rows_seen,
            "partitions": sorted(self.partitions),
            "caps": {
                "version": self.version_cap.snapshot(),
                "segments": {s: c.snapshot() for s, c in self.segment_caps.items()},
            },
        }
        if self.carry is not None:
            out["carry"] = self.carry.to_state()
        if self.origins:
            out["origins"] = dict(self.origins)
        return out

    def restore(self, snap: Mapping[str, Any], offsets: Mapping[int, int] | None = None) -> Resumed:
        """Reload a snapshot; open windows start empty and are re-filled by the replay.

        ``offsets``: per partition, the first offset not reflected in the snapshot (the
        replay boundary). A snapshot built with another window shape is carried into
        this one (see :mod:`monitor.windows.carry`): its rows re-read before ``offsets``
        go to this shape's windows. Returns what was found (:class:`Resumed`).
        """
        saved = WindowShape.from_state(snap.get("shape"))
        old_by = saved.by if saved is not None else _infer_by(snap)
        wins = list(snap.get("open", []))
        if saved is not None:
            same = saved == self.shape
        else:  # older state: resumed as before if its open windows fit
            same = old_by == self.by and all(self.shape.fits(int(w["start"]), int(w["end"])) for w in wins)
        kept_by = old_by == self.by
        self.watermark = int(snap.get("watermark", _NO_WM)) if kept_by else _NO_WM
        self.max_ts = snap.get("max_ts") if kept_by else None
        # older snapshots kept no front: their clock, which was in force already
        self.front = snap.get("front", self.max_ts) if kept_by else None
        self.counters = {k: int(v) for k, v in snap.get("counters", {}).items()} if kept_by else {}
        self.origins = {k: int(v) for k, v in snap.get("origins", {}).items()} if kept_by else {}
        self.late_total = int(snap.get("late_total", 0))
        self.rows_seen = int(snap.get("rows_seen", 0))
        self.partitions = {int(p) for p in snap.get("partitions", [])}
        caps = snap.get("caps", {})
        self.version_cap.restore(caps.get("version", {}))
        for s, c in self.segment_caps.items():
            c.restore(caps.get("segments", {}).get(s, {}))
        if not kept_by:  # the caps' clock was event time, now it is rows (or the reverse)
            clock = self.rows_seen if self.by == "count" else 0
            for cap in (self.version_cap, *self.segment_caps.values()):
                cap.last_seen = dict.fromkeys(cap.last_seen, clock)
        self.open = {}
        self._restored = set()
        prior = CarryOver.from_state(snap["carry"]) if isinstance(snap.get("carry"), Mapping) else None
        self.carry = None
        self.carry_ended = None
        if same:
            for w in wins:
                key = (w["v"], w["s"], int(w["start"]), int(w["end"]))
                ow = OpenWindow(*key)
                ow.saved_ranges = {int(p): list(r) for p, r in w["ranges"].items()}
                self.open[key] = ow
                self._restored.add(key)
                self.partitions.update(ow.saved_ranges)
            if prior is not None:  # stopped while carrying rows into this very shape: go on
                self.carry = prior
        else:
            carried = [CarriedWindow.from_state(w, old_by) for w in wins]
            carried += prior.windows if prior is not None else []
            for g, n in self.counters.items():  # count windows of this shape begin after the old ones
                self.origins[g] = n = -(-n // self.step) * self.step
                self.counters[g] = n
            if carried:
                parts = {p for w in carried for p in w.ranges}
                self.carry = CarryOver(saved, carried, {p: int(o) for p, o in (offsets or {}).items() if p in parts})
        if self.carry is not None:
            self.carry.wait_for(w.saved_ranges for w in self.open.values())
            for w in self.carry.windows:
                self.partitions.update(w.ranges)
        return Resumed(self.model, saved, self.shape, same, len(wins), self.carry)

    @property
    def event_watermark(self) -> int | None:
        """The watermark to show (epoch ms): None for count windows (their event clock,
        :attr:`max_ts`, stamps replayed windows, but no watermark moves with it) and for a
        time model without an event clock yet (fewer than two rows)."""
        if self.by != "time" or self.max_ts is None:
            return None
        return self.watermark

    @property
    def live(self) -> bool:
        """Whether the model holds any state (rows seen, a watermark, open windows)."""
        return bool(self.partitions or self.open or self.front is not None or self.counters or self.carry)


@dataclass(frozen=True, slots=True)
class Resumed:
    """What :meth:`ModelWindows.restore` found: the shape the state was built with
    (``saved``, None when not recorded) against the configured one, and the carry
    (None when the open windows resumed as they were)."""

    model: str
    saved: WindowShape | None
    shape: WindowShape
    same: bool
    open_windows: int
    carry: CarryOver | None

    def carried_span(self) -> tuple[int | None, int | None] | None:
        """The event times (ms) between which windows of this shape may receive carried
        rows: to look up which of them are stored already (a carried row never rewrites
        one). None: nothing to look up (count windows: carried rows take positions after
        every stored window). ``(None, None)``: unbounded (rows of old count windows,
        whose event times the state does not tell)."""
        if self.carry is None or self.shape.by != "time":
            return None
        if any(w.by != "time" for w in self.carry.windows):
            return (None, None)
        return (min(w.start for w in self.carry.windows), max(w.end for w in self.carry.windows))


def _infer_by(snap: Mapping[str, Any]) -> str:
    """Time or count, for a snapshot that did not record its shape."""
    if snap.get("max_ts") is not None:
        return "time"
    return "count" if snap.get("counters") else "time"


def _ms(td: timedelta) -> int:
    return round(td.total_seconds() * 1000)
