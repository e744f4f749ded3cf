"""Window samples: a bounded sample of a closed window's rows, so a report can be made later.

Written in the flush transaction with the window's figures (one row per window,
replaced when the window is written again). The payload is the columns as
:func:`storage.reference_members.encode_columns` writes them (JSON compressed by
:mod:`storage.payloads`, never pickle): the judged columns (features, prediction) plus the event
id (column :data:`EVENT_ID`) so labels can be joined to the sample later.
How many windows keep theirs is bounded per model (:func:`storage.retention.trim_window_samples`),
and the prune removes the samples of deleted windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson

from storage.db import Store
from storage.payloads import compress
from storage.records import iso
from storage.reference_members import decode_columns

#: the sample's column holding each row's event id
EVENT_ID = "__event_id__"


@dataclass(frozen=True, slots=True)
class WindowSample:
    """Up to ``sample_rows`` of a window's ``rows`` rows, encoded (see the module docstring)."""

    window_id: str
    model: str
    end: str
    rows: int
    sample_rows: int
    payload: bytes


def encode_sample(columns: dict[str, np.ndarray]) -> bytes:
    """Columns as :func:`storage.reference_members.decode_columns` reads them, fast enough for
    the consumer thread: float arrays go to orjson as they are (NaN becomes ``null``), text
    columns must already be lists of ``str``/``None``."""
    out = {c: ({"f": a} if isinstance(a, np.ndarray) and a.dtype.kind == "f" else {"s": a}) for c, a in columns.items()}
    return compress(orjson.dumps(out, option=orjson.OPT_SERIALIZE_NUMPY))


_SAMPLE_UPSERT = (
    'INSERT INTO window_samples (window_id, model, "end", rows, sample_rows, payload,'
    " created_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (window_id) DO UPDATE SET model = excluded.model,"
    ' "end" = excluded."end", rows = excluded.rows, sample_rows = excluded.sample_rows,'
    " payload = excluded.payload, created_at = excluded.created_at"
)


def write_window_sample(store: Store, sample: WindowSample, *, now: datetime) -> None:
    """Insert or replace a window's sample (call inside ``store.transaction()``)."""
    write_window_samples(store, [(sample, now)])


def write_window_samples(store: Store, samples: Sequence[tuple[WindowSample, datetime]]) -> None:
    """Insert or replace window samples, each with its creation time, in one ``executemany``
    (call inside ``store.transaction()``; the payloads are bytes, which a JSON batch cannot
    carry). A window given twice keeps its later sample. None: nothing is run."""
    if samples:
        store.executemany(_SAMPLE_UPSERT, [
            (s.window_id, s.model, s.end, s.rows, s.sample_rows, s.payload, iso(now)) for s, now in samples
        ])


def read_window_sample(store: Store, window_id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """``(row without payload, decoded columns)`` of a window's sample, or None when it has none."""
    rows = store.query("SELECT * FROM window_samples WHERE window_id = ?", (window_id,))
    if not rows:
        return None
    row = rows[0]
    payload = row.pop("payload")
    return row, decode_columns(bytes(payload))


def sample_counts(store: Store) -> dict[str, int]:
    """Windows with a stored sample, per model."""
    return {r["model"]: r["n"] for r in store.query("SELECT model, COUNT(*) AS n FROM window_samples GROUP BY model")}
