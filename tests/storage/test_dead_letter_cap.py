"""The dead-letter volume cap: per reason, partition and minute; counted, idempotent, deterministic."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from storage.db import Store
from storage.dead_letters import (
    DeadLetter,
    DeadLetterWrite,
    dead_letter_counts,
    dead_letter_drops,
    dead_letter_volume,
    write_dead_letters,
)
from storage.limits import DeadLetterCap
from tests.store_targets import StoreTarget

T0 = datetime(2026, 11, 23, 14, 0, 5, tzinfo=UTC)
CAP = DeadLetterCap(per_minute=5, payloads_per_minute=2)


@pytest.fixture
def store(store_target: StoreTarget):
    s = store_target.open(synchronous="NORMAL", dead_letter_cap=CAP)
    yield s
    s.close()


def letter(offset: int, *, reason: str = "not_json: unexpected character", partition: int = 0,
           at: datetime = T0, payload: bytes | None = None) -> DeadLetter:  # fmt: skip
    return DeadLetter("predictions", partition, offset, reason, payload if payload is not None else b"p" * 100, at)


def write(store: Store, letters: list[DeadLetter], **kw: Any) -> DeadLetterWrite:
    with store.transaction():
        return write_dead_letters(store, letters, **kw)


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    return {
        "letters": [tuple(r.values()) for r in store.query(
            'SELECT topic, partition, "offset", reason, payload, payload_size, received_at'
            ' FROM dead_letters ORDER BY partition, "offset"')],
        "volume": [tuple(r.values()) for r in store.query(
            "SELECT * FROM dead_letter_volume ORDER BY reason, minute, topic, partition")],
        "totals": [tuple(r.values()) for r in store.query("SELECT * FROM dead_letter_totals ORDER BY reason")],
    }  # fmt: skip


def test_beyond_the_cap_rows_lose_their_payload_then_are_only_counted(store: Store) -> None:
    result = write(store, [letter(i, at=T0 + timedelta(seconds=i)) for i in range(12)])
    assert result == DeadLetterWrite(stored=5, payloads_dropped=3, dropped=7, duplicates=0)
    rows = store.query('SELECT "offset", payload, payload_size FROM dead_letters ORDER BY "offset"')
    assert [(r["offset"], r["payload"] is not None, r["payload_size"]) for r in rows] == [
        (0, True, 100), (1, True, 100), (2, False, 100), (3, False, 100), (4, False, 100),
    ]  # fmt: skip
    (vol,) = dead_letter_volume(store)
    assert (vol["reason"], vol["minute"], vol["stored"], vol["payloads"], vol["payloads_dropped"]) == (
        "not_json", "2026-11-23T14:00:00.000Z", 5, 2, 3,
    )  # fmt: skip
    assert (vol["dropped"], vol["drop_first"], vol["drop_last"]) == (7, 5, 11)
    assert dead_letter_drops(store) == {"not_json": (3, 7)}


def test_each_reason_partition_and_minute_has_its_own_budget(store: Store) -> None:
    letters = (
        [letter(i) for i in range(6)]
        + [letter(100 + i, reason="bad_type: ts out of range") for i in range(6)]
        + [letter(i, partition=1) for i in range(6)]
        + [letter(200 + i, at=T0 + timedelta(minutes=1)) for i in range(6)]
    )
    result = write(store, letters)
    assert (result.stored, result.dropped) == (20, 4)
    per_bucket = {
        (r["reason"], r["minute"][11:16], r["partition"]): (r["stored"], r["dropped"])
        for r in dead_letter_volume(store)
    }
    assert per_bucket == {
        ("bad_type", "14:00", 0): (5, 1),
        ("not_json", "14:00", 0): (5, 1),
        ("not_json", "14:00", 1): (5, 1),
        ("not_json", "14:01", 0): (5, 1),
    }
    assert dead_letter_drops(store) == {"bad_type": (3, 1), "not_json": (9, 3)}


def test_reason_codes_that_do_not_look_like_ours_share_one_budget(store: Store) -> None:
    odd = ["ümlaut: x", "no colon at all and long " * 5, "Mixed_Case: y", ""]
    write(store, [letter(i, reason=r) for i, r in enumerate(odd)] + [letter(9, reason="internal: KeyError")])
    assert {r["reason"]: r["stored"] for r in dead_letter_volume(store)} == {"internal": 1, "other": 4}


def test_the_budget_carries_over_between_writes(store: Store) -> None:
    assert write(store, [letter(0), letter(1), letter(2)]).stored == 3
    assert write(store, [letter(3), letter(4), letter(5)]) == DeadLetterWrite(
        stored=2, payloads_dropped=2, dropped=1, duplicates=0
    )


def test_a_record_read_again_is_neither_stored_nor_counted_twice(store: Store) -> None:
    letters = [letter(i) for i in range(10)]
    write(store, letters)
    before = dump(store)
    # a restart re-reads the same records (same offsets), later in time
    again = [letter(i, at=T0 + timedelta(minutes=5)) for i in range(10)]
    assert write(store, again) == DeadLetterWrite(duplicates=10)
    assert dump(store) == before
    # a new record after them still counts (a new minute: a new budget)
    assert write(store, [letter(10, at=T0 + timedelta(minutes=5))]).stored == 1


def test_the_same_records_in_any_order_or_batches_give_the_same_tables(store_target: StoreTarget) -> None:
    letters = [
        letter(i, partition=i % 3, reason=random.Random(i).choice(["not_json: x", "empty: y"]),
               at=T0 + timedelta(seconds=5 * i))
        for i in range(60)
    ]  # fmt: skip
    dumps = []
    for seed in range(3):
        store = store_target.fresh().open(dead_letter_cap=CAP)
        shuffled = list(letters)
        random.Random(seed).shuffle(shuffled)
        # one batch, or several, each sorted as the consumer would see a partition
        cuts = [0, 60] if seed == 0 else sorted({0, 60, *random.Random(seed).sample(range(1, 60), 4)})
        by_offset = sorted(letters, key=lambda d: d.offset)
        for a, b in zip(cuts, cuts[1:], strict=False):
            batch = by_offset[a:b]
            random.Random(seed + a).shuffle(batch)  # order inside a flush does not matter
            write(store, batch)
        dumps.append(dump(store))
        store.close()
    assert dumps[0] == dumps[1] == dumps[2]
    assert dumps[0]["totals"]  # the cap was reached


def test_a_rolled_back_write_leaves_nothing_and_the_retry_decides_afresh(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        write_dead_letters(store, [letter(i) for i in range(8)])
        raise RuntimeError("the window write failed: the flush rolls back")
    assert dump(store) == {"letters": [], "volume": [], "totals": []}
    assert write(store, [letter(i) for i in range(8)]).dropped == 3


def test_counters_survive_a_restart(store_target: StoreTarget) -> None:
    store = store_target.open(dead_letter_cap=CAP)
    write(store, [letter(i) for i in range(9)])
    store.close()
    store = store_target.open(dead_letter_cap=CAP)
    try:
        assert dead_letter_drops(store) == {"not_json": (3, 4)}
        write(store, [letter(i) for i in range(9, 12)])  # same minute: all over the cap
        assert dead_letter_drops(store) == {"not_json": (3, 7)}
        # and the drops are still recognised as handled when read again
        assert write(store, [letter(i) for i in range(12)]) == DeadLetterWrite(duplicates=12)
    finally:
        store.close()


def test_payload_bytes_are_still_cut_and_empty_messages_have_no_size(store: Store) -> None:
    write(store, [letter(0, payload=b"x" * 1000), DeadLetter("predictions", 0, 1, "empty: no value", None, T0)],
          max_payload_bytes=10)  # fmt: skip
    rows = store.query('SELECT "offset", payload, payload_size FROM dead_letters ORDER BY "offset"')
    assert [(r["offset"], r["payload"], r["payload_size"]) for r in rows] == [(0, b"x" * 10, 1000), (1, None, None)]


def test_a_cap_given_by_the_caller_wins_and_bad_caps_are_refused(store: Store) -> None:
    result = write(store, [letter(i) for i in range(10)], cap=DeadLetterCap(per_minute=1, payloads_per_minute=0))
    assert result == DeadLetterWrite(stored=1, payloads_dropped=1, dropped=9)
    with pytest.raises(ValueError):
        DeadLetterCap(per_minute=0)
    with pytest.raises(ValueError):
        DeadLetterCap(per_minute=3, payloads_per_minute=4)


def test_reasons_by_code_on_both_stores(store: Store) -> None:
    """`driftwarden dead-letters --by-reason` groups by the code before ':' on both stores."""
    from storage.oncall import dead_letter_reasons

    write(store, [letter(0, reason="not_json: a"), letter(1, reason="not_json: b", at=T0 + timedelta(seconds=1)),
                  letter(2, reason="unknown_model: x", at=T0 + timedelta(minutes=1))])
    rows = dead_letter_reasons(store)
    assert [(r["code"], r["n"]) for r in rows] == [("not_json", 2), ("unknown_model", 1)]
    assert rows[0]["first"] < rows[0]["last"]


def test_reasons_count_the_letters_only_counted_beyond_the_cap(store: Store) -> None:
    """A flood showed as its first few letters: `--by-reason` and `status` now say how many
    more were counted without being kept (per code, from ``dead_letter_volume``)."""
    from storage.dead_letters import dead_letters_not_kept
    from storage.oncall import dead_letter_reasons

    write(store, [letter(i, at=T0 + timedelta(seconds=i)) for i in range(12)])  # 5 kept, 7 counted
    write(store, [letter(100, reason="bad_type: x", at=T0 + timedelta(minutes=3))])
    rows = dead_letter_reasons(store)
    assert [(r["code"], r["n"], r["not_kept"]) for r in rows] == [("not_json", 5, 7), ("bad_type", 1, 0)]
    assert dead_letters_not_kept(store) == {"not_json": 7}
    later = (T0 + timedelta(minutes=2)).isoformat()
    assert dead_letters_not_kept(store, since=later) == {}
    assert [(r["code"], r["n"], r["not_kept"]) for r in dead_letter_reasons(store, since=later)] == [("bad_type", 1, 0)]


def test_reasons_are_stored_with_control_characters_shown(store: Store) -> None:
    """A reason may quote the message (an unknown model's name): its control characters are
    stored as the CLI shows them (``\\x00``, ``\\n``), on both stores; PostgreSQL text cannot
    hold U+0000 at all, and one such reason failed every flush there. Still cut to 1000."""
    write(store, [letter(0, reason="unknown_model: evil\x00\n\x1b[2J"), letter(1, reason="bad_type: " + "\x00" * 2000)])
    reasons = [r["reason"] for r in store.query('SELECT reason FROM dead_letters ORDER BY "offset"')]
    assert reasons[0] == "unknown_model: evil\\x00\\n\\x1b[2J"
    assert reasons[1] == ("bad_type: " + "\\x00" * 1000)[:1000]
    assert dead_letter_counts(store) == {"unknown_model": 1, "bad_type": 1}


def test_a_new_record_at_a_stored_letters_offset_is_counted_not_taken_for_a_re_read(store: Store) -> None:
    """A letter marked new (read past its partition's replay boundary) whose offset a
    stored letter holds is of another record (the partition's log went back): the stored
    row stays, the new one is counted as not stored; unmarked, it is a re-read. Its offset
    joins no range of counted letters: a fresh letter after it is still stored."""
    write(store, [letter(3, payload=b"old")])
    w = write(store, [dataclasses.replace(letter(3, payload=b"new"), new=True)])
    assert (w.stored, w.dropped, w.duplicates, w.conflicts) == (0, 1, 0, (("predictions", 0, 3),))
    assert write(store, [letter(3, payload=b"new")]).duplicates == 1
    assert dead_letter_drops(store) == {"not_json": (0, 1)}
    assert write(store, [dataclasses.replace(letter(2), new=True)]).stored == 1
    # the old log's letter not stored yet, with the new log's at its offset: the first kept
    w = write(store, [letter(7, payload=b"old"), dataclasses.replace(letter(7, payload=b"new"), new=True)])
    assert (w.stored, w.dropped, w.conflicts) == (1, 1, (("predictions", 0, 7),))
    rows = store.query('SELECT "offset", payload_size FROM dead_letters ORDER BY "offset"')
    assert [(int(r["offset"]), r["payload_size"]) for r in rows] == [(2, 100), (3, 3), (7, 3)]
