"""A bounded sample of a closed window's rows, kept so that a report can be made later.

At most ``max_rows`` rows, chosen uniformly at random without replacement with a
seed taken from the window id (so a window replayed after a crash keeps the
same sample), in consumption order (whatever the batches were: see
:mod:`monitor.windows.arrival`). Only the judged columns (features and the
prediction) and the event id are kept; category values and event ids are cut to
:data:`MAX_TEXT` characters (a report shows labels, not payloads).
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monitor.config import ReportsConfig
from monitor.windows.figures import WindowFigures
from monitor.windows.model_windows import OpenWindow
from monitor.windows.pane_columns import short_texts
from storage.payloads import PayloadError
from storage.samples import EVENT_ID, WindowSample, encode_sample

log = logging.getLogger("driftwarden.reports")

#: longest category value or event id kept in a sample (characters)
MAX_TEXT = 200


def take_sample(
    window_id: str, model: str, end: str, w: OpenWindow, columns: Sequence[str], max_rows: int,
    joined: Mapping[str, np.ndarray] | None = None,
) -> WindowSample | None:
    """The sample of ``w`` (None when ``max_rows`` is 0 or the window has no rows).

    Picks rows chunk by chunk, never concatenating the whole window; a column in
    ``joined`` (the window's columns already concatenated by its figures, in consumption
    order) is picked from there in one step. The sample is the same either way.
    """
    if max_rows <= 0 or w.rows <= 0 or not w.chunks:
        return None
    n = w.rows
    present = [c for c in columns if c in w.chunks[0].columns]
    whole = joined or {}
    if n <= max_rows:
        return _encoded(window_id, model, end, n, _all_rows(w, present, whole))
    rng = np.random.default_rng(zlib.crc32(window_id.encode()))
    picked = np.sort(rng.choice(n, max_rows, replace=False))
    chunked = [c for c in present if c not in whole]
    # the picked rows' positions in the concatenated chunks, ascending (``back`` puts the
    # rows picked there back in consumption order; None: already in it)
    at, back = picked, None
    order = w.order()
    if order is not None:
        at = order[picked]
        back = np.argsort(at)
        at = at[back]
    parts: dict[str, list[np.ndarray]] = {c: [] for c in chunked}
    parts[EVENT_ID] = []
    start = 0
    for chunk in w.chunks:
        size = len(chunk)
        lo, hi = np.searchsorted(at, [start, start + size])
        if hi > lo:
            idx = at[lo:hi] - start
            for c in chunked:
                parts[c].append(chunk.columns[c][idx])
            parts[EVENT_ID].append(chunk.event_id[idx])
        start += size
    out: dict[str, Any] = {}
    for c, arrays in [*((c, parts.get(c)) for c in present), (EVENT_ID, parts[EVENT_ID])]:
        if arrays is None:
            arr = whole[c][picked]
        else:
            arr = np.concatenate(arrays) if arrays else np.empty(0, dtype=object)
            if back is not None:  # row j was picked as the back[j]-th
                ordered = np.empty_like(arr)
                ordered[back] = arr
                arr = ordered
        out[c] = _kept(w, c, arr)
    return _encoded(window_id, model, end, n, out, int(picked.shape[0]))


def _all_rows(w: OpenWindow, present: Sequence[str], whole: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The sample of a window of at most ``max_rows`` rows: every row, in consumption order
    (what picking ``arange(rows)`` gives, without the picking): a joined column as it is, the
    others each one concatenation (in ``w.order()`` when the chunks are not in it)."""
    order = w.order()
    out: dict[str, Any] = {}
    for c in [*present, EVENT_ID]:
        arr = whole.get(c) if c != EVENT_ID else None
        if arr is None:
            arrays = [ch.event_id for ch in w.chunks] if c == EVENT_ID else [ch.columns[c] for ch in w.chunks]
            arr = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
            if order is not None:
                arr = arr[order]
        out[c] = _kept(w, c, arr)
    return out


def _kept(w: OpenWindow, c: str, arr: np.ndarray) -> Any:
    """Column ``c``'s sampled values ``arr`` as encoded: floats as a contiguous float64
    array, text as a list with long values cut (see :data:`MAX_TEXT`)."""
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(arr, dtype=np.float64)
    if c != EVENT_ID and short_texts(w.chunks, c, MAX_TEXT):
        return arr.tolist()  # known short from the figures' lookups: nothing to cut
    return _texts(arr.tolist())


def _encoded(window_id: str, model: str, end: str, n: int, out: dict[str, Any], sample_rows: int | None = None,
             ) -> WindowSample | None:
    """The sample of ``out`` (``sample_rows`` of the window's ``n``; None: all of them)."""
    try:
        payload = encode_sample(out)
    except PayloadError as exc:  # [reports] sample_rows times a wide schema: too big to keep
        log.warning("window %s: no report sample kept: %s (lower [reports] sample_rows)", window_id, exc)
        return None
    return WindowSample(
        window_id=window_id, model=model, end=end, rows=n, sample_rows=n if sample_rows is None else sample_rows,
        payload=payload,
    )


def finish_window(
    figs: WindowFigures, w: OpenWindow, columns: Sequence[str], reports: ReportsConfig, seconds: float,
    joined: Mapping[str, np.ndarray] | None = None,
) -> WindowFigures:
    """``figs`` with the time its figures took and, when ``[reports]`` keeps samples, its
    sample (``joined``: see :func:`take_sample`)."""
    sample = None
    if reports.sample_rows > 0 and reports.sample_windows > 0:
        k = figs.record.key
        sample = take_sample(figs.record.id, k.model, k.end, w, columns, reports.sample_rows, joined)
    return dataclasses.replace(figs, sample=sample, compute_seconds=seconds)


def _texts(values: list[Any]) -> list[str | None]:
    """``values`` (``str`` or ``None``, as the decoder gives them) with long ones cut; the
    common case (all short strings) is checked in C, without a Python loop per value."""
    try:
        if max(map(len, filter(None, values)), default=0) <= MAX_TEXT:
            return values
    except TypeError:  # not all str: shown as text
        pass
    return [None if v is None else str(v)[:MAX_TEXT] for v in values]
