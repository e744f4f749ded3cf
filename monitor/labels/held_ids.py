"""Where the label join holds each prediction id: id -> the event times that may hold it.

A label names its prediction by id only, while the join's table is keyed (and
clustered) by ``(model, ts, event_id)``. A unique index on ``(model, event_id)``
answered that before, and cost most of the join's writes on SQLite: random ids
(UUIDs) land on random pages of the index, so every flush rewrote about one 4 KiB
page per prediction in the write-ahead log once the index outgrew a flush (10 µs
a prediction at a million held, against 1.2 µs without the index).

:class:`HeldIds` keeps that answer in memory instead, 16 bytes an id: the id's
64-bit hash (Python's ``hash``, salted per process, so each process builds its own
from the table) next to the prediction's event time. It is a *superset* of the
table: every held prediction has its entry; an entry whose row is gone (pruned, or
two ids sharing a hash) is harmless, because callers confirm each candidate with a
primary-key read ``(model, ts, event_id)``. Lookups never miss a held id, and never
report one that is not held.

Entries live in sorted numpy arrays (hash, and the event time beside it), no Python
object per id: one large *base* pair, and the *runs* added since it was last
rebuilt, each sorted on its own (an add sorts its ids: ``O(m log m)``). A new run
is merged with the run before it while that one is at most twice its size, so
there are ``O(log m)`` runs; all runs are merged into the base
(``O(n + m log m)``) once they hold an eighth of it. A lookup is a binary search
in each array, for all ids at once.

A prune only moves a cutoff (entries older than it are no longer returned); the
arrays drop them at the next rebuild of the base, or at a prune once the rows
deleted since the last compaction reach a quarter of the entries, so the work of
forgetting is spread over many window steps instead of copying every array at
each one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

#: the runs are merged into the base once they hold this many entries, or an eighth
#: of the base, whichever is more
MIN_RECENT = 65_536

#: an id's 64-bit key (Python's string hash: fast, and cached on each string object)
key_of: Callable[[str], int] = hash

_EMPTY = np.empty(0, dtype=np.int64)


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """The 64-bit keys of ``ids`` (int64), as :class:`HeldIds` keeps them."""
    return np.fromiter(map(key_of, ids), dtype=np.int64, count=len(ids))


def _sorted_pair(h: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(h, t)`` ordered by ``h`` (stable: two sorted runs concatenated merge in O(n))."""
    order = np.argsort(h, kind="stable")
    return h[order], t[order]


class HeldIds:
    """One model's held prediction ids (see the module documentation)."""

    __slots__ = ("_hash", "_ts", "_runs", "_run_len", "_min_ts", "_cutoff", "_dead")

    def __init__(self) -> None:
        self._hash = _EMPTY  # sorted
        self._ts = _EMPTY  # the event time of each hash (ms)
        #: (hash, ts) pairs added since the base was rebuilt, each sorted by hash;
        #: sizes decrease along the list (each at most half the one before, roughly)
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._run_len = 0
        self._min_ts: int | None = None
        #: entries with ``ts`` below this are forgotten (dropped by the next compaction,
        #: which clears it; an add below it compacts first)
        self._cutoff: int | None = None
        #: rows deleted since the last compaction, as the caller counted them
        self._dead = 0

    def __len__(self) -> int:
        """Entries kept, forgotten ones not yet compacted away included."""
        return int(self._hash.shape[0]) + self._run_len

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (bytes)."""
        return int(self._hash.nbytes + self._ts.nbytes) + 16 * self._run_len

    def add(self, ids: Sequence[str], ts: Sequence[int]) -> None:
        """Record predictions ``ids`` held at event times ``ts`` (ms), one per id."""
        if len(ids) != len(ts):
            raise ValueError(f"{len(ids)} ids, {len(ts)} event times")
        if not ids:
            return
        t = np.asarray(ts, dtype=np.int64)
        low = int(t.min())
        if self._cutoff is not None and low < self._cutoff:
            self._compact()  # forget what is below the cutoff, not these entries (held again)
        runs = self._runs
        runs.append(_sorted_pair(id_hashes(ids), t))
        self._run_len += len(ids)
        while len(runs) >= 2 and runs[-2][0].shape[0] <= 2 * runs[-1][0].shape[0]:
            (h1, t1), (h2, t2) = runs[-2], runs.pop()
            runs[-1] = _sorted_pair(np.concatenate((h1, h2)), np.concatenate((t1, t2)))
        self._min_ts = low if self._min_ts is None else min(self._min_ts, low)
        if self._run_len >= max(MIN_RECENT, self._hash.shape[0] // 8):
            self._merge()

    def candidates(self, ids: Sequence[str]) -> list[tuple[str, int]]:
        """``(id, ts)`` for every entry whose hash is an id's among ``ids``: each held id of
        ``ids`` is among them with its event time (confirm by the primary key; the others
        are pruned rows or other ids sharing a hash)."""
        if not ids or not len(self):
            return []
        hashes = id_hashes(ids)
        order = np.argsort(hashes)
        wanted = hashes[order]  # sorted needles: each search starts near the last one
        cutoff = self._cutoff if self._min_ts is not None and self._cutoff is not None and \
            self._min_ts < self._cutoff else None
        out: list[tuple[str, int]] = []
        where: list[np.ndarray] = []  # positions in ``ids`` of single finds
        when: list[np.ndarray] = []  # their event times
        for h, ts in ((self._hash, self._ts), *self._runs):
            n = h.shape[0]
            if not n:
                continue
            lo = np.searchsorted(h, wanted, side="left")
            at = np.minimum(lo, n - 1)
            hit = np.flatnonzero(h[at] == wanted)
            if not hit.shape[0]:
                continue
            first = lo[hit]
            after = np.minimum(first + 1, n - 1)
            more = (first + 1 < n) & (h[after] == wanted[hit])  # the hash has several entries
            one = hit[~more]  # the usual find: one entry for the hash
            found = ts[lo[one]]
            if cutoff is not None:
                live = found >= cutoff
                one, found = one[live], found[live]
            where.append(order[one])
            when.append(found)
            for i in hit[more].tolist():
                end = int(np.searchsorted(h, wanted[i], side="right"))
                eid = ids[int(order[i])]
                out.extend((eid, t) for t in ts[lo[i]:end].tolist() if cutoff is None or t >= cutoff)
        if where:  # by event time: the key reads that confirm them then follow the table's order
            pos = np.concatenate(where)
            times = np.concatenate(when)
            by_time = np.argsort(times, kind="stable")
            out[:0] = zip(map(ids.__getitem__, pos[by_time].tolist()), times[by_time].tolist(), strict=True)
        return out

    def prune(self, before_ts: int, dropped: int) -> None:
        """Forget the entries with ``ts < before_ts``: their ``dropped`` rows were deleted.
        O(1), except when the rows deleted since the last compaction reach a quarter of
        the entries: then O(n) once (see the module documentation)."""
        if self._min_ts is None or before_ts <= self._min_ts:
            return
        if self._cutoff is None or before_ts > self._cutoff:
            self._cutoff = before_ts
        self._dead += max(0, int(dropped))
        if self._dead * 4 >= len(self):
            self._compact()

    def _compact(self) -> None:
        """Drop the forgotten entries (``ts`` below the cutoff) from every array."""
        cutoff, self._cutoff, self._dead = self._cutoff, None, 0
        if cutoff is None:
            return
        keep = self._ts >= cutoff
        if not keep.all():
            self._hash, self._ts = self._hash[keep], self._ts[keep]
        runs = []
        for h, t in self._runs:
            keep = t >= cutoff
            if keep.any():
                runs.append((h, t) if keep.all() else (h[keep], t[keep]))
        self._runs = runs
        self._run_len = sum(h.shape[0] for h, _t in runs)
        lows = [int(t.min()) for t in (self._ts, *(t for _h, t in runs)) if t.shape[0]]
        self._min_ts = min(lows) if lows else None

    def _merge(self) -> None:
        """Move the runs into the base (and compact: the base is copied anyway)."""
        self._compact()
        if not self._runs:
            return
        add_h, add_t = _sorted_pair(np.concatenate([h for h, _t in self._runs]),
                                    np.concatenate([t for _h, t in self._runs]))
        self._runs, self._run_len = [], 0
        at = np.searchsorted(self._hash, add_h, side="right")
        self._hash = np.insert(self._hash, at, add_h)
        self._ts = np.insert(self._ts, at, add_t)


def build(
    chunks: Iterable[tuple[Sequence[str], Sequence[int]]], progress: Callable[[], object] | None = None
) -> HeldIds:
    """A :class:`HeldIds` of the held predictions read in ``chunks`` of (ids, ts);
    ``progress`` is called after each chunk (a build of many millions takes a while: the
    daemon's liveness checks must see it advance). Memory at its peak: about twice the
    result's (the ids are hashed chunk by chunk, then sorted once)."""
    hashes: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for ids, ts in chunks:
        hashes.append(id_hashes(ids))
        times.append(np.asarray(ts, dtype=np.int64))
        if progress is not None:
            progress()
    held = HeldIds()
    if hashes:
        h = np.concatenate(hashes)
        hashes.clear()
        t = np.concatenate(times)
        times.clear()
        order = np.argsort(h, kind="stable")
        h = h[order]
        t = t[order]
        del order
        held._hash, held._ts = h, t
        held._min_ts = int(t.min()) if t.shape[0] else None
    return held
