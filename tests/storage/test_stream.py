"""storage.stream: partition rows, claims, fencing, and the state of older versions. Both stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from storage.stream import (
    PartitionsLost,
    PartitionWrite,
    adopt_legacy_state,
    claim_partitions,
    flush_outcome,
    merged_state,
    partition_rows,
    release_partitions,
    replay_after_commit,
    save_partitions,
    touch_partitions,
)
from tests.store_targets import StoreTarget

T = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def test_a_claim_bumps_the_epoch_and_fences_the_previous_writer(store_target: StoreTarget) -> None:
    store = store_target.open()
    a = claim_partitions(store, "t", [0, 1], owner="a", generation=1, now=T)
    assert [(c.ok, c.epoch, c.offset, c.continued) for c in a.values()] == [(True, 1, None, False)] * 2
    with store.transaction():
        save_partitions(store, "t", "a", {0: PartitionWrite(1, 10, {"models": {"m": {"x": 1}}}),
                                          1: PartitionWrite(1, 5, {"models": {}})}, T)  # fmt: skip
    b = claim_partitions(store, "t", [1], owner="b", generation=2, now=T)
    assert (b[1].epoch, b[1].previous_owner, b[1].offset) == (2, "a", 5)
    with pytest.raises(PartitionsLost) as exc, store.transaction():
        store.execute("INSERT INTO dead_letter_totals (reason) VALUES (?)", ("written by a",))
        save_partitions(store, "t", "a", {0: PartitionWrite(1, 20, {}), 1: PartitionWrite(1, 9, {})}, T)
    assert exc.value.partitions == [1]
    # nothing of a's transaction stayed: not its other writes, not partition 0's row
    assert store.query("SELECT COUNT(*) AS n FROM dead_letter_totals")[0]["n"] == 0
    assert merged_state(store, "t") == {"offsets": {"0": 10, "1": 5}, "models": {"m": {"x": 1}}}
    assert touch_partitions(store, "t", "a", {0: 1, 1: 1}, T) == [1]


def test_the_flush_token_tells_whether_a_commit_that_raised_happened(store_target: StoreTarget) -> None:
    store = store_target.open()
    claim_partitions(store, "t", [0, 1], owner="a", generation=1, now=T)
    both = {0: 1, 1: 1}
    with store.transaction():
        save_partitions(store, "t", "a", {p: PartitionWrite(1, 10, {"models": {}}) for p in both}, T, token="t1")
    assert flush_outcome(store, "t", "t1", both) is True
    with pytest.raises(RuntimeError), store.transaction():
        save_partitions(store, "t", "a", {p: PartitionWrite(1, 20, {}) for p in both}, T, token="t2")
        raise RuntimeError("the COMMIT never happened")
    # still a's at epoch 1 and only a writes it there: the token would be in it
    assert flush_outcome(store, "t", "t2", both) is False
    assert partition_rows(store, "t")[0]["state"] == {"models": {}, "flush": "t1"}
    # another instance claimed both: the token stays until it writes the rows
    claim_partitions(store, "t", [0, 1], owner="b", generation=2, now=T)
    assert flush_outcome(store, "t", "t1", both) is True
    assert flush_outcome(store, "t", "t2", both) is None
    with store.transaction():
        save_partitions(store, "t", "b", {0: PartitionWrite(2, 30, {})}, T, token="b1")
    assert flush_outcome(store, "t", "t1", both) is True  # partition 1 still tells
    with store.transaction():
        save_partitions(store, "t", "b", {1: PartitionWrite(2, 30, {})}, T, token="b2")
    assert flush_outcome(store, "t", "t1", both) is None  # no row can tell any more
    # a row the flush's own claim inserted is missing: that claim did not commit
    assert flush_outcome(store, "t", "t3", {5: 1}) is False
    assert flush_outcome(store, "t", "t3", {}) is False


def test_what_a_committed_flush_makes_durable() -> None:
    # partition 0 consumed on since the flush began; 1 only since; 2 no longer consumed
    assert replay_after_commit({0: 5, 2: 7}, {0: 40, 1: 9}, {0: 30, 2: 8}) == {0: 30}
    assert replay_after_commit({0: 50, 1: 4}, {0: 60, 1: 9}, {0: 30}) == {0: 50, 1: 4}


def test_memory_is_current_only_when_nobody_claimed_in_between(store_target: StoreTarget) -> None:
    store = store_target.open()
    first = claim_partitions(store, "t", [0], owner="a", generation=1, now=T)[0]
    again = claim_partitions(store, "t", [0], owner="a", generation=2, held={0: first.epoch}, now=T)[0]
    assert again.continued and again.epoch == 2
    claim_partitions(store, "t", [0], owner="b", generation=3, now=T)
    back = claim_partitions(store, "t", [0], owner="a", generation=4, held={0: again.epoch}, now=T)[0]
    assert back.ok and not back.continued


def test_an_older_generation_waits_until_the_row_is_stale_or_released(store_target: StoreTarget) -> None:
    store = store_target.open()
    claim_partitions(store, "t", [0], owner="b", generation=9, now=T)
    stale = timedelta(seconds=30)
    old = claim_partitions(store, "t", [0], owner="a", generation=2, now=T + timedelta(seconds=10), stale_after=stale)
    assert not old[0].ok and old[0].previous_owner == "b"
    # a group created anew starts at generation 1: a row nobody wrote for stale_after is taken
    late = claim_partitions(store, "t", [0], owner="a", generation=2, now=T + timedelta(seconds=31), stale_after=stale)
    assert late[0].ok
    release_partitions(store, "t", "a", {0: late[0].epoch}, T)
    assert partition_rows(store, "t")[0]["owner"] == ""
    assert claim_partitions(store, "t", [0], owner="c", generation=1, now=T)[0].ok


def test_the_single_snapshot_of_older_versions_becomes_partition_rows(store_target: StoreTarget) -> None:
    store = store_target.open()
    legacy = {
        "offsets": {"0": 120, "1": 80},
        "models": {
            "churn": {"watermark": 5, "open": [{"v": "v1", "s": "", "start": 0, "end": 60,
                                                "rows": 3, "ranges": {"1": [70, 79]}}]},  # fmt: skip
            "idle": {"watermark": 9, "open": []},
        },
    }
    with store.transaction():
        store.execute("INSERT INTO stream_state (name, state, updated_at) VALUES (?,?,?)",
                      ("pipeline", orjson.dumps(legacy).decode(), "x"))  # fmt: skip
    assert adopt_legacy_state(store, "t", T)
    rows = {r["partition"]: r for r in partition_rows(store, "t")}
    assert (rows[0]["offset"], rows[1]["offset"]) == (120, 80)
    assert set(rows[1]["state"]["models"]) == {"churn"}  # where its open window reads
    assert set(rows[0]["state"]["models"]) == {"idle"}
    assert rows[1]["state"]["models"]["churn"]["partitions"] == [1]
    assert store.query("SELECT COUNT(*) AS n FROM stream_state")[0]["n"] == 0
    assert not adopt_legacy_state(store, "t", T)  # once
