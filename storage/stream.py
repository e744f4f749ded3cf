"""Durable stream state per partition, claimed and fenced (``stream_partitions``).

One row per partition of the predictions topic: the next offset to consume
(everything before it is reflected in stored figures or in this state) and the
state of the models whose rows the partition carries (watermarks, count-window
positions, open windows as offset ranges to re-read). The pipeline writes the
rows of the partitions it owns in the same transaction as the figures.

Ownership: an instance :func:`claim_partitions` when Kafka assigns them (the
claim bumps ``epoch``); :func:`save_partitions` writes only where ``owner`` and
``epoch`` are still the writer's, and raises :class:`PartitionsLost` otherwise,
which rolls the whole transaction back: an instance that lost a partition (it
stalled, the group moved on, another instance claimed it) can store neither
figures nor state for it any more. Claims and saves lock the rows, so a claim
waits for a save in progress and then sees its result: the next owner resumes
exactly where the last committed save left off.

A claim with an older Kafka group generation than the row's is refused (a
stale member cannot take a partition back from its current owner), unless the
row has not been written for ``stale_after`` (owners write their rows at
least every commit interval; a group deleted and created anew starts its
generations at 1 again).

Commits of unknown outcome: when the connection drops during COMMIT, the
transaction may have committed while the writer sees an error. Each save
therefore writes the flush's token (:data:`FLUSH_TOKEN`, unique per attempt)
into the state of every row it writes; :func:`flush_outcome` reads the rows
back and tells whether the attempt committed, so its writer finishes it
instead of applying it a second time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from storage.db import Store
from storage.records import iso

#: the single-row snapshot older versions kept in ``stream_state``
LEGACY_STATE = "pipeline"
#: the key of a row's state that holds the token of the flush that wrote it last
FLUSH_TOKEN = "flush"


class PartitionsLost(Exception):  # noqa: N818 - a condition, not a failure of the store
    """Another instance claimed these partitions: nothing was written (rolled back)."""

    def __init__(self, partitions: Iterable[int]) -> None:
        self.partitions = sorted(set(partitions))
        super().__init__(f"partitions {self.partitions} are now owned by another instance")


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of claiming one partition.

    ``ok``: the partition is ours at ``epoch``. ``continued``: the row was last
    claimed by us at ``previous_epoch`` and written by nobody since, so what we
    hold in memory is still current. ``offset``/``state``: what the row holds (the
    state to resume from). A refused claim (``ok`` False) says who holds it.
    """

    partition: int
    ok: bool
    epoch: int
    previous_owner: str
    previous_epoch: int
    generation: int
    offset: int | None
    state: Mapping[str, Any] = field(default_factory=dict)
    continued: bool = False


@dataclass(frozen=True, slots=True)
class PartitionWrite:
    """What a save writes for one owned partition."""

    epoch: int
    offset: int | None
    state: Mapping[str, Any]


def claim_partitions(
    store: Store,
    topic: str,
    partitions: Iterable[int],
    *,
    owner: str,
    generation: int | None,
    held: Mapping[int, int] | None = None,
    now: datetime,
    stale_after: timedelta | None = None,
) -> dict[int, Claim]:
    """Take ``partitions`` of ``topic`` for ``owner`` (one transaction); per partition the
    :class:`Claim`. ``generation`` None (no consumer group: replay, tests) claims
    unconditionally; ``held`` maps the partitions ``owner`` holds now to their epoch
    (to tell whether memory is current)."""
    parts = sorted(set(int(p) for p in partitions))
    if not parts:
        return {}
    held = held or {}
    marks = ",".join("?" for _ in parts)
    stamp = iso(now)
    stale = iso(now - stale_after) if stale_after is not None else ""
    out: dict[int, Claim] = {}
    with store.transaction():
        store.executemany(
            'INSERT INTO stream_partitions (topic, partition, owner, generation, epoch, "offset",'
            " state, updated_at) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (topic, partition) DO NOTHING",
            [(topic, p, "", -1, 0, None, "{}", stamp) for p in parts],
        )
        rows = store.query(
            'SELECT partition, owner, generation, epoch, "offset", state, updated_at'
            f" FROM stream_partitions WHERE topic = ? AND partition IN ({marks})"
            f" ORDER BY partition{store.dialect.for_update}",
            (topic, *parts),
        )
        for r in rows:
            p, row_gen, row_epoch = int(r["partition"]), int(r["generation"]), int(r["epoch"])
            newer = generation is not None and row_gen > generation and r["owner"] not in ("", owner)
            if newer and not (stale and r["updated_at"] < stale):
                out[p] = Claim(p, False, row_epoch, r["owner"], row_epoch, row_gen, r["offset"])
                continue
            gen = row_gen if generation is None else generation
            epoch = row_epoch + 1
            store.execute(
                "UPDATE stream_partitions SET owner = ?, generation = ?, epoch = ?, updated_at = ?"
                " WHERE topic = ? AND partition = ?",
                (owner, gen, epoch, stamp, topic, p),
            )
            out[p] = Claim(
                partition=p,
                ok=True,
                epoch=epoch,
                previous_owner=r["owner"],
                previous_epoch=row_epoch,
                generation=gen,
                offset=None if r["offset"] is None else int(r["offset"]),
                state=orjson.loads(r["state"] or "{}"),
                continued=r["owner"] == owner and held.get(p) == row_epoch,
            )
    return out


def save_partitions(
    store: Store, topic: str, owner: str, writes: Mapping[int, PartitionWrite], now: datetime,
    *, token: str | None = None,
) -> None:
    """Write owned partitions' rows (inside the caller's transaction, before the figures:
    the row locks taken here order concurrent claims). Raises :class:`PartitionsLost`
    naming every partition no longer ``owner``'s at the given epoch.

    ``token``: the flush transaction's own (see :func:`flush_outcome`), kept in each
    row's state under :data:`FLUSH_TOKEN`."""
    lost: list[int] = []
    stamp = iso(now)
    for p in sorted(writes):
        w = writes[p]
        state = w.state if token is None else {**w.state, FLUSH_TOKEN: token}
        cur = store.execute(
            'UPDATE stream_partitions SET "offset" = COALESCE(?, "offset"), state = ?, updated_at = ?'
            " WHERE topic = ? AND partition = ? AND owner = ? AND epoch = ?",
            (w.offset, orjson.dumps(state).decode(), stamp, topic, int(p), owner, w.epoch),
        )
        if cur.rowcount != 1:
            lost.append(p)
    if lost:
        raise PartitionsLost(lost)


def flush_outcome(store: Store, topic: str, token: str, epochs: Mapping[int, int]) -> bool | None:
    """Whether the flush transaction that saved ``token`` into the rows of ``epochs``
    (partition -> the epoch it wrote it at) committed, read back after its COMMIT raised.

    True: a row holds the token (nobody else writes it). False: a row does not, yet
    nobody claimed the partition since (only its owner at that epoch writes its state,
    and it has written nothing since), or the row is missing (the flush's own claim
    inserted it); a transaction commits whole, so the other rows agree. None: every row
    was claimed again since (claims leave the state alone, the next owner's saves
    replace it) and none holds the token: no row can tell any more, and each partition
    was resumed from what was stored, whichever it was. A flush that wrote no row
    (``epochs`` empty) owned no partition: False (see the pipeline's ``flush``).
    Raises :class:`StorageError` while the store cannot be read.
    """
    if not epochs:
        return False
    parts = sorted(epochs)
    marks = ",".join("?" for _ in parts)
    rows = store.query(
        f"SELECT partition, epoch, state FROM stream_partitions WHERE topic = ? AND partition IN ({marks})",
        (topic, *parts),
    )
    found = {int(r["partition"]): r for r in rows}
    if any(orjson.loads(r["state"] or "{}").get(FLUSH_TOKEN) == token for r in rows):
        return True
    if len(found) < len(parts) or any(int(r["epoch"]) <= epochs[p] for p, r in found.items()):
        return False
    return None


def replay_after_commit(
    replay_before: Mapping[int, int], positions: Mapping[int, int], written: Mapping[int, int]
) -> dict[int, int]:
    """Per partition consumed (``positions``), the first offset not reflected in durable
    state once a flush that wrote the positions ``written`` (as they were when it began)
    committed. Rows consumed since it began stay to replay; partitions no longer consumed
    drop out."""
    out: dict[int, int] = {}
    for p in positions:
        o = written.get(p)
        if o is not None:
            out[p] = max(o, replay_before.get(p, 0))
        elif p in replay_before:
            out[p] = replay_before[p]
    return out


def touch_partitions(
    store: Store, topic: str, owner: str, epochs: Mapping[int, int], now: datetime
) -> list[int]:
    """Mark owned rows alive (nothing else changes); returns the partitions found lost.
    With no rows owned it still reaches the store: an instance that holds no partition
    (more instances than partitions) finds a store that went away all the same."""
    lost = []
    with store.transaction():
        if not epochs:
            store.query("SELECT 1 AS reachable")
        for p in sorted(epochs):
            cur = store.execute(
                "UPDATE stream_partitions SET updated_at = ? WHERE topic = ? AND partition = ?"
                " AND owner = ? AND epoch = ?",
                (iso(now), topic, int(p), owner, epochs[p]),
            )
            if cur.rowcount != 1:
                lost.append(p)
    return lost


def release_partitions(store: Store, topic: str, owner: str, epochs: Mapping[int, int], now: datetime) -> None:
    """Give rows up at a clean shutdown (owner emptied, epoch kept): the next claim of any
    generation takes them at once."""
    with store.transaction():
        for p in sorted(epochs):
            store.execute(
                "UPDATE stream_partitions SET owner = '', updated_at = ? WHERE topic = ?"
                " AND partition = ? AND owner = ? AND epoch = ?",
                (iso(now), topic, int(p), owner, epochs[p]),
            )


def partition_rows(store: Store, topic: str | None = None) -> list[dict[str, Any]]:
    """Every partition's row (``state`` parsed), by topic and partition: for ``status``,
    the API and tests."""
    sql = 'SELECT topic, partition, owner, generation, epoch, "offset", state, updated_at FROM stream_partitions'
    rows = store.query(sql + " WHERE topic = ? ORDER BY partition", (topic,)) if topic else store.query(
        sql + " ORDER BY topic, partition"
    )
    for r in rows:
        r["state"] = orjson.loads(r["state"] or "{}")
    return rows


def merged_state(store: Store, topic: str) -> dict[str, Any]:
    """The topic's state in one piece: ``{"offsets": {p: offset}, "models": {name: state}}``."""
    offsets: dict[str, int] = {}
    models: dict[str, Any] = {}
    for r in partition_rows(store, topic):
        if r["offset"] is not None:
            offsets[str(r["partition"])] = int(r["offset"])
        models.update(r["state"].get("models", {}))
    return {"offsets": offsets, "models": models}


def adopt_legacy_state(store: Store, topic: str, now: datetime) -> bool:
    """Split the single snapshot of older versions (``stream_state``) into partition rows,
    once: each partition keeps its offset; a model's state goes to the lowest partition
    among those its open windows read (or the lowest partition when none). Returns
    whether there was one."""
    with store.transaction():
        rows = store.query("SELECT state FROM stream_state WHERE name = ?", (LEGACY_STATE,))
        if not rows:
            return False
        if store.query("SELECT 1 FROM stream_partitions WHERE topic = ? LIMIT 1", (topic,)):
            store.execute("DELETE FROM stream_state WHERE name = ?", (LEGACY_STATE,))
            return False
        legacy = orjson.loads(rows[0]["state"])
        offsets = {int(p): int(o) for p, o in legacy.get("offsets", {}).items()}
        per: dict[int, dict[str, Any]] = {p: {} for p in offsets}
        for name, snap in legacy.get("models", {}).items():
            parts = {int(p) for w in snap.get("open", []) for p in w.get("ranges", {})}
            parts |= set(snap.get("partitions", []))
            candidates = sorted(parts or set(offsets) or {0})
            snap = {**snap, "partitions": sorted(parts or candidates[:1])}
            per.setdefault(candidates[0], {})[name] = snap
        store.executemany(
            'INSERT INTO stream_partitions (topic, partition, owner, generation, epoch, "offset",'
            " state, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            [
                (topic, p, "", -1, 0, offsets.get(p), orjson.dumps({"models": m}).decode(), iso(now))
                for p, m in sorted(per.items())
            ],
        )
        store.execute("DELETE FROM stream_state WHERE name = ?", (LEGACY_STATE,))
    return True
