"""A window's rows in consumption order, whatever the panes and batch cuts.

A sliding window is assembled from panes (:class:`monitor.windows.model_windows._Panes`):
from each batch it receives one chunk per pane it overlaps, in pane order. When a batch
holds rows of several of its panes out of event-time order (a late row of an earlier
pane after rows of a later one), the concatenated chunks hold the window's rows out of
consumption order, and in an order that depends on where batches were cut: after a crash
the replay re-reads the same records in other batches, and the window's report sample
and every figure that reads rows in order (the t-test's sums, TVD, new categories in
first-seen order, the domain classifier) would differ from those of a run without it.

So each chunk of a sliding time window carries its rows' *arrival numbers* (the model's
running count of rows given to :meth:`~monitor.windows.model_windows.ModelWindows.add`,
ascending within a chunk, kept in :attr:`ColumnBatch.derived` under :data:`ARRIVAL`),
and a window's rows are read in that order (:func:`arrival_order`): the order of
consumption, the same as a tumbling window's, and a function of the records alone
(Kafka offset order: each model lives in one partition). A window whose chunks are in
order already (in-order streams, tumbling and count windows, whose chunks carry no
numbers) costs nothing more than a look at each chunk's first and last number.
"""

from __future__ import annotations

import numpy as np

from monitor.ingest.batch import ColumnBatch

#: key of a chunk's arrival numbers in :attr:`ColumnBatch.derived` (int64, ascending)
ARRIVAL = ("arrival",)


def arrival_order(chunks: list[ColumnBatch]) -> np.ndarray | None:
    """Positions, in the concatenation of ``chunks``, of their rows in arrival order; None
    when the concatenation is in that order already (or the chunks carry no numbers)."""
    if len(chunks) < 2:
        return None
    last = -1
    for ch in chunks:
        seq = ch.derived.get(ARRIVAL)
        if seq is None:
            return None
        if seq[0] <= last:
            break
        last = seq[-1]
    else:
        return None
    # a few ascending runs: timsort merges them (about 0.4 ms for 50k rows in 15 runs)
    return np.argsort(np.concatenate([ch.derived[ARRIVAL] for ch in chunks]), kind="stable")


def joined_in_order(arrays: list[np.ndarray], order: np.ndarray | None) -> np.ndarray:
    """The concatenation of ``arrays`` (at least one; a single array as it is, not copied),
    read in ``order`` (:func:`arrival_order`; None: as concatenated)."""
    got = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return got if order is None else got[order]


def arrival_numbers(chunks: list[ColumnBatch], masks: list[np.ndarray]) -> np.ndarray:
    """The arrival numbers of the rows selected by ``masks`` (one boolean mask per chunk)."""
    return np.concatenate([ch.derived[ARRIVAL][m] for ch, m in zip(chunks, masks, strict=True)])
