"""Caps on the stream-controlled dimensions of a model's windows (versions, segment values).

Each distinct version, and each distinct value of a segment key, opens windows of
its own, so a producer that sends a new value per message would otherwise open
unbounded windows, rows and table rows. A :class:`ValueCap` admits at most
``limit`` distinct values at a time; a value longer than ``max_length``
characters, or a new value while the cap is full, is replaced by
:data:`OTHER` and counted.

A slot is freed when its value has been idle long enough that it can hold no
open window any more: for time windows, when the watermark has passed the
value's newest event time by more than the window size; for count windows, when
the model has seen more than ``retire_after`` rows since the value's last one (its
open windows are then closed early, see :meth:`ValueCap.apply`'s ``evicted``).
So versions that roll over the months keep getting windows of their own, while
a hostile stream never gets more than ``limit`` at once.

Decisions are made row by row in consumption order against the watermark in
force before each row, so they never depend on how ``poll()`` cut the batches,
and the state is part of the durable snapshot: a restart decides the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

#: the bucket that takes the rows of values beyond a cap (stored as the version or
#: as the segment value, e.g. ``region=__other__``)
OTHER = "__other__"


@dataclass
class ValueCap:
    """At most ``limit`` distinct values of one dimension of one model.

    ``last_seen`` maps each admitted value to the clock of its newest row (event
    time in ms for time windows, the model's row ordinal for count windows).
    """

    limit: int
    max_length: int
    #: a value whose last row is more than this far behind the clock frees its slot
    retire_after: int
    last_seen: dict[str, int] = field(default_factory=dict)
    #: rows sent to :data:`OTHER` so far (fresh rows only, not replayed ones)
    capped_rows: int = 0

    def apply(
        self, values: np.ndarray, seen_at: np.ndarray, clock: np.ndarray, replay: np.ndarray
    ) -> tuple[np.ndarray, list[str]]:
        """Capped values for one batch, and the values evicted while doing it.

        ``values`` is an object array of ``str`` (``None`` = absent, left alone);
        ``seen_at`` the clock value each row marks its value as seen at; ``clock``
        the clock against which idleness is judged, before each row; ``replay``
        marks rows re-read after a restart, which only look values up (their
        effect is already in the restored state).
        """
        n = values.shape[0]
        if n == 0:
            return values, []
        first = values[0]
        if first is not None and (values == first).all() and first in self.last_seen:
            # the common case: one admitted value in the whole batch
            fresh = ~replay
            if fresh.any():
                self.last_seen[first] = max(self.last_seen[first], int(seen_at[fresh].max()))
            return values, []
        last = self.last_seen
        codes, uniques = pd.factorize(values)  # None -> -1; hashed in C
        if all(u in last for u in uniques.tolist()):
            # every value admitted already (a few segment values): the newest row of each
            fresh = ~replay & (codes >= 0)
            if fresh.any():
                newest = np.full(uniques.shape[0], np.iinfo(np.int64).min, dtype=np.int64)
                np.maximum.at(newest, codes[fresh], seen_at[fresh].astype(np.int64, copy=False))
                for v, t in zip(uniques.tolist(), newest.tolist(), strict=True):
                    if t > last[v]:
                        last[v] = t
            return values, []
        out = values.copy()
        evicted: list[str] = []
        for i, v in enumerate(values.tolist()):
            if v is None:
                continue
            if v in last:
                if not replay[i]:
                    s = int(seen_at[i])
                    if s > last[v]:
                        last[v] = s
                continue
            if replay[i]:
                out[i] = OTHER
                continue
            if len(v) > self.max_length or not self._admit(v, int(clock[i]), evicted):
                out[i] = OTHER
                self.capped_rows += 1
                continue
            last[v] = int(seen_at[i])
        return out, evicted

    def _admit(self, value: str, now: int, evicted: list[str]) -> bool:
        if len(self.last_seen) < self.limit:
            return True
        oldest = min(self.last_seen, key=lambda k: (self.last_seen[k], k))
        if self.last_seen[oldest] + self.retire_after < now:
            del self.last_seen[oldest]
            evicted.append(oldest)
            return True
        return False

    def snapshot(self) -> dict[str, Any]:
        return {"seen": dict(self.last_seen), "capped": self.capped_rows}

    def restore(self, snap: Mapping[str, Any]) -> None:
        self.last_seen = {str(k): int(v) for k, v in snap.get("seen", {}).items()}
        self.capped_rows = int(snap.get("capped", 0))
