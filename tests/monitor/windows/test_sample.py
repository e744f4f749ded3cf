"""A closed window's sample: bounded, a true subset of its rows, the same after a replay."""

from __future__ import annotations

import numpy as np

from monitor.ingest.batch import ColumnBatch
from monitor.windows.model_windows import OpenWindow
from monitor.windows.sample import MAX_TEXT, take_sample
from storage.reference_members import decode_columns
from storage.samples import EVENT_ID


def chunk(start: int, n: int) -> ColumnBatch:
    i = np.arange(start, start + n)
    return ColumnBatch(
        model="churn", ts_ms=i.astype(np.int64), partition=np.zeros(n, dtype=np.int64), offset=i.astype(np.int64),
        event_id=np.array([f"e{k}" for k in i], dtype=object), version=np.array(["v1"] * n, dtype=object),
        segments={}, columns={
            "age": i.astype(np.float64),
            "plan": np.array([None if k % 7 == 0 else f"p{k % 3}" for k in i], dtype=object),
            "prediction": i / 1000.0,
            "ignored": i.astype(np.float64),
        },
    )


def window(sizes: list[int]) -> OpenWindow:
    w = OpenWindow("v1", "", 0, 60_000)
    start = 0
    for n in sizes:
        w.add(chunk(start, n))
        start += n
    return w


COLS = ["age", "plan", "prediction"]


def test_a_small_window_is_kept_whole_with_its_event_ids() -> None:
    s = take_sample("churn|v1||a|b", "churn", "b", window([30, 20]), COLS, max_rows=100)
    assert s is not None and (s.rows, s.sample_rows) == (50, 50)
    cols = decode_columns(s.payload)
    assert sorted(cols) == sorted([*COLS, EVENT_ID])
    assert cols["age"].tolist() == list(range(50))
    assert cols[EVENT_ID].tolist() == [f"e{k}" for k in range(50)]
    assert cols["plan"][0] is None and cols["plan"][1] == "p1"


def test_a_big_window_keeps_at_most_max_rows_chosen_across_chunks_row_for_row() -> None:
    w = window([400, 1, 999, 600])
    s = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=250)
    assert s is not None and (s.rows, s.sample_rows) == (2000, 250)
    cols = decode_columns(s.payload)
    age = cols["age"]
    assert len(age) == 250 and len(set(age.tolist())) == 250 and np.all(np.diff(age) > 0)
    # every sampled row is one real row, all its columns from the same row
    assert cols[EVENT_ID].tolist() == [f"e{int(a)}" for a in age]
    assert np.allclose(cols["prediction"], age / 1000.0)
    # rows from every chunk (a uniform draw over 2000 rows)
    assert (age < 400).any() and (age >= 1400).any()


def test_the_sample_depends_on_the_window_id_only() -> None:
    a = take_sample("churn|v1||a|b", "churn", "b", window([1000, 1000]), COLS, max_rows=100)
    b = take_sample("churn|v1||a|b", "churn", "b", window([1500, 500]), COLS, max_rows=100)
    c = take_sample("churn|v1||a|c", "churn", "c", window([2000]), COLS, max_rows=100)
    assert a is not None and b is not None and c is not None
    assert a.payload == b.payload  # a replay cuts batches differently: same sample
    assert decode_columns(a.payload)["age"].tolist() != decode_columns(c.payload)["age"].tolist()


def test_nothing_is_kept_when_off_or_empty_and_long_values_are_cut() -> None:
    assert take_sample("x|v1||a|b", "x", "b", window([10]), COLS, max_rows=0) is None
    assert take_sample("x|v1||a|b", "x", "b", OpenWindow("v1", "", 0, 1), COLS, max_rows=10) is None
    w = window([3])
    w.chunks[0].columns["plan"][:] = "x" * 5000
    s = take_sample("x|v1||a|b", "x", "b", w, COLS, max_rows=10)
    assert s is not None and decode_columns(s.payload)["plan"].tolist() == ["x" * MAX_TEXT] * 3


def test_a_sample_too_big_to_read_back_is_not_kept(monkeypatch, caplog) -> None:
    """[reports] sample_rows allows samples a reader would refuse (wide schemas): such a
    sample is dropped with a warning, never written and refused later."""
    from storage import payloads

    monkeypatch.setattr(payloads, "MAX_PAYLOAD", 2_000)
    w = window([500])
    with caplog.at_level("WARNING", logger="driftwarden.reports"):
        assert take_sample("churn|v1|*|a|b", "churn", "b", w, COLS, max_rows=400) is None
    assert "no report sample kept" in caplog.text and "over the 2000-byte limit" in caplog.text
    assert take_sample("churn|v1|*|a|b", "churn", "b", w, COLS, max_rows=5) is not None


def test_picking_from_the_joined_columns_gives_the_same_sample() -> None:
    """The figures join a window's numerical columns; the sample picks from them in one
    step instead of chunk by chunk: the same payload."""
    w = window([400, 1, 999, 600])
    joined = {c: np.concatenate([ch.columns[c] for ch in w.chunks]) for c in ("age", "prediction", "plan")}
    a = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=250)
    b = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=250, joined=joined)
    c = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=250, joined={"age": joined["age"]})
    assert a is not None and b is not None and c is not None
    assert a.payload == b.payload == c.payload


def test_categories_known_short_from_the_lookups_are_not_checked_again_and_long_ones_are_cut() -> None:
    """The figures look each chunk's categorical values up against the reference; the
    sample then checks only the values the lookup did not find: the same payload as
    checking every value, long new categories cut all the same."""
    from detectors import ColumnSpec, prepare_reference
    from monitor.windows.pane_columns import categorical_column, short_texts

    ref = prepare_reference({"plan": np.array(["p0", "p1", "p2"], dtype=object)}, [ColumnSpec("plan", "categorical")])
    for long_value in (None, "y" * 5000):
        looked, plain = window([300, 700]), window([300, 700])
        for w in (looked, plain):
            w.chunks[1].columns["plan"][5] = long_value
        categorical_column(looked.chunks, "plan", ref["plan"])
        assert short_texts(looked.chunks, "plan", MAX_TEXT) is (long_value is None)
        assert not short_texts(plain.chunks, "plan", MAX_TEXT)
        a = take_sample("churn|v1||a|b", "churn", "b", looked, COLS, max_rows=1000)
        b = take_sample("churn|v1||a|b", "churn", "b", plain, COLS, max_rows=1000)
        assert a is not None and b is not None and a.payload == b.payload
        assert decode_columns(a.payload)["plan"][305] == (None if long_value is None else "y" * MAX_TEXT)


def test_a_window_whose_chunks_hold_rows_out_of_arrival_order_samples_them_in_arrival_order() -> None:
    """A sliding window gets a batch's rows pane by pane, so its chunks may hold them out of
    the order they came in (each chunk carries its rows' arrival numbers): its sample is
    that of the same rows in arrival order, picked chunk by chunk or from joined columns."""
    from monitor.windows.arrival import ARRIVAL
    from monitor.windows.pane_columns import WindowColumns

    rows = chunk(0, 1000)
    w = OpenWindow("v1", "", 0, 60_000)
    for at in (np.arange(0, 600, 2), np.arange(1, 600, 2), np.arange(600, 1000)):
        part = rows.take(at)
        part.derived[ARRIVAL] = at
        w.add(part)
    assert w.order() is not None
    plain = window([1000])
    for n in (250, 1000):
        cols = WindowColumns(w.chunks, w.order())
        joined = {"age": cols["age"], "plan": cols["plan"]}
        a = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=n)
        b = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=n, joined=joined)
        c = take_sample("churn|v1||a|b", "churn", "b", plain, COLS, max_rows=n)
        assert a is not None and b is not None and c is not None
        assert a.payload == b.payload == c.payload
    assert list(decode_columns(a.payload)[EVENT_ID]) == [f"e{k}" for k in range(1000)]


def test_a_window_kept_whole_is_every_row_in_arrival_order_whatever_its_chunks() -> None:
    """A window of at most ``max_rows`` rows skips the picking: its payload is that of every
    row in arrival order, as picking ``arange(rows)`` gave, for one chunk or several, rows out
    of arrival order, joined columns or not, long values cut."""
    from monitor.windows.arrival import ARRIVAL
    from monitor.windows.pane_columns import WindowColumns
    from storage.samples import encode_sample

    rows = chunk(0, 600)
    rows.columns["plan"][7] = "z" * 5000
    shuffled = OpenWindow("v1", "", 0, 60_000)
    for at in (np.arange(0, 400, 2), np.arange(1, 400, 2), np.arange(400, 600)):
        part = rows.take(at)
        part.derived[ARRIVAL] = at
        shuffled.add(part)
    one = OpenWindow("v1", "", 0, 60_000)
    one.add(rows)
    expected = encode_sample({
        "age": np.arange(600, dtype=np.float64), "plan": [None if v is None else v[:MAX_TEXT] for v in rows.columns["plan"]],
        "prediction": np.arange(600) / 1000.0, EVENT_ID: [f"e{k}" for k in range(600)],
    })
    for w in (one, shuffled, window([100, 1, 499])):
        if w is not shuffled and w is not one:
            w.chunks[0].columns["plan"][7] = "z" * 5000
        cols = WindowColumns(w.chunks, w.order())
        for joined in (None, {"age": cols["age"], "plan": cols["plan"]}):
            for n in (600, 601, 10_000):
                s = take_sample("churn|v1||a|b", "churn", "b", w, COLS, max_rows=n, joined=joined)
                assert s is not None and (s.rows, s.sample_rows) == (600, 600)
                assert s.payload == expected
