"""Read queries for the on-call command line: filtered pages of windows, dead letters and
deliveries, one query per question. Times are compared as the stored ISO 8601 UTC
strings (``2026-11-23T14:00:00.000Z``), which sort like the instants they name.
"""

from __future__ import annotations

import hashlib
from typing import Any

from storage.db import Store
from storage.dead_letters import dead_letters_not_kept


def window_ref(window_id: str) -> str:
    """A short handle for a window id (the id itself is long): 8 hex digits of its SHA-1."""
    return hashlib.sha1(window_id.encode(), usedforsecurity=False).hexdigest()[:8]


def drifted_columns_of(store: Store, window_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Per window id: its drifted columns (``column``, ``test``, ``score``), by column name."""
    out: dict[str, list[dict[str, Any]]] = {wid: [] for wid in window_ids}
    if not window_ids:
        return out
    marks = ",".join("?" * len(window_ids))
    rows = store.query(
        f"SELECT window_id, \"column\", test, value FROM metrics WHERE metric = 'drift_score' AND drifted = 1"
        f" AND window_id IN ({marks}) ORDER BY window_id, \"column\"",
        window_ids,
    )
    for r in rows:
        out[r["window_id"]].append({"column": r["column"], "test": r["test"], "score": r["value"]})
    return out


def find_window(store: Store, key: str) -> list[dict[str, Any]]:
    """Windows whose id is ``key``, or whose :func:`window_ref` starts with it (4+ characters)."""
    rows = store.query("SELECT * FROM windows WHERE id = ?", (key,))
    if rows or len(key) < 4 or len(key) > 8:
        return rows
    key = key.lower()
    ids = [r["id"] for r in store.query("SELECT id FROM windows")]
    hits = [i for i in ids if window_ref(i).startswith(key)]
    if not hits:
        return []
    marks = ",".join("?" * len(hits))
    return store.query(f"SELECT * FROM windows WHERE id IN ({marks}) ORDER BY id", hits)


def window_figures(store: Store, window_id: str) -> list[dict[str, Any]]:
    """Every figure of a window: dataset-level first (``column = ""``), then by column and
    metric; ``ci_low``/``ci_high`` are a performance figure's bootstrap interval (None else)."""
    return store.query(
        'SELECT "column", metric, value, p_value, threshold, drifted, test, ci_low, ci_high FROM metrics'
        ' WHERE window_id = ?'
        ' ORDER BY "column" != \'\', "column", metric',
        (window_id,),
    )


def dead_letters_page(
    store: Store, *, since: str | None = None, reason: str | None = None, limit: int | None = 100,
    after_id: int | None = None,
) -> list[dict[str, Any]]:
    """Dead letters newest first, or with ``after_id`` those with a larger id, oldest first
    (page on with the last one's id); ``reason`` matches the code (text before the first
    ':') whole, in any case (codes are lower case, :func:`storage.dead_letters.reason_code`).

    Compared with ``substr``, not ``LIKE``: SQLite's ``LIKE`` ignores the case of ASCII
    letters and PostgreSQL's does not, so one pattern gave the stores different answers."""
    where, params = [], []
    if since is not None:
        where.append("received_at >= ?")
        params.append(since)
    if reason is not None:
        code = reason.lower()
        where.append("(reason = ? OR substr(reason, 1, ?) = ?)")
        params.extend([code, len(code) + 1, code + ":"])
    if after_id is not None:
        where.append("id > ?")
        params.append(int(after_id))
    sql = 'SELECT id, topic, partition, "offset", reason, payload, received_at FROM dead_letters'
    sql += (" WHERE " + " AND ".join(where) if where else "") + (" ORDER BY id" if after_id is not None else " ORDER BY id DESC")
    if limit is not None:
        sql += " LIMIT ?"
        params.append(int(limit))
    return store.query(sql, params)


def dead_letter_reasons(store: Store, *, since: str | None = None) -> list[dict[str, Any]]:
    """Per reason code (the reason up to its first ``:``): how many are stored (``n``) and
    how many more were only counted (``not_kept``), and the first and last stored one's
    time; most frequent first. Grouped by full reason in SQL (no string function both
    dialects share), then by code here: the reasons are few."""
    sql = (
        "SELECT reason, COUNT(*) AS n, MIN(received_at) AS first, MAX(received_at) AS last"
        " FROM dead_letters" + (" WHERE received_at >= ?" if since is not None else "") + " GROUP BY reason"
    )
    codes: dict[str, dict[str, Any]] = {}
    for r in store.query(sql, [since] if since is not None else []):
        code = r["reason"].split(":", 1)[0]
        c = codes.get(code)
        if c is None:
            codes[code] = {"code": code, "n": r["n"], "not_kept": 0, "first": r["first"], "last": r["last"]}
        else:
            c["n"] += r["n"]
            c["first"], c["last"] = min(c["first"], r["first"]), max(c["last"], r["last"])
    # beyond the per-minute caps letters are counted, not stored: without them a flood
    # showed as its first few letters
    for code, n in dead_letters_not_kept(store, since=since).items():
        codes.setdefault(code, {"code": code, "n": 0, "not_kept": 0, "first": None, "last": None})["not_kept"] = n
    return sorted(codes.values(), key=lambda c: (-(c["n"] + c["not_kept"]), c["code"]))


def deliveries_page(
    store: Store,
    *,
    model: str | None = None,
    status: str | None = None,
    notifier: str | None = None,
    since: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Outbox rows newest first (without their payloads)."""
    where, params = [], []
    for cond, value in (("model = ?", model), ("status = ?", status), ("notifier = ?", notifier),
                        ("created_at >= ?", since)):
        if value is not None:
            where.append(cond)
            params.append(value)
    sql = (
        "SELECT id, alert_id, notifier, kind, status, attempts, next_attempt_at, last_error, delivered_at,"
        " created_at, model FROM deliveries" + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY created_at DESC, rowid DESC LIMIT ?"
    )
    return store.query(sql, [*params, int(limit)])
