"""Carrying open windows over a change of window shape.

A model's durable state holds its open windows as offset ranges, re-read from Kafka
after a restart (see :mod:`monitor.windows.model_windows`). When the state was built
with another window shape than the one configured now (``[models.window]`` edited
between two runs, or two instances with different definitions handing a partition
over), those windows do not exist in the new shape. Their rows are then *carried*:
re-read like any replay, each row that an old open window held is assigned to the
windows of the current shape it belongs to, as if the current shape had been in
force for it; rows that were already in stored windows or counted late stay there.

- Time windows: by event time, regardless of the watermark (a row of an old open
  window was on time when it came), but never into a window already stored (it stays
  as it is; such rows are counted in :attr:`CarryOver.skipped_rows`).
- Count windows: the carried rows are numbered after the model's last count-window
  position (rounded up to the new slide, so no new window overlaps an old one) in
  the order they are re-read, like fresh rows.
- While rows are carried, no window of the model closes (a window of the new shape
  may still get carried rows further on); the carry ends once every partition
  holding carried rows has been re-read past them (or the stream goes idle).

The carry is part of the durable state until it ends: a crash while rows are being
carried resumes it (``after`` tells the carried rows, re-read before the offset the
shape changed at, from the rows consumed since, which re-fill the new windows as
usual).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitor.windows.shape import WindowShape

Key = tuple[str, str, int, int]


@dataclass(frozen=True, slots=True)
class CarriedWindow:
    """An open window of the old shape: ``by`` time or count; rows held per partition
    in the inclusive offset ranges ``ranges``."""

    by: str
    version: str
    segment: str
    start: int
    end: int
    ranges: Mapping[int, tuple[int, int]]

    def to_state(self) -> dict[str, Any]:
        return {"by": self.by, "v": self.version, "s": self.segment, "start": self.start, "end": self.end,
                "ranges": {str(p): list(r) for p, r in self.ranges.items()}}

    @classmethod
    def from_state(cls, raw: Mapping[str, Any], by: str) -> CarriedWindow:
        """From the state of a carried window, or of an open window (``by`` its model's)."""
        return cls(
            str(raw.get("by", by)), str(raw["v"]), str(raw["s"]), int(raw["start"]), int(raw["end"]),
            {int(p): (int(r[0]), int(r[1])) for p, r in raw["ranges"].items()},
        )


@dataclass(frozen=True, slots=True)
class CarryEnded:
    """What a carry did, once it ended: for the log."""

    model: str
    windows: int
    carried_rows: int
    skipped_rows: int
    idle: bool


@dataclass
class CarryOver:
    """Rows of old open windows being re-read into the current shape."""

    #: the shape the windows were built with (None: not recorded, older state)
    source: WindowShape | None
    windows: list[CarriedWindow]
    #: per partition, the first offset consumed after the shape changed: re-read rows
    #: before it are carried (or were stored already); rows from it are in new windows
    after: dict[int, int]
    #: per partition, the last offset still to re-read before windows may close
    pending: dict[int, int] = field(default_factory=dict)
    #: windows of the current shape already stored: carried rows never rewrite them
    stored: set[Key] = field(default_factory=set)
    carried_rows: int = 0
    skipped_rows: int = 0

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        self._by_group: dict[tuple[str, str], list[CarriedWindow]] = {}
        for w in self.windows:
            self._by_group.setdefault((w.version, w.segment), []).append(w)

    def wait_for(self, ranges: Iterable[Mapping[int, Any]]) -> None:
        """Keep windows from closing until the rows of ``ranges`` (and the carried
        windows') are re-read."""
        for src in [*(w.ranges for w in self.windows), *ranges]:
            for p, r in src.items():
                self.pending[p] = max(self.pending.get(p, -1), int(r[1]))

    def early(self, partition: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Rows consumed before the shape changed (carried ones or stored ones)."""
        out = np.zeros(partition.shape[0], dtype=bool)
        for p, o in self.after.items():
            out |= (partition == p) & (offset < o)
        return out

    def members(
        self, version: str, segment: str, ts: np.ndarray, partition: np.ndarray, offset: np.ndarray
    ) -> np.ndarray:
        """Which rows (of one version and segment) an old open window held."""
        out = np.zeros(partition.shape[0], dtype=bool)
        for w in self._by_group.get((version, segment), []):
            held = np.zeros_like(out)
            for p, (lo, hi) in w.ranges.items():
                held |= (partition == p) & (offset >= lo) & (offset <= hi)
            if w.by == "time":
                held &= (ts >= w.start) & (ts < w.end)
            out |= held
        return out

    def passed(self, next_offsets: Mapping[int, int]) -> bool:
        """Note how far each partition has been read; True once nothing is pending."""
        for p, o in next_offsets.items():
            if p in self.pending and o > self.pending[p]:
                del self.pending[p]
        return not self.pending

    def drop_partitions(self, partitions: set[int]) -> None:
        self.windows = [w for w in self.windows if not any(p in partitions for p in w.ranges)]
        self._index()
        for p in partitions:
            self.pending.pop(p, None)
            self.after.pop(p, None)

    def first_offsets(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for w in self.windows:
            for p, (lo, _hi) in w.ranges.items():
                out[p] = min(out.get(p, lo), lo)
        return out

    def mark(self) -> tuple[Any, ...]:
        """An undo point (see :meth:`undo`)."""
        return (dict(self.pending), self.carried_rows, self.skipped_rows)

    def undo(self, mark: tuple[Any, ...]) -> None:
        pending, self.carried_rows, self.skipped_rows = mark
        self.pending = dict(pending)

    def to_state(self) -> dict[str, Any]:
        return {
            "source": self.source.to_state() if self.source is not None else None,
            "windows": [w.to_state() for w in self.windows],
            "after": {str(p): o for p, o in self.after.items()},
            "carried_rows": self.carried_rows,
            "skipped_rows": self.skipped_rows,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> CarryOver:
        return cls(
            WindowShape.from_state(raw.get("source")),
            [CarriedWindow.from_state(w, "time") for w in raw.get("windows", [])],
            {int(p): int(o) for p, o in raw.get("after", {}).items()},
            carried_rows=int(raw.get("carried_rows", 0)),
            skipped_rows=int(raw.get("skipped_rows", 0)),
        )
