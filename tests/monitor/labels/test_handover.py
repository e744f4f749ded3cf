"""The label join handed over between instances sharing one store (the real Pipeline, no broker).

Instance A owns partition 0 of both topics (keyed by model, the same partition count),
then the group gives it to instance B: B claims the partition and resumes the join
from the partition's row (labels offset, the model's clock) while the join tables
hold what A stored. Kafka's part is played by hand: B reads the predictions again
from the offset ``adopt`` returns and the labels from the join's resume position,
as the daemon seeks there. Proof: the join tables, counters and performance figures
equal those of one instance that read both topics without interruption, and an A
that stalled past the hand-over stores nothing.

Runs on SQLite (both instances on one file) and PostgreSQL (the case it is for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import Config, load_config
from monitor.service.pipeline import Pipeline
from storage.db import Store
from storage.labels import label_counters
from storage.stream import partition_rows
from tests.monitor.labels.helpers import (
    NOW_MS,
    Clock,
    Rec,
    label_config,
    labels_for,
    perf_rows,
    predictions,
)
from tests.monitor.labels.test_join import settle
from tests.store_targets import StoreTarget, open_state_store

CHUNK = 150


def streams() -> tuple[list[Rec], list[Rec]]:
    """Predictions and their labels (delayed 10 min, 5 % never labelled), partition 0 of each topic."""
    preds = predictions(windows=6, per_window=150)
    labs = [ev for i, ev in enumerate(labels_for(preds, seed=2)) if i % 20 != 7]
    for ev in labs:
        ev["ts"] = int(ev["ts"]) + 600_000
    return (
        [Rec("predictions", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(preds)],
        [Rec("labels", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(labs)],
    )


def instance(cfg: Config, store: Store, clock: Clock, owner: str) -> Pipeline:
    p = Pipeline(cfg, store, clock=clock, owner=owner)
    p.auto_claim = False  # as in the daemon: only claimed partitions are processed
    return p


def step(p: Pipeline, clock: Clock, preds: list[Rec], labels: list[Rec]) -> None:
    p.process_records(preds)
    p.process_label_records(labels)
    p.flush()
    clock.advance(seconds=2)


def run(p: Pipeline, clock: Clock, preds: list[Rec], labels: list[Rec]) -> None:
    for i in range(0, max(len(preds), len(labels)), CHUNK):
        step(p, clock, preds[i : i + CHUNK], labels[i : i + CHUNK])


def dump(store: Store) -> dict[str, Any]:
    """What the join stored (``early`` left out: it depends on how the topics' polls interleave)."""
    counters = {m: {k: v for k, v in c.items() if k != "early"} for m, c in label_counters(store).items()}
    return {
        "performance": perf_rows(store),
        "data": perf_rows(store, "data"),
        "counters": counters,
        "predictions": [tuple(r.values()) for r in store.query(
            "SELECT event_id, ts, version, label, label_ts, label_pos FROM label_predictions ORDER BY ts, event_id")],
        "slots": [tuple(r.values()) for r in store.query(
            'SELECT start, "end", rows, labelled, dirty FROM label_slots ORDER BY start')],
    }  # fmt: skip


def solo(cfg: Config, target: StoreTarget, preds: list[Rec], labels: list[Rec]) -> dict[str, Any]:
    store = target.open()
    clock = Clock()
    p = instance(cfg, store, clock, "solo")
    p.adopt([0], generation=1)
    run(p, clock, preds, labels)
    settle(p, clock)
    out = dump(store)
    store.close()
    return out


def test_the_next_owner_resumes_the_join_exactly_and_a_stalled_one_stores_nothing(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    cfg = load_config(label_config(tmp_path, ttl="2h", delay="2m"))
    preds, labels = streams()
    want = solo(cfg, store_target.fresh(), preds, labels)
    assert want["counters"]["churn"]["joined"] == len(labels)
    assert len({r[0] for r in want["performance"]}) == 24  # 6 windows x (all + 3 regions)

    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = instance(cfg, store_a, clock, "a")
    a.adopt([0], generation=1)
    cut = 3 * CHUNK
    run(a, clock, preds[:cut], labels[:cut])
    row = partition_rows(store_a, "predictions")[0]["state"]["labels"]
    assert row["offset"] == cut and row["clock"]["churn"] == a.labels.clock_ms["churn"]  # type: ignore[union-attr]
    before = dump(store_a)
    stored_clock = dict(a.labels.clock_ms)  # type: ignore[union-attr]

    # A stalls with a step in hand; the group gives partition 0 to B, which claims it
    a.process_records(preds[cut : cut + CHUNK])
    a.process_label_records(labels[cut : cut + CHUNK])
    b = instance(cfg, store_b, clock, "b")
    seek, refused = b.adopt([0], generation=2)
    assert refused == set()
    assert b.labels is not None and b.labels.positions == {0: cut}
    assert b.labels.clock_ms == stored_clock  # not A's newer one in memory
    a.flush()  # refused (partition 0 is B's now): nothing of it is written
    assert 0 not in a.claims and not a.labels.has_pending  # type: ignore[union-attr]
    if store_a.shared:  # one instance per SQLite file: there it writes every model's join
        assert a.labels.held(a.claims) == []  # type: ignore[union-attr]
    assert dump(store_b) == before

    # B reads again from where the stored state resumes, both topics
    b_preds, b_labels = preds[seek[0] :], labels[b.labels.positions[0] :]
    assert seek[0] < cut  # the open windows' rows are read again (the join skips them)
    b.process_records(b_preds[: cut - seek[0]])
    run(b, clock, b_preds[cut - seek[0] :], b_labels)
    settle(b, clock)
    assert dump(store_b) == want


def test_the_single_row_state_of_older_versions_moves_into_the_partition_row(tmp_path: Path) -> None:
    """A store written before the rows kept the join (``stream_state`` ``labels``): its offsets
    and clocks are resumed, and the first flush moves them into partition 0's row."""
    from storage.state import load_state, save_state

    cfg = load_config(label_config(tmp_path))
    store = open_state_store(tmp_path / "old.db")
    with store.transaction():
        save_state(store, "labels", {"offsets": {"0": 40}, "clock": {"churn": NOW_MS}})
    clock = Clock()
    p = Pipeline(cfg, store, clock=clock, owner="solo")
    p.restore()
    assert p.labels is not None and p.labels.replay_before == {0: 40}
    preds, labels = streams()
    p.process_label_records(labels[:60])  # the first 40 are in the store already: skipped
    p.flush()
    assert label_counters(store)["churn"]["labels"] == 20
    assert partition_rows(store, "predictions")[0]["state"]["labels"] == {"offset": 60, "clock": {"churn": NOW_MS}}
    assert load_state(store, "labels") == {}


def test_on_a_shared_store_labels_of_a_partition_not_held_are_left_to_its_owner(
    tmp_path: Path, pg_target: StoreTarget
) -> None:
    """Labels partition 0 carries the models of predictions partition 0: an instance that
    holds only partition 1 neither joins them nor moves their offset, and writes no join
    row of their model, even with due windows of it in the store."""
    cfg = load_config(label_config(tmp_path))
    preds, labels = streams()
    store = pg_target.open()
    clock = Clock()
    owner = instance(cfg, store, clock, "owner")
    owner.adopt([0], generation=1)
    run(owner, clock, preds[:300], labels[:300])
    before = dump(store)
    assert before["counters"]["churn"]["labels"] == 300
    other = instance(cfg, pg_target.open(), clock, "other")
    other.adopt([1], generation=1)
    other.process_label_records(labels[300:600])
    clock.advance(hours=1)  # the owner's windows are due by now: not the other's to compute
    other.tick()
    other.flush()
    assert other.labels is not None and other.labels.positions == {} and not other.labels.has_pending
    assert other.labels.held(other.claims) == []
    assert dump(store) == before
    assert partition_rows(store, "predictions")[0]["state"]["labels"]["offset"] == 300


def split_instances(tmp_path: Path, pg_target: StoreTarget) -> tuple[Pipeline, Pipeline, Store, Clock]:
    """A (predictions partition 0) and B (partition 1) on one shared store, and their clock:
    the model's labels go to B (labels partition 1) while A stores its predictions."""
    cfg = load_config(label_config(tmp_path, ttl="2h", early_ttl="30m"))
    clock = Clock()
    a = instance(cfg, pg_target.open(), clock, "a")
    a.adopt([0], generation=1)
    b_store = pg_target.open()
    b = instance(cfg, b_store, clock, "b")
    b.adopt([1], generation=1)
    return a, b, b_store, clock


@pytest.mark.parametrize("lookup", [True, False], ids=["lookup-misses", "memory-only"])
def test_labels_joined_by_an_instance_that_does_not_hold_their_predictions(
    tmp_path: Path, pg_target: StoreTarget, lookup: bool
) -> None:
    """Topics of different partition counts on a shared store: the model's predictions come
    to A (predictions partition 0), its labels to B (labels partition 1). B's in-memory ids
    are built from the store when it first joins, so a label of a prediction A stored after
    that is found only by the daemon's fallback (``lookup_misses``, set for such topics):
    with it every label is joined, without it they wait and end unmatched."""
    a, b, b_store, clock = split_instances(tmp_path, pg_target)
    preds, labels = streams()
    labels = [r._replace(partition=1) for r in labels]
    assert b.labels is not None
    b.labels.lookup_misses = lookup
    for i in range(0, len(preds), CHUNK):
        step(a, clock, preds[i : i + CHUNK], [])
        step(b, clock, [], labels[i : i + CHUNK])  # labels of the predictions just stored
    clock.advance(hours=3)
    b.tick()
    b.flush()
    counters = label_counters(b_store)["churn"]
    labelled = b_store.query("SELECT COUNT(label) AS n FROM label_predictions")[0]["n"]
    if lookup:
        assert counters["joined"] == labelled == len(labels)
        assert counters["unmatched_labels"] == 0
        assert b_store.query("SELECT COUNT(*) AS n FROM label_early") == [{"n": 0}]
    else:  # joined: the first chunk's labels (B built its index after A stored them) and those
        # that came before their prediction (A found them waiting); the rest wait in vain
        assert counters["joined"] == labelled < len(labels) // 2


def test_an_instance_left_with_every_partition_builds_its_id_index_again(
    tmp_path: Path, pg_target: StoreTarget
) -> None:
    """B joined labels of predictions A stored (``lookup_misses`` on), then A leaves and B
    holds every predictions partition (the daemon turns the lookup off): B's index, which
    learnt of A's predictions only through lookups, is built again from the store, so the
    labels of predictions A stored last are joined too."""
    a, b, b_store, clock = split_instances(tmp_path, pg_target)
    preds, labels = streams()
    labels = [r._replace(partition=1) for r in labels]
    assert b.labels is not None
    b.labels.lookup_misses = True
    for i in range(0, 2 * CHUNK, CHUNK):
        step(a, clock, preds[i : i + CHUNK], [])
        step(b, clock, [], labels[i : i + CHUNK])
    step(a, clock, preds[2 * CHUNK :], [])  # A stores the rest, then leaves the group
    b.adopt([0, 1], generation=2)
    b.labels.lookup_misses = False
    rest = labels[2 * CHUNK :]
    for i in range(0, len(rest), CHUNK):
        step(b, clock, [], rest[i : i + CHUNK])
    clock.advance(hours=3)
    b.tick()
    b.flush()
    c = label_counters(b_store)["churn"]
    assert c["joined"] == len(labels) and c["unmatched_labels"] == 0


def test_max_early_bounds_the_table_whichever_instances_wrote_the_early_labels(
    tmp_path: Path, pg_target: StoreTarget
) -> None:
    """The model's labels read by A (labels partition 0) and B (partition 1) on one shared
    store: each kept its own count of the waiting labels, read from the table once, then
    grown by its own writes only, so the table held up to instances x ``max_early``. The
    count is read from the table (under the model's lock) every time: 5 wait, the 5 newest,
    and the counters add up."""
    cfg = load_config(label_config(tmp_path, early_ttl="1d", extra="max_early = 5\n"))
    clock = Clock()
    a, b = instance(cfg, pg_target.open(), clock, "a"), instance(cfg, pg_target.open(), clock, "b")
    a.adopt([0], generation=1)
    b.adopt([1], generation=1)
    preds = predictions(windows=1, per_window=10)
    labs = [{**ev, "ts": int(preds[0]["ts"]) + 60_000 + 1000 * i} for i, ev in enumerate(labels_for(preds))]
    recs = [Rec("labels", i % 2, i // 2, NOW_MS, orjson.dumps(ev)) for i, ev in enumerate(labs)]
    # one label each (each reads the count), then four each (A's count, kept, would say 5)
    for p, part in ((a, recs[0:1]), (b, recs[1:2]), (a, recs[2:10:2]), (b, recs[3:10:2])):
        step(p, clock, [], part)
    store = a.store
    waiting = [r["event_id"] for r in store.query("SELECT event_id FROM label_early ORDER BY ts")]
    assert waiting == [ev["event_id"] for ev in labs[5:]]
    c = label_counters(store)["churn"]
    assert c["early"] == 10 and c["dropped_early_labels"] == 5
