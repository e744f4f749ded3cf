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

Entries live in two sorted numpy arrays (hash, ts), plus a dict of the ones added
since the last merge; the dict is merged in (``O(n + m log m)``) once it holds an
eighth of the arrays. Memory: 16 bytes an id merged, ~100 bytes an id in the dict.

A prune only moves a cutoff (entries older than it are no longer returned); the
arrays drop them at the next merge, or at a prune once the rows deleted since the
last compaction reach a quarter of the entries, so the work of forgetting is spread
over many window steps instead of copying every array at each one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

#: the dict of recent entries is merged into the arrays once it holds this many, or
#: an eighth of the arrays, whichever is more
MIN_RECENT = 65_536

#: an id's 64-bit key (Python's string hash: fast, and cached on each string object)
key_of: Callable[[str], int] = hash


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """The 64-bit keys of ``ids`` (int64), as :class:`HeldIds` keeps them."""
    return np.fromiter(map(key_of, ids), dtype=np.int64, count=len(ids))


class HeldIds:
    """One model's held prediction ids (see the module documentation)."""

    __slots__ = ("_hash", "_ts", "_recent", "_clash", "_min_ts", "_cutoff", "_dead")

    def __init__(self) -> None:
        self._hash = np.empty(0, dtype=np.int64)  # sorted
        self._ts = np.empty(0, dtype=np.int64)  # the event time of each hash (ms)
        #: hash -> ts added since the last merge
        self._recent: dict[int, int] = {}
        #: (hash, ts) added since the last merge whose hash ``_recent`` holds already
        self._clash: list[tuple[int, int]] = []
        self._min_ts: int | None = None
        #: entries with ``ts`` below this are forgotten (dropped by the next compaction,
        #: which clears it; an add below it compacts first)
        self._cutoff: int | None = None
        #: rows deleted since the last compaction, as the caller counted them
        self._dead = 0

    def __len__(self) -> int:
        """Entries kept, forgotten ones not yet compacted away included."""
        return int(self._hash.shape[0]) + len(self._recent) + len(self._clash)

    @property
    def nbytes(self) -> int:
        """Memory held by the merged arrays (bytes; the recent dict not counted)."""
        return int(self._hash.nbytes + self._ts.nbytes)

    def add(self, ids: Sequence[str], ts: Sequence[int]) -> None:
        """Record predictions ``ids`` held at event times ``ts`` (ms), one per id."""
        if not ts:
            return
        low = int(min(ts))
        if self._cutoff is not None and low < self._cutoff:
            self._compact()  # forget what is below the cutoff, not these entries (held again)
        recent, clash = self._recent, self._clash
        for h, t in zip(map(key_of, ids), ts, strict=True):
            if h in recent:
                clash.append((h, int(t)))
            else:
                recent[h] = int(t)
        self._min_ts = low if self._min_ts is None else min(self._min_ts, low)
        if len(recent) + len(clash) >= max(MIN_RECENT, self._hash.shape[0] // 8):
            self._merge()

    def candidates(self, ids: Sequence[str]) -> list[tuple[str, int]]:
        """``(id, ts)`` for every entry whose hash is an id's among ``ids``: each held id of
        ``ids`` is among them with its event time (confirm by the primary key; the others
        are pruned rows or other ids sharing a hash)."""
        if not ids or not len(self):
            return []
        out: list[tuple[str, int]] = []
        hashes = id_hashes(ids)
        if self._hash.shape[0]:
            lo = np.searchsorted(self._hash, hashes, side="left")
            hi = np.searchsorted(self._hash, hashes, side="right")
            count = hi - lo
            one = np.flatnonzero(count == 1)  # the usual find: one entry for the hash
            if one.shape[0]:
                out.extend(zip(map(ids.__getitem__, one.tolist()), self._ts[lo[one]].tolist(), strict=True))
            ts = self._ts
            for i in np.flatnonzero(count > 1).tolist():
                out.extend((ids[i], t) for t in ts[lo[i]:hi[i]].tolist())
        recent = self._recent
        if recent:
            get = recent.get
            for i, h in enumerate(hashes.tolist()):
                t = get(h)
                if t is not None:
                    out.append((ids[i], t))
        if self._clash:  # (a prune may have emptied ``_recent`` and left these)
            wanted: dict[int, list[int]] = {}
            for i, h in enumerate(hashes.tolist()):
                wanted.setdefault(h, []).append(i)
            for h, t in self._clash:
                out.extend((ids[i], t) for i in wanted.get(h, ()))
        cutoff = self._cutoff
        if cutoff is not None and self._min_ts is not None and self._min_ts < cutoff:
            out = [c for c in out if c[1] >= cutoff]
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
        """Drop the forgotten entries (``ts`` below the cutoff) from the arrays and the dict."""
        cutoff, self._cutoff, self._dead = self._cutoff, None, 0
        if cutoff is None:
            return
        keep = self._ts >= cutoff
        if not keep.all():
            self._hash, self._ts = self._hash[keep], self._ts[keep]
        self._recent = {h: t for h, t in self._recent.items() if t >= cutoff}
        self._clash = [(h, t) for h, t in self._clash if t >= cutoff]
        lows = [t for t in (self._ts.min() if self._ts.shape[0] else None, min(self._recent.values(), default=None),
                            min((t for _h, t in self._clash), default=None)) if t is not None]
        self._min_ts = int(min(lows)) if lows else None

    def _merge(self) -> None:
        """Move the recent entries into the sorted arrays (and compact: the arrays are
        copied anyway)."""
        self._compact()
        parts_h: list[np.ndarray] = []
        parts_t: list[np.ndarray] = []
        if self._recent:
            parts_h.append(np.fromiter(self._recent.keys(), dtype=np.int64, count=len(self._recent)))
            parts_t.append(np.fromiter(self._recent.values(), dtype=np.int64, count=len(self._recent)))
        if self._clash:
            parts_h.append(np.fromiter((h for h, _t in self._clash), dtype=np.int64, count=len(self._clash)))
            parts_t.append(np.fromiter((t for _h, t in self._clash), dtype=np.int64, count=len(self._clash)))
        self._recent, self._clash = {}, []
        if not parts_h:
            return
        add_h = np.concatenate(parts_h)
        add_t = np.concatenate(parts_t)
        order = np.argsort(add_h, kind="stable")
        add_h, add_t = add_h[order], add_t[order]
        at = np.searchsorted(self._hash, add_h, side="right")
        self._hash = np.insert(self._hash, at, add_h)
        self._ts = np.insert(self._ts, at, add_t)


def build(chunks: Iterable[tuple[Sequence[str], Sequence[int]]]) -> HeldIds:
    """A :class:`HeldIds` of the held predictions read in ``chunks`` of (ids, ts). Memory
    at its peak: about twice the result's (the ids are hashed chunk by chunk, then
    sorted once)."""
    hashes: list[np.ndarray] = []
    times: list[np.ndarray] = []
    for ids, ts in chunks:
        hashes.append(id_hashes(ids))
        times.append(np.asarray(ts, dtype=np.int64))
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
