"""Rows of stored windows kept as members of rolling and seasonal references.

Each member is one window's (capped) rows, written in the same transaction as
the window's figures, so after a restart the pipeline rebuilds exactly the
reference it judged with. The payload is compressed JSON (numbers as floats,
NaN as null; categories as strings or null; compressed by :mod:`storage.payloads`):
never pickle, since the database is readable and writable by other programs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from storage.db import Store
from storage.payloads import compress, decompress


def encode_columns(columns: Mapping[str, np.ndarray]) -> bytes:
    """Columns (float64 or object arrays) as a compressed JSON payload."""
    out: dict[str, Any] = {}
    for name, arr in columns.items():
        a = np.asarray(arr)
        if a.dtype.kind == "f":
            out[name] = {"f": [None if v != v else v for v in a.astype(np.float64).tolist()]}
        else:
            out[name] = {"s": [None if v is None or v != v else str(v) for v in a.tolist()]}
    return compress(orjson.dumps(out))


def decode_columns(payload: bytes) -> dict[str, np.ndarray]:
    data = orjson.loads(decompress(payload))
    out: dict[str, np.ndarray] = {}
    for name, col in data.items():
        if "f" in col:
            out[name] = np.array([np.nan if v is None else v for v in col["f"]], dtype=np.float64)
        else:
            out[name] = np.array(col["s"], dtype=object)
    return out


def add_member(
    store: Store, *, model: str, version: str, segment: str, window_id: str, start: str, end: str,
    rows: int, drifted: bool, payload: bytes,
) -> None:
    store.execute(
        'INSERT INTO reference_members (model, version, segment, window_id, start, "end",'
        " rows, drifted, payload) VALUES (?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (model, version, segment, window_id) DO UPDATE SET start = excluded.start,"
        ' "end" = excluded."end", rows = excluded.rows, drifted = excluded.drifted,'
        " payload = excluded.payload",
        (model, version, segment, window_id, start, end, rows, int(drifted), payload),
    )


def members(
    store: Store, model: str, *, since_end: str | None = None
) -> list[dict[str, Any]]:
    """A model's members (all keys), oldest first; ``since_end``: only those ending after it."""
    sql = 'SELECT * FROM reference_members WHERE model = ?'
    params: list[Any] = [model]
    if since_end is not None:
        sql += ' AND "end" > ?'
        params.append(since_end)
    return store.query(sql + ' ORDER BY "end", window_id', params)


def prune_members(store: Store, model: str, version: str, segment: str, keep_ids: list[str]) -> int:
    """Delete the members of one (model, version, segment) not in ``keep_ids``."""
    marks = ",".join("?" * len(keep_ids)) or "''"
    cur = store.execute(
        f"DELETE FROM reference_members WHERE model = ? AND version = ? AND segment = ?"
        f" AND window_id NOT IN ({marks})",
        (model, version, segment, *keep_ids),
    )
    return cur.rowcount
