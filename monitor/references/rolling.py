"""Rolling and seasonal references: judge a window against earlier stored windows.

``reference_mode = "rolling"``: a window is judged against the union of the
last ``reference_windows`` stored windows of the same (version, segment) that
end at or before its start (sliding windows never compare with rows they
share) and were not judged drifted (unless ``rolling_include_drifted``).

``reference_mode = "seasonal"``: against the windows of the same (version,
segment) that started exactly ``k * season`` earlier, ``k = 1 ..
reference_windows`` (the same phase of previous seasons), likewise only those
not judged drifted.

Until enough earlier windows exist (``reference_windows`` of them for
rolling, one previous season for seasonal) the reference file is used: the
file seeds the start, and windows judged against it always become members
(with seasonal data the file cries wolf, so its verdicts cannot choose). Each member window's rows are prepared once when it is
stored (at most :data:`MEMBER_MAX_ROWS` rows, a seeded sample of bigger
windows) and unions are merged from the members' prepared state
(:func:`detectors.merge_prepared`), never re-read from rows. Members are
written to ``reference_members`` in the same transaction as their window, so
a restarted daemon judges with exactly the same reference. Thresholds in
calibrated mode come from the reference file's calibration, looked up at the
union's effective size. ``windows.reference`` names the union
(``rolling:<hash of its member ids>``).
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import numpy as np

from detectors import PreparedReference, merge_prepared, prepare_reference
from monitor.windows.figures import PreparedModel, WindowFigures
from storage.db import Store
from storage.payloads import PayloadError
from storage.records import DATASET, WindowKey, parse_iso
from storage.reference_members import (
    add_member,
    decode_columns,
    encode_columns,
    members,
    prune_members,
)

log = logging.getLogger("driftwarden.references")

#: rows of one member window kept (a seeded sample of bigger windows)
MEMBER_MAX_ROWS = 5000


@dataclass(frozen=True)
class Member:
    """One stored window serving as (part of) a reference."""

    window_id: str
    start: str
    end: str
    start_ms: int
    rows: int
    drifted: bool
    prepared: PreparedReference


def _start_ms(text: str) -> int:
    """A window key bound in ms (time windows) or as a row ordinal (count windows)."""
    if text.startswith("#"):
        return int(text[1:])
    return int(parse_iso(text).timestamp() * 1000)


def _sample(columns: dict[str, np.ndarray], rows: int, window_id: str) -> dict[str, np.ndarray]:
    if rows <= MEMBER_MAX_ROWS:
        return columns
    rng = np.random.default_rng(zlib.crc32(window_id.encode()))
    idx = np.sort(rng.choice(rows, MEMBER_MAX_ROWS, replace=False))
    return {c: np.asarray(v)[idx] for c, v in columns.items()}


class WindowReferences:
    """Chooses the prepared reference each window of one model is judged against.

    ``fixed`` mode always answers the model's prepared reference file. The
    other modes keep the accepted member windows per (version, segment), in
    memory (bounded: what the next windows can still use) and in the store.
    """

    def __init__(self, base: PreparedModel) -> None:
        self.base = base
        cfg = base.config
        self.mode = cfg.reference_mode
        self.n = cfg.reference_windows
        self.include_drifted = cfg.rolling_include_drifted
        self.season_ms = int(cfg.season.total_seconds() * 1000) if cfg.season else 0
        w = cfg.window
        self.per_row = 1
        if w.type == "sliding" and w.slide:
            self.per_row = int(round(_units(w.size) / _units(w.slide)))
        self._members: dict[tuple[str, str], list[Member]] = {}
        self._cache: dict[tuple[str, ...], PreparedReference] = {}
        self._pending: list[tuple[str, str, Member, bytes]] = []
        #: (version, segment) groups dropped to stay under :attr:`max_groups`, to delete from the store
        self._dropped: set[tuple[str, str]] = set()
        lim = cfg.limits
        #: at most this many (version, segment) groups keep members: the caps' worth of
        #: open windows; the group idle longest is dropped first (a retired version)
        self.max_groups = lim.max_versions * (1 + len(cfg.segments) * lim.max_segment_values)

    @property
    def active(self) -> bool:
        return self.mode != "fixed"

    def rebase(self, base: PreparedModel) -> None:
        """A new reference file (or registered reference): seeds and thresholds change,
        the members stay (they are the stream's own recent past)."""
        self.base = base
        self._cache.clear()

    # -- choosing ---------------------------------------------------------------------

    def select(self, key: WindowKey) -> list[Member]:
        """The members a window is judged against (empty: use the reference file)."""
        if not self.active:
            return []
        pool = self._members.get((key.version, key.segment), [])
        if self.mode == "rolling":
            earlier = [m for m in pool if m.end <= key.start]
            chosen = earlier[-self.n :]
            return chosen if len(chosen) == self.n else []
        start = _start_ms(key.start)
        wanted = {start - k * self.season_ms for k in range(1, self.n + 1)}
        return [m for m in pool if m.start_ms in wanted]

    def for_window(self, key: WindowKey) -> PreparedModel:
        """The prepared model (reference and thresholds) to judge the window ``key`` with."""
        chosen = self.select(key)
        if not chosen:
            return self.base
        ids = tuple(m.window_id for m in chosen)
        prepared = self._cache.get(ids)
        if prepared is None:
            prepared = merge_prepared([m.prepared for m in chosen])
            self._cache = {ids: prepared}  # the next window usually needs a different union
        digest = hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:12]
        return replace(self.base, prepared=prepared, label=f"{self.mode}:{digest}")

    # -- learning ---------------------------------------------------------------------

    def observe(self, key: WindowKey, columns: dict[str, np.ndarray], figures: WindowFigures) -> None:
        """Keep a stored window as a future member (if it qualifies); written by :meth:`write`."""
        if not self.active or figures.record.status != "ok":
            return
        drifted = any(
            m.column == DATASET and m.metric == "drift_share" and bool(m.drifted) for m in figures.metrics
        )
        seeded = not self.select(key)  # judged against the file: its verdict says nothing here
        if drifted and not self.include_drifted and not seeded:
            return
        specs = self.base.prepared.specs
        names = [s.name for s in specs]
        if any(n not in columns for n in names):
            return
        sample = _sample({n: columns[n] for n in names}, figures.record.rows, key.id)
        try:
            payload = encode_columns(sample)
        except PayloadError as exc:  # too wide to store (and so to reload): not a member
            log.warning("model %s: window %s not kept as a reference member: %s", self.base.config.name, key.id, exc)
            return
        member = self._member(key.id, key.start, key.end, figures.record.rows, drifted, sample)
        self._add(key.version, key.segment, member)
        self._pending.append((key.version, key.segment, member, payload))

    def _member(
        self, window_id: str, start: str, end: str, rows: int, drifted: bool, columns: dict[str, Any]
    ) -> Member:
        # merged into unions later: the moments are recomputed from the rows in their order
        prepared = prepare_reference(
            columns, self.base.prepared.specs, bins=self.base.prepared.bins, keep_order=True
        )
        return Member(window_id, start, end, _start_ms(start), rows, drifted, prepared)

    def _add(self, version: str, segment: str, member: Member) -> None:
        pool = [m for m in self._members.get((version, segment), []) if m.window_id != member.window_id]
        pool.append(member)
        pool.sort(key=lambda m: (m.end, m.window_id))
        if self.mode == "rolling":
            pool = pool[-(self.n + self.per_row) :]
        else:
            newest = max(m.start_ms for m in pool)
            pool = [m for m in pool if m.start_ms >= newest - self.n * self.season_ms]
        self._members.pop((version, segment), None)
        self._members[(version, segment)] = pool  # dict order: least recently grown first
        self._dropped.discard((version, segment))
        while len(self._members) > self.max_groups:
            gone = next(iter(self._members))
            del self._members[gone]
            self._dropped.add(gone)

    # -- durability -------------------------------------------------------------------

    def write(self, store: Store) -> None:
        """Write the members observed since the last commit and prune the rest
        (call inside the transaction that stores their windows)."""
        model = self.base.config.name
        touched: set[tuple[str, str]] = set()
        for version, segment, m, payload in self._pending:
            add_member(
                store, model=model, version=version, segment=segment, window_id=m.window_id,
                start=m.start, end=m.end, rows=m.rows, drifted=m.drifted, payload=payload,
            )
            touched.add((version, segment))
        for vs in touched | self._dropped:
            keep = [m.window_id for m in self._members.get(vs, [])]
            prune_members(store, model, vs[0], vs[1], keep)

    def committed(self) -> None:
        """The transaction that called :meth:`write` committed."""
        self._pending.clear()
        self._dropped.clear()

    def restore(self, store: Store) -> int:
        """Reload the members of this model from the store; returns how many."""
        if not self.active:
            return 0
        self._members.clear()
        self._cache.clear()
        self._pending.clear()
        names = {s.name for s in self.base.prepared.specs}
        n = 0
        for row in members(store, self.base.config.name):
            try:
                cols = decode_columns(row["payload"])
            except ValueError as exc:  # damaged, or written by another program: unusable
                log.warning("model %s: reference member of window %s not read: %s",
                            self.base.config.name, row["window_id"], exc)
                continue
            if not names <= set(cols):
                continue  # written for other columns (the config changed): not usable
            m = self._member(row["window_id"], row["start"], row["end"], row["rows"], bool(row["drifted"]), cols)
            self._add(row["version"], row["segment"], m)
            n += 1
        return n


def _units(v: Any) -> float:
    return v.total_seconds() if isinstance(v, timedelta) else float(v)
