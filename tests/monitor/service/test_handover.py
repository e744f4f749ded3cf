"""Partition hand-over through the store: the real Pipeline, two instances, one store.

Instance A owns partition 0, then Kafka gives it to instance B (a rebalance, or A
stalled): B claims it and resumes from the partition's stored state. Kafka's part
is played by hand: B reads the partition again from the offset ``adopt`` returns,
exactly as the daemon seeks there. Proof each time: the stored windows and
figures equal those of one pipeline that read the stream without interruption,
and nothing A computed after losing the partition reaches the store.

Runs on SQLite (both instances on one file) and PostgreSQL.
"""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from monitor.config import Config, load_config
from monitor.service.pipeline import Pipeline
from storage.db import Store
from storage.stream import partition_rows
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.fault_helpers import shaped
from tests.store_targets import StoreTarget

Rec = namedtuple("Rec", "topic partition offset timestamp value")
#: wall clock of the runs: a day after the stream's event times
WALL = START + timedelta(days=1)


class Clock:
    def __init__(self) -> None:
        self.now = WALL

    def __call__(self) -> datetime:
        return self.now


def config(tmp: Path, shape: str) -> Config:
    path = write_config(tmp, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, idle_timeout="2s")
    path.write_text(shaped(path.read_text(), shape))
    return load_config(path)


def records(payloads: list[bytes]) -> list[Rec]:
    ts = int(WALL.timestamp() * 1000)
    return [Rec("predictions", 0, i, ts, p) for i, p in enumerate(payloads)]


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    w = [tuple(r.values()) for r in store.query(
        'SELECT id, rows, status, late_rows FROM windows ORDER BY id')]
    m = [tuple(r.values()) for r in store.query(
        'SELECT window_id, "column", metric, value, threshold, drifted FROM metrics'
        ' ORDER BY window_id, "column", metric')]
    return {"windows": w, "metrics": m}


def feed(p: Pipeline, recs: list[Rec], batch: int = 200) -> None:
    for i in range(0, len(recs), batch):
        p.process_records(recs[i : i + batch])
        p.flush()


def idle(p: Pipeline, clock: Clock) -> None:
    """The stream goes quiet: past the idle timeout the tick closes every window."""
    clock.now += timedelta(seconds=5)
    p.tick()
    p.flush()


def pipeline(cfg: Config, store: Store, clock: Clock, owner: str) -> Pipeline:
    p = Pipeline(cfg, store, clock=clock, owner=owner)
    p.auto_claim = False  # as in the daemon: only claimed partitions are processed
    return p


def reference(cfg: Config, target: StoreTarget, phases: list[list[Rec]]) -> dict[str, Any]:
    """One pipeline, no hand-over; the stream goes idle between phases."""
    store = target.open()
    clock = Clock()
    p = pipeline(cfg, store, clock, "solo")
    p.adopt([0], generation=1)
    for i, recs in enumerate(phases):
        feed(p, recs)
        if i < len(phases) - 1:
            idle(p, clock)
    out = dump(store)
    store.close()
    return out


@pytest.mark.parametrize("shape", ["tumbling", "count"])
def test_the_next_owner_resumes_open_windows_exactly(
    tmp_path: Path, store_target: StoreTarget, shape: str
) -> None:
    """A hands over in the middle of windows (and count-window positions): B re-reads from
    the first row an open window holds and stores what one uninterrupted run stores."""
    cfg = config(tmp_path, shape)
    recs = records(stream(windows=6, per_window=150, shift_from=3, seed=4))
    want = reference(cfg, store_target.fresh(), [recs])

    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = pipeline(cfg, store_a, clock, "a")
    a.adopt([0], generation=1)
    cut = 2 * 150 + 70  # inside the third window
    feed(a, recs[:cut])
    assert a.release_partitions(set()) == [0]
    b = pipeline(cfg, store_b, clock, "b")
    seek, refused = b.adopt([0], generation=2)
    assert refused == set()
    assert seek[0] < cut  # the open windows' rows are read again
    feed(b, recs[seek[0] :])
    assert dump(store_b) == want
    assert len(want["windows"]) >= 4


def test_an_idle_close_before_the_hand_over_is_not_stored_twice(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """The case that failed before: A closes windows because the stream went idle (its
    watermark moves to the wall clock), then the partition moves. B resumes with A's
    watermark, so rows that arrive later for those windows are late, as they are in
    one uninterrupted run, instead of opening the windows again."""
    cfg = config(tmp_path, "tumbling")
    recs = records(stream(windows=6, per_window=150, shift_from=3, seed=5))
    phases = [recs[:400], recs[400:]]
    want = reference(cfg, store_target.fresh(), phases)
    assert sum(w[3] for w in want["windows"]) > 0  # the second phase is late: counted

    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = pipeline(cfg, store_a, clock, "a")
    a.adopt([0], generation=1)
    feed(a, phases[0])
    idle(a, clock)
    a.release_partitions(set())
    b = pipeline(cfg, store_b, clock, "b")
    seek, _ = b.adopt([0], generation=2)
    assert seek[0] == 400  # nothing open: B starts after what A consumed
    feed(b, recs[seek[0] :])
    got = dump(store_b)
    assert got == want


def test_a_fenced_instance_stores_nothing_and_the_owner_recomputes_it(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """A stalls with windows it closed but did not store yet; the group gives the
    partition to B, which claims it. A's flush is refused as a whole (figures and
    state), A forgets the partition, and B's result equals an uninterrupted run."""
    cfg = config(tmp_path, "tumbling")
    recs = records(stream(windows=6, per_window=150, shift_from=3, seed=6))
    want = reference(cfg, store_target.fresh(), [recs])

    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = pipeline(cfg, store_a, clock, "a")
    a.adopt([0], generation=1)
    feed(a, recs[:200])
    stored_by_a = dump(store_a)["windows"]
    a.process_records(recs[200:500])  # closes windows, not flushed yet: A stalls here
    assert a.has_pending

    b = pipeline(cfg, store_b, clock, "b")
    seek, _ = b.adopt([0], generation=2)
    assert a.flush() is None or True  # refused for partition 0: rolled back, nothing written
    assert dump(store_b)["windows"] == stored_by_a
    assert 0 not in a.claims and not a.has_pending
    row = partition_rows(store_b, "predictions")[0]
    assert (row["owner"], row["generation"]) == ("b", 2)

    feed(b, recs[seek[0] :])
    assert dump(store_b) == want


def test_an_older_generation_cannot_take_a_partition_back(tmp_path: Path, store_target: StoreTarget) -> None:
    """A member that was dropped from the group (its generation is older) and comes back
    still believing it owns the partition cannot claim it over the current owner."""
    cfg = config(tmp_path, "tumbling")
    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = pipeline(cfg, store_a, clock, "a")
    b = pipeline(cfg, store_b, clock, "b")
    assert a.adopt([0], generation=3)[1] == set()
    assert b.adopt([0], generation=4)[1] == set()
    seek, refused = a.adopt([0], generation=3)
    assert refused == {0} and 0 not in a.claims
    recs = records(stream(windows=2, per_window=50, shift_from=9, seed=7))
    a.process_records(recs)  # not claimed: not counted
    assert a.stats.rows == 0
    # a clean shutdown gives the row up: then any generation may claim it (a new group)
    from storage.stream import release_partitions

    release_partitions(store_b, "predictions", "b", b.claims, clock())
    assert a.adopt([0], generation=1)[1] == set()


def test_a_reference_registered_through_one_instance_is_used_by_the_others(
    tmp_path: Path, pg_target: StoreTarget
) -> None:
    """The retraining callback reaches instance A (its file lands in A's state dir); B,
    which judges the model, switches to the same reference, read from the shared store."""
    from monitor.demo.data import write_reference_csv
    from monitor.service.shared_references import follow_registered_references

    cfg_a, cfg_b = config(tmp_path / "a", "tumbling"), config(tmp_path / "b", "tumbling")
    clock = Clock()
    a = pipeline(cfg_a, pg_target.open(), clock, "a")
    b = pipeline(cfg_b, pg_target.open(), clock, "b")
    uploaded = Path(cfg_a.daemon.state_dir) / "references" / "churn" / "v2-upload.csv"
    uploaded.parent.mkdir(parents=True)
    write_reference_csv(str(uploaded), n=2000, seed=9)
    pm = a.swap_reference("churn", str(uploaded), "v2")
    uploaded.unlink()  # not reachable from B's machine anyway
    assert b.models["churn"].prepared.reference.sha256 != pm.reference.sha256
    assert follow_registered_references(b, set()) == ["churn"]
    assert b.models["churn"].prepared.reference.sha256 == pm.reference.sha256
    assert (Path(cfg_b.daemon.state_dir) / "references" / "churn" / "v2-upload.csv").is_file()
    assert follow_registered_references(b, set()) == []  # once
    # B's windows are judged against it
    b.adopt([0], generation=1)
    feed(b, records(stream(windows=3, per_window=100, shift_from=9, seed=8)))
    refs = {r["reference"] for r in b.store.query("SELECT DISTINCT reference FROM windows")}
    assert refs == {pm.reference.sha256[:12]}
