"""The dead-letter table: every message that could not be used, with its reason.

Volume is capped (:class:`storage.limits.DeadLetterCap`, taken from the store):
per reason code, topic, partition and minute received, the first letters keep
their payload, the next ones are stored without it, and the rest are only
counted. Nothing is dropped silently: ``dead_letter_volume`` holds the counts
per minute (and the offset range of the letters not stored, per partition),
``dead_letter_totals`` the running totals since the database was created.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from storage.db import StorageError, Store
from storage.limits import DeadLetterCap
from storage.records import iso, parse_iso
from storage.redaction import redact
from storage.text import printable

#: Stored payloads are cut to this many bytes (the first 64 KiB) by default.
MAX_PAYLOAD_BYTES = 65_536
#: Reasons are cut to this many characters (they may quote parts of the message).
MAX_REASON_CHARS = 1000
#: What a reason code looks like (``not_json``, ``internal``); others count as ``other``.
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    reason: str
    payload: bytes | None
    received_at: datetime
    #: known not to be a re-read of a record handled before (the pipeline read it past its
    #: partition's replay boundary): a letter stored at its offset is of another record,
    #: the partition's log went back (see :func:`write_dead_letters`)
    new: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetterWrite:
    """What one :func:`write_dead_letters` call did with its letters.

    ``stored`` rows were inserted, ``payloads_dropped`` of them without their
    payload; ``dropped`` letters were only counted; ``duplicates`` had been
    handled before (the same record re-read after a restart) and changed nothing.
    ``conflicts``: letters known :attr:`~DeadLetter.new` whose offset a letter of an
    earlier log holds (the partition's log went back): counted among ``dropped``.
    """

    stored: int = 0
    payloads_dropped: int = 0
    dropped: int = 0
    duplicates: int = 0
    conflicts: tuple[tuple[str, int, int], ...] = ()


def reason_code(reason: str) -> str:
    """The code of a reason: the text before the first ``:`` (``not_json``, ``bad_type``).

    Codes key the volume counters, so they must come from our code, never from
    the stream: anything that is not a short lower-case word is counted as ``other``.
    """
    code = reason.split(":", 1)[0].strip()
    return code if _CODE.fullmatch(code) else "other"


def stored_reason(reason: str) -> str:
    """A reason as stored: control characters shown as the command line shows them
    (``\\x00``, ``\\n``: a reason may quote the message, and PostgreSQL text cannot hold
    U+0000), at most :data:`MAX_REASON_CHARS` characters, without a registered secret
    (:func:`storage.redaction.redact`: an ``internal`` reason quotes an exception). The
    same on both stores."""
    return printable(redact(reason)[:MAX_REASON_CHARS])[:MAX_REASON_CHARS]


def received_minute(ts: datetime) -> str:
    """The minute a letter was received in, as stored in ``dead_letter_volume.minute``."""
    return iso(ts.astimezone(UTC).replace(second=0, microsecond=0))


@dataclass
class _Bucket:
    stored: int  # rows of this bucket stored before and during this call
    new_stored: int = 0
    payloads: int = 0
    payloads_dropped: int = 0
    dropped: int = 0
    drop_first: int | None = None
    drop_last: int | None = None


def write_dead_letters(
    store: Store,
    letters: Sequence[DeadLetter],
    *,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    cap: DeadLetterCap | None = None,
) -> DeadLetterWrite:
    """Store letters under the volume cap (default: ``store.dead_letter_cap``).

    Idempotent: a letter whose (topic, partition, offset) was stored before, or
    lies in the offset range of letters counted but not stored, is a re-read of
    the same record and changes nothing. Deterministic: letters are taken in
    (topic, partition, offset) order, and the n-th new letter of a bucket
    (reason code, topic, partition, minute received) gets the n-th place, so a
    replay with the same receive times gives the same tables. Runs in (a
    savepoint of) the caller's transaction.

    A letter marked :attr:`~DeadLetter.new` is not a re-read: when its (topic, partition,
    offset) is handled already, that was a record of an earlier log of the partition (the
    topic deleted and recreated). The stored letter keeps its row (the key is the
    table's) and the new one is counted as not stored in its bucket's ``dropped`` and
    the totals, its offset not added to the bucket's range of such offsets (that range
    is read as "handled" and would hide fresh letters between); :attr:`DeadLetterWrite.conflicts`
    names them. A restart re-reading it does not mark it new (the flush that counted it
    stored the partition's offset past it), so it is counted once.
    """
    if not letters:
        return DeadLetterWrite()
    cap = cap or store.dead_letter_cap
    unique: dict[tuple[str, int, int], DeadLetter] = {}
    #: new letters of a key given before in this call (the old log's letter not stored yet)
    again: list[DeadLetter] = []
    for d in letters:
        first = unique.setdefault((d.topic, d.partition, d.offset), d)
        if first is not d and d.new:
            again.append(d)
    keys = sorted(unique)
    rows: list[tuple[Any, ...]] = []
    buckets: dict[tuple[str, str, str, int], _Bucket] = {}
    duplicates = 0
    conflicts: list[tuple[str, int, int]] = []
    with store.transaction():
        taken, ranged = _handled(store, keys)
        handled = taken | ranged
        for key in keys:
            d = unique[key]
            if key in handled and not d.new:
                duplicates += 1
                continue
            code = reason_code(d.reason)
            bkey = (code, received_minute(d.received_at), d.topic, d.partition)
            b = buckets.get(bkey)
            if b is None:
                b = buckets[bkey] = _Bucket(stored=_stored_in_bucket(store, bkey))
            if key in taken:  # another record at a stored letter's offset: counted only
                conflicts.append(key)
                b.dropped += 1
                continue
            size = None if d.payload is None else len(d.payload)
            if b.stored >= cap.per_minute:
                b.dropped += 1
                b.drop_first = d.offset if b.drop_first is None else min(b.drop_first, d.offset)
                b.drop_last = d.offset if b.drop_last is None else max(b.drop_last, d.offset)
                continue
            if b.stored < cap.payloads_per_minute:
                payload = None if d.payload is None else bytes(d.payload[:max_payload_bytes])
                b.payloads += 1
            else:
                payload = None
                b.payloads_dropped += 1
            b.stored += 1
            b.new_stored += 1
            rows.append(
                (d.topic, d.partition, d.offset, stored_reason(d.reason), payload, size,
                 iso(d.received_at))
            )  # fmt: skip
        for d in again:
            bkey = (reason_code(d.reason), received_minute(d.received_at), d.topic, d.partition)
            b = buckets.get(bkey)
            if b is None:
                b = buckets[bkey] = _Bucket(stored=_stored_in_bucket(store, bkey))
            conflicts.append((d.topic, d.partition, d.offset))
            b.dropped += 1
        store.executemany(
            'INSERT INTO dead_letters (topic, partition, "offset", reason, payload,'
            " payload_size, received_at) VALUES (?,?,?,?,?,?,?)"
            ' ON CONFLICT (topic, partition, "offset") DO NOTHING',
            rows,
        )
        _count(store, buckets)
    return DeadLetterWrite(
        stored=len(rows),
        payloads_dropped=sum(b.payloads_dropped for b in buckets.values()),
        dropped=sum(b.dropped for b in buckets.values()),
        duplicates=duplicates,
        conflicts=tuple(conflicts),
    )


def _handled(
    store: Store, keys: list[tuple[str, int, int]]
) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
    """Of ``keys`` (sorted): those a stored letter has, and those inside a range of letters
    counted but not stored (``dead_letter_volume.drop_first``/``drop_last``)."""
    spans: dict[tuple[str, int], tuple[int, int]] = {}
    for topic, partition, offset in keys:
        lo, hi = spans.get((topic, partition), (offset, offset))
        spans[(topic, partition)] = (min(lo, offset), max(hi, offset))
    out: set[tuple[str, int, int]] = set()
    ranged: set[tuple[str, int, int]] = set()
    for (topic, partition), (lo, hi) in spans.items():
        for r in store.execute(
            'SELECT "offset" FROM dead_letters WHERE topic = ? AND partition = ?'
            ' AND "offset" BETWEEN ? AND ?',
            (topic, partition, lo, hi),
        ).fetchall():
            out.add((topic, partition, int(r[0])))
        ranges = store.execute(
            "SELECT drop_first, drop_last FROM dead_letter_volume WHERE topic = ? AND partition = ?"
            " AND drop_last >= ? AND drop_first <= ?",
            (topic, partition, lo, hi),
        ).fetchall()
        if ranges:
            for t, p, o in keys:
                if t == topic and p == partition and any(a <= o <= b for a, b in ranges):
                    ranged.add((t, p, o))
    return out, ranged


def _stored_in_bucket(store: Store, bkey: tuple[str, str, str, int]) -> int:
    row = store.execute(
        "SELECT stored FROM dead_letter_volume WHERE reason = ? AND minute = ? AND topic = ?"
        " AND partition = ?",
        bkey,
    ).fetchone()
    return int(row[0]) if row else 0


def _count(store: Store, buckets: dict[tuple[str, str, str, int], _Bucket]) -> None:
    store.executemany(
        "INSERT INTO dead_letter_volume AS v (reason, minute, topic, partition, stored, payloads,"
        " payloads_dropped, dropped, drop_first, drop_last) VALUES (?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (reason, minute, topic, partition) DO UPDATE SET"
        " stored = v.stored + excluded.stored, payloads = v.payloads + excluded.payloads,"
        " payloads_dropped = v.payloads_dropped + excluded.payloads_dropped,"
        " dropped = v.dropped + excluded.dropped,"
        # the smaller / larger of two, NULL meaning "none": no scalar MIN/MAX on PostgreSQL
        " drop_first = CASE WHEN excluded.drop_first IS NULL THEN v.drop_first"
        "   WHEN v.drop_first IS NULL OR excluded.drop_first < v.drop_first THEN excluded.drop_first"
        "   ELSE v.drop_first END,"
        " drop_last = CASE WHEN excluded.drop_last IS NULL THEN v.drop_last"
        "   WHEN v.drop_last IS NULL OR excluded.drop_last > v.drop_last THEN excluded.drop_last"
        "   ELSE v.drop_last END",
        [
            (*k, b.new_stored, b.payloads, b.payloads_dropped, b.dropped, b.drop_first, b.drop_last)
            for k, b in buckets.items()
        ],
    )
    totals: dict[str, tuple[int, int]] = {}
    for (code, *_), b in buckets.items():
        pd, dr = totals.get(code, (0, 0))
        totals[code] = (pd + b.payloads_dropped, dr + b.dropped)
    store.executemany(
        "INSERT INTO dead_letter_totals AS t (reason, payloads_dropped, dropped) VALUES (?,?,?)"
        " ON CONFLICT (reason) DO UPDATE SET"
        " payloads_dropped = t.payloads_dropped + excluded.payloads_dropped,"
        " dropped = t.dropped + excluded.dropped",
        [(code, pd, dr) for code, (pd, dr) in totals.items() if pd or dr],
    )


def dead_letter_drops(store: Store) -> dict[str, tuple[int, int]]:
    """Per reason code, since the database was created: ``(payloads_dropped, dropped)``,
    letters stored without payload and letters not stored (the volume cap)."""
    rows = store.query("SELECT reason, payloads_dropped, dropped FROM dead_letter_totals")
    return {r["reason"]: (int(r["payloads_dropped"]), int(r["dropped"])) for r in rows}


def dead_letter_volume(store: Store, since: datetime | None = None) -> list[dict[str, Any]]:
    """Rows of ``dead_letter_volume`` (oldest minute first), from ``since`` on."""
    return store.query(
        "SELECT * FROM dead_letter_volume WHERE minute >= ? ORDER BY minute, reason, topic, partition",
        (received_minute(since) if since is not None else "",),
    )


def dead_letter_counts(store: Store) -> dict[str, int]:
    """Count of stored dead letters per reason code (the text before the first ':')."""
    rows = store.query("SELECT reason FROM dead_letters")
    out: dict[str, int] = {}
    for r in rows:
        code = r["reason"].split(":", 1)[0]
        out[code] = out.get(code, 0) + 1
    return out


def list_dead_letters(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))


def dead_letter_total(store: Store) -> int:
    return int(store.query("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"])


def dead_letters_not_kept(store: Store, *, since: str | None = None) -> dict[str, int]:
    """Letters counted but not stored (beyond the per-minute caps), per reason code, from
    ``dead_letter_volume``; ``since`` (ISO 8601) counts from the start of its minute."""
    args: list[Any] = []
    sql = "SELECT reason, SUM(dropped) AS n FROM dead_letter_volume WHERE dropped > 0"
    if since is not None:
        sql += " AND minute >= ?"
        args.append(received_minute(parse_iso(since)))
    return {r["reason"]: int(r["n"]) for r in store.query(sql + " GROUP BY reason", args)}


#: where the dead-letter feed stands: (txid, id) of the last letter it passed
Position = tuple[int, int]

_FEED_COLUMNS = 'txid, id, topic, partition, "offset", reason, payload, received_at'


def finished_below(store: Store) -> int:
    """A transaction id such that every letter with a smaller ``txid`` that will ever be
    stored is visible now (its transaction has finished): the feed's cut. Never decreases
    on one server; 1 on SQLite (every letter has ``txid`` 0 there, and is committed once
    visible). A cut taken before a read may be used for it; never one taken after."""
    return int(store.query(f"SELECT {store.dialect.finished_below} AS below")[0]["below"])


def server_identity(store: Store) -> str | None:
    """The database server's identity (PostgreSQL's ``system_identifier``: a restore into
    another server changes it, and with it the meaning of stored ``txid`` values); None on
    SQLite, or when the server does not let us read it. Outside a transaction (a refusal
    would end it)."""
    if store.dialect.server_identity is None:
        return None
    try:
        value = store.query(f"SELECT {store.dialect.server_identity} AS server")[0]["server"]
    except StorageError:
        return None  # refused (a managed service) or away: the txid check still holds
    return None if value is None else str(value)


def dead_letters_after(store: Store, after: Position, limit: int, *, below: int) -> list[dict[str, Any]]:
    """The dead-letter topic's feed: at most ``limit`` stored letters after ``after`` in
    (txid, id) order, the order their transactions are known to have finished in, among
    those with ``txid < below`` (:func:`finished_below`, taken before this call). No letter
    can later appear before the last one returned: each one stored later has a ``txid`` of
    ``below`` or more. Each row also has ``txid``; payloads are those stored.

    Two reads, each an index range on (txid, id): the rest of the transaction ``after``
    stopped in, then the transactions after it (SQLite would scan the whole index for a
    row-value comparison)."""
    txid, last_id = after
    rows = []
    if txid < below:
        rows = store.query(
            f"SELECT {_FEED_COLUMNS} FROM dead_letters WHERE txid = ? AND id > ? ORDER BY id LIMIT ?",
            (txid, last_id, limit),
        )
    if len(rows) < limit:
        rows += store.query(
            f"SELECT {_FEED_COLUMNS} FROM dead_letters WHERE txid > ? AND txid < ? ORDER BY txid, id LIMIT ?",
            (txid, below, limit - len(rows)),
        )
    return rows


#: a cut above every transaction id: :func:`dead_letters_after` with it reads the letters
#: after a position whether or not their transactions are known to have finished
NO_CUT = 2**63 - 1


def waiting_letters(store: Store, below: int) -> int:
    """How many stored letters the feed cannot pass yet: visible (committed) but with a
    ``txid`` of ``below`` (:func:`finished_below`) or more, so a transaction that began
    before theirs is still running. 0 on SQLite. One index range on (txid, id)."""
    return int(store.query("SELECT COUNT(*) AS n FROM dead_letters WHERE txid >= ?", (below,))[0]["n"])


def rebase_feed(store: Store, below: int) -> int:
    """Give every visible letter with ``txid >= below`` the ``txid`` 0: after a restore into
    another server, stored ids no longer compare with new ones, and the feed starts again
    from (0, 0) (every letter produced again, none skipped). Rows not visible now belong
    to transactions still running, whose ids are ``below`` or more: they keep them.
    Returns the letters changed. In the caller's transaction."""
    return store.execute("UPDATE dead_letters SET txid = 0 WHERE txid >= ?", (below,)).rowcount
