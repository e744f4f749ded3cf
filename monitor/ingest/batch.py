"""The columnar batch every stage after decoding works on, and the bad-message error."""

from __future__ import annotations

from dataclasses import dataclass

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
