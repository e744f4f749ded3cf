"""The label join's queries (storage/labels.py) on SQLite and PostgreSQL: values keep their
Python type, duplicate ids are counted, early labels keep the latest, slots count and age."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from storage.labels import (
    EarlyLabel,
    add_counters,
    add_to_slots,
    count_early_labels,
    data_figures,
    delete_early_labels,
    drop_oldest_early_labels,
    due_slots,
    early_labels,
    first_owed_start,
    held_ids,
    held_predictions,
    insert_predictions,
    label_counters,
    list_slots,
    mark_computed,
    position,
    prune_predictions,
    prune_slots,
    recount_slots,
    set_labels,
    slot_counts,
    slot_labelled,
    upsert_early_labels,
)
from storage.records import MetricRow, WindowKey
from tests.store_targets import StoreTarget

AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BIG = position(3, 2**39 + 5)  # partition << 40 | offset: past 32 bits


def test_predictions_and_labels_come_back_as_they_went_in(store_target: StoreTarget) -> None:
    store = store_target.open()
    with store.transaction():
        n = insert_predictions(
            store, "m",
            [("a", "v1", 1000, "", 0.1), ("b", "v1", 1001, "", "pro"), ("c", "v1", 1002, "", math.nan),
             ("a", "v1", 1000, "", 0.9)],  # a held key: the first stays
            [("d", "v2", 1003, "x", 1e20, 2.5, 1500, BIG)],
        )
        assert n == 4
        set_labels(store, "m", [("1", 1600, position(0, 7), 1000, "a"), (3.25, 1601, position(0, 8), 1001, "b")])
    # each candidate is confirmed by its key: a pair whose row is not there is left out
    held = held_predictions(
        store, "m", [("a", 1000), ("a", 5000), ("b", 1001), ("c", 1002), ("d", 1003), ("d", 1000), ("zz", 1)]
    )
    assert held == {
        "a": ("a", 1000, "1", 1600, 7), "b": ("b", 1001, 3.25, 1601, 8),
        "c": ("c", 1002, None, None, None), "d": ("d", 1003, 2.5, 1500, BIG),
    }
    assert type(held["a"][2]) is str and type(held["b"][2]) is float
    rows = slot_labelled(store, "m", 0, 2000)
    assert rows == [("v1", "", 0.1, "1"), ("v1", "", "pro", 3.25), ("v2", "x", 1e20, 2.5)]
    assert slot_counts(store, "m", 0, 2000) == [("v1", "", 3, 2), ("v2", "x", 1, 1)]
    with store.transaction():
        assert prune_predictions(store, "m", 1002) == (2, 0)
        assert prune_predictions(store, "m", 9999) == (2, 1)  # c was never labelled


def test_held_ids_read_every_prediction_of_a_model_in_bounded_chunks(store_target: StoreTarget) -> None:
    """What the join's id index is built from: every (id, ts) of the model, in key order,
    whatever the chunk size (ties on ts continue after the last id read)."""
    store = store_target.open()
    rows = [(f"e{i:02d}", "v1", 1000 + i // 3, "", 0.5) for i in range(20)]
    with store.transaction():
        insert_predictions(store, "m", rows)
        insert_predictions(store, "other", [("x", "v1", 1, "", 0.5)])
    for chunk in (1, 3, 7, 20, 50):
        got = list(held_ids(store, "m", chunk=chunk))
        assert all(len(ids) <= chunk for ids, _ts in got)
        assert [(i, t) for ids, ts in got for i, t in zip(ids, ts, strict=True)] == [(r[0], r[2]) for r in rows]
    assert list(held_ids(store, "none")) == []


def test_early_labels_keep_the_latest_and_go(store_target: StoreTarget) -> None:
    store = store_target.open()
    with store.transaction():
        upsert_early_labels(store, "m", [EarlyLabel("a", "0", 10, 1), EarlyLabel("b", 1.5, 10, BIG)])
        # later ts wins; same ts: the later position; an older one changes nothing
        upsert_early_labels(store, "m", [EarlyLabel("a", "1", 11, 0), EarlyLabel("b", 9.0, 9, BIG + 1)])
    assert early_labels(store, "m", ["a", "b", "c"]) == {
        "a": EarlyLabel("a", "1", 11, 0), "b": EarlyLabel("b", 1.5, 10, BIG),
    }
    with store.transaction():
        delete_early_labels(store, "m", ["a"])
    assert list(early_labels(store, "m", ["a", "b"])) == ["b"]


def test_dropping_the_oldest_early_labels_keeps_the_newest_of_the_model(store_target: StoreTarget) -> None:
    """The oldest go first (by ts, then position), of the model named only; asking for more
    than wait drops what waits, asking for none drops nothing."""
    store = store_target.open()
    with store.transaction():
        upsert_early_labels(store, "m", [EarlyLabel(f"e{i}", i, 100 - i // 2, i) for i in range(6)])
        upsert_early_labels(store, "other", [EarlyLabel("x", 1, 0, 0)])
        assert count_early_labels(store, "m") == 6
        # ts 100, 100, 99, 99, 98, 98: the oldest are e4 (pos 4) and e5, then e2
        assert drop_oldest_early_labels(store, "m", 3) == 3
        assert drop_oldest_early_labels(store, "m", 0) == 0
    assert sorted(early_labels(store, "m", [f"e{i}" for i in range(6)])) == ["e0", "e1", "e3"]
    assert count_early_labels(store, "m") == 3 and count_early_labels(store, "other") == 1
    with store.transaction():
        assert drop_oldest_early_labels(store, "m", 10) == 3
    assert count_early_labels(store, "m") == 0 and count_early_labels(store, "other") == 1


def test_one_batch_repeating_an_id_ends_as_if_applied_in_turn(store_target: StoreTarget) -> None:
    """Each batch is one set-based statement: rows repeating an id leave what one
    statement per row left (labels: the last given; early labels: the first of the latest)."""
    store = store_target.open()
    with store.transaction():
        assert insert_predictions(store, "m", [("a", "v1", 1000, "", 0.5), ("a", "v1", 1000, "", 0.7)]) == 1
        set_labels(store, "m", [("x", 1600, 1, 1000, "a"), (2, 1500, 2, 1000, "a")])
        upsert_early_labels(
            store, "m",
            [EarlyLabel("e", "0", 10, 1), EarlyLabel("e", "1", 12, 0), EarlyLabel("e", "2", 12, 0),
             EarlyLabel("e", "3", 11, 9)],
        )
    assert held_predictions(store, "m", [("a", 1000)]) == {"a": ("a", 1000, 2, 1500, 2)}
    assert early_labels(store, "m", ["e"]) == {"e": EarlyLabel("e", "1", 12, 0)}
    with store.transaction():
        assert insert_predictions(store, "m", []) == 0
        set_labels(store, "m", [])
        upsert_early_labels(store, "m", [])


def test_slots_and_counters(store_target: StoreTarget) -> None:
    store = store_target.open()
    with store.transaction():
        insert_predictions(store, "m", [(f"e{i}", "v1", 60_000 + i, "", 0.5) for i in range(4)])
        add_to_slots(store, "m", [(60_000, 120_000, 4, 0, True), (120_000, 180_000, 0, 0, False)])
        add_counters(store, "m", {"predictions": 4, "joined": 0})
        add_counters(store, "m", {"predictions": 2, "joined": 1})
    assert label_counters(store)["m"]["predictions"] == 6 and label_counters(store)["m"]["joined"] == 1
    due = due_slots(store, "m", clock_ms=200_000, delay_ms=60_000, coverage=1.0, recompute_before="9", limit=5)
    assert [(s.start, s.end, s.rows) for s in due] == [(60_000, 120_000, 4)]
    assert first_owed_start(store, "m") == 60_000
    with store.transaction():
        mark_computed(store, "m", 60_000, 120_000, AT)
        # a label lands in the computed slot: it turns dirty
        add_to_slots(store, "m", [(60_000, 120_000, 0, 1, True)])
    [s, empty] = list_slots(store, "m")
    assert (s.labelled, s.dirty, s.computed_at) == (1, True, "2026-11-23T12:00:00.000Z") and empty.rows == 0
    assert first_owed_start(store, "m") == 60_000
    with store.transaction():
        recount_slots(store, "m", [(60_000, 120_000)])  # from the rows: 4 predictions, none labelled
        assert prune_slots(store, "m", 200_000) == 1  # the empty one; the dirty one stays
    [s] = list_slots(store, "m")
    assert (s.rows, s.labelled, s.dirty) == (4, 0, True)


def test_performance_rows_replace_only_their_family(store_target: StoreTarget) -> None:
    from storage.labels import write_performance

    store = store_target.open()
    key = WindowKey("m", "v1", "", "2026-11-23T12:00:00.000Z", "2026-11-23T12:01:00.000Z")
    with store.transaction():
        write_performance(store, key, [MetricRow("", "accuracy", 0.5, ci_low=0.4, ci_high=0.6)], computed_at=AT)
        store.execute(
            "INSERT INTO metrics (window_id, model, \"column\", metric, value, family) VALUES (?,?,?,?,?,'data')",
            (key.id, "m", "", "estimated_accuracy", 0.7),
        )
        write_performance(store, key, [MetricRow("", "accuracy", 0.75), MetricRow("", "f1", math.nan)], computed_at=AT)
    rows = store.query('SELECT metric, value, ci_low, family FROM metrics ORDER BY metric')
    assert rows == [
        {"metric": "accuracy", "value": 0.75, "ci_low": None, "family": "performance"},
        {"metric": "estimated_accuracy", "value": 0.7, "ci_low": None, "family": "data"},
        {"metric": "f1", "value": None, "ci_low": None, "family": "performance"},
    ]
    assert store.query("SELECT status, rows FROM windows") == [{"status": "open", "rows": 0}]
    assert data_figures(store, [key.id, "other"], "estimated_") == {(key.id, "estimated_accuracy"): 0.7}
    assert data_figures(store, [key.id], "estimated_f") == {}


def test_migration_13_drops_the_id_index_and_keeps_every_prediction(tmp_path: Path) -> None:
    """A database of version 12 (predictions indexed by id as well as by key) becomes version
    13: the index is gone, the rows stay, and the join's queries find them."""
    from storage.db import Store  # noqa: PLC0415
    from storage.schema import MIGRATIONS  # noqa: PLC0415
    from tests.storage.migration_helpers import migrate_before  # noqa: PLC0415

    path = tmp_path / "older.db"
    older = Store(path, migrate=False)
    migrate_before(older, 13)
    with older.transaction():
        insert_predictions(older, "m", [("a", "v1", 1000, "", 0.5), ("b", "v1", 1001, "", 0.25)])

    def indexes(s: Store) -> list[str]:
        return [r[0] for r in s.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'label_predictions'")]

    assert indexes(older) == ["label_predictions_id"]
    older.close()
    store = Store(path)
    assert store.schema_version() == MIGRATIONS[-1][0] >= 13
    assert indexes(store) == []
    assert list(held_ids(store, "m")) == [(["a", "b"], [1000, 1001])]
    assert held_predictions(store, "m", [("b", 1001)]) == {"b": ("b", 1001, None, None, None)}


def test_coverage_matures_slots_in_time_order(store_target: StoreTarget) -> None:
    """A slot that reached coverage is due only once no earlier slot waits to mature: the
    rules judge windows in time order and never one ending before the last they judged, so
    a later window computed first left the earlier one never judged."""
    store = store_target.open()
    with store.transaction():
        add_to_slots(store, "m", [(0, 60_000, 10, 10, True), (60_000, 120_000, 10, 9, True),
                                  (120_000, 180_000, 10, 10, True)])

    def due(clock_ms: int) -> list[int]:
        return [s.start for s in due_slots(store, "m", clock_ms=clock_ms, delay_ms=600_000, coverage=0.95,
                                           recompute_before="9", limit=5)]

    assert due(200_000) == [0]  # the second waits for its delay, the third for the second
    with store.transaction():
        mark_computed(store, "m", 0, 60_000, AT)
    assert due(200_000) == []
    assert due(720_000) == [60_000, 120_000]  # the second matured by its delay: both, in order
    with store.transaction():
        add_to_slots(store, "m", [(60_000, 120_000, 0, 1, True)])  # the second reaches coverage
    assert due(200_000) == [60_000, 120_000]


def test_coverage_matures_only_a_slot_the_clock_has_passed(store_target: StoreTarget) -> None:
    """A slot still taking predictions is not matured by its coverage: its first labels
    reach any share while it holds a handful of rows, and a rule judged that partial
    window (31 rows fired an accuracy rule). Once the clock passes its end it is."""
    store = store_target.open()
    with store.transaction():
        add_to_slots(store, "m", [(0, 60_000, 31, 31, True)])  # every prediction so far labelled

    def due(clock_ms: int) -> list[int]:
        return [s.start for s in due_slots(store, "m", clock_ms=clock_ms, delay_ms=600_000, coverage=0.95,
                                           recompute_before="9", limit=5)]

    assert due(30_000) == []  # mid-slot: more predictions may come
    assert due(59_999) == []
    assert due(60_000) == [0]  # the clock reached its end: coverage matures it
