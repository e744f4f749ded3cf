"""WindowAssigner semantics: exact window contents, watermark, lateness, counts, snapshots."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitor.config import WindowConfig
from monitor.ingest.batch import ColumnBatch
from monitor.windows.model_windows import ModelWindows

MIN = 60_000


def batch(ts: list[int], *, part: int = 0, first_offset: int = 0, version: str = "v1",
          regions: list[str | None] | None = None) -> ColumnBatch:
    n = len(ts)
    obj = lambda vals: np.array(vals, dtype=object)  # noqa: E731
    return ColumnBatch(
        model="m",
        ts_ms=np.array(ts, dtype=np.int64),
        partition=np.full(n, part, dtype=np.int32),
        offset=np.arange(first_offset, first_offset + n, dtype=np.int64),
        event_id=obj([f"e{i}" for i in range(n)]),
        version=obj([version] * n),
        segments={"region": obj(regions if regions is not None else [None] * n)},
        columns={"x": np.arange(n, dtype=np.float64)},
    )


def tumbling(**kw: object) -> WindowConfig:
    return WindowConfig(**{"type": "tumbling", "size": "1m", "lateness": "0s", **kw})


def test_tumbling_closes_when_watermark_passes_end() -> None:
    """The watermark passes a window's end once two rows got past it: the first row past
    it alone could be one stamped ahead of its stream (see the vouching tests below)."""
    w = ModelWindows("m", tumbling(), ("region",))
    w.add(batch([0, 10_000, 59_999]))
    assert w.close_due() == []
    w.add(batch([MIN], first_offset=3))
    assert w.close_due() == []
    w.add(batch([MIN + 1], first_offset=4))
    closed = w.close_due()
    assert [(c.start, c.end, c.rows) for c in closed] == [(0, MIN, 3)]
    assert closed[0].columns()["x"].tolist() == [0.0, 1.0, 2.0]


def test_lateness_delays_closing_and_late_rows_are_counted_not_added() -> None:
    w = ModelWindows("m", tumbling(lateness="30s"))
    w.add(batch([0, 70_000]))  # watermark -30s (70s not vouched yet): window [0, 60s) open
    assert w.close_due() == []
    # per row: 95s vouches for 70s (wm 40s), 96s for 95s (wm 65s closes [0,60s))
    late = w.add(batch([20_000, 95_000, 96_000, 30_000], first_offset=2))
    # the 20s row arrived while wm=-30s: added; the 30s row arrived after wm reached 65s: late
    assert [(x.start, x.count) for x in late] == [(0, 1)]
    closed = w.close_due()
    assert [(c.start, c.rows) for c in closed] == [(0, 2)]
    assert w.late_total == 1


def test_results_do_not_depend_on_batch_boundaries() -> None:
    ts = [0, 61_000, 5_000, 130_000, 131_000, 62_000, 200_000, 201_000]
    whole = ModelWindows("m", tumbling(lateness="10s"))
    whole.add(batch(ts))
    split = ModelWindows("m", tumbling(lateness="10s"))
    for i, t in enumerate(ts):
        split.add(batch([t], first_offset=i))
    a = [(c.start, c.rows) for c in whole.close_due()]
    b = [(c.start, c.rows) for c in split.close_due()]
    # the watermark is the second-highest time so far minus 10s: 5s arrives at -10s (on
    # time); 62s arrives at 120s (late); 201s moves it to 190s, closing [120s, 180s)
    assert a == b == [(0, 2), (60_000, 1), (120_000, 2)]
    assert whole.late_total == split.late_total == 1


def test_sliding_window_rows_belong_to_size_over_slide_windows() -> None:
    w = ModelWindows("m", WindowConfig(type="sliding", size="2m", slide="1m", lateness="0s"))
    w.add(batch([30_000, 90_000, 150_000, 400_000, 401_000]))  # 401s vouches for 400s
    got = sorted((c.start, c.end, c.rows) for c in w.close_due())
    assert got == [(-60_000, 60_000, 1), (0, 120_000, 2), (60_000, 180_000, 2), (120_000, 240_000, 1)]


def test_count_windows_tumbling_and_sliding() -> None:
    t = ModelWindows("m", WindowConfig(by="count", size=3))
    t.add(batch(list(range(7))))
    assert [(c.start, c.end, c.rows) for c in t.close_due()] == [(0, 3, 3), (3, 6, 3)]
    s = ModelWindows("m", WindowConfig(by="count", type="sliding", size=4, slide=2))
    s.add(batch(list(range(7))))
    assert [(c.start, c.end, c.rows) for c in s.close_due()] == [(0, 4, 4), (2, 6, 4)]


def test_segments_and_versions_get_their_own_windows() -> None:
    w = ModelWindows("m", tumbling(), ("region",))
    w.add(batch([1, 2, 3], regions=["eu", "us", None]))
    w.add(batch([4], version="v2", first_offset=3, regions=["eu"]))
    w.add(batch([MIN, MIN], version="v2", first_offset=4))
    got = sorted((c.version, c.segment, c.rows) for c in w.close_due())
    assert got == [("v1", "", 3), ("v1", "region=eu", 1), ("v1", "region=us", 1),
                   ("v2", "", 1), ("v2", "region=eu", 1)]


def test_a_bar_in_a_version_or_segment_value_cannot_merge_two_windows() -> None:
    """``a|region=x`` (no segment) and ``a`` with region ``x|`` once made the same window
    id and the same count-window counter: each group now counts its own rows."""
    from monitor.windows.figures import window_key

    w = ModelWindows("m", WindowConfig(by="count", size=3), ("region",))
    w.add(batch([0, 1], version="a|region=x"))
    w.add(batch([2, 3], version="a", first_offset=2, regions=["x|", "x|"]))
    # neither group has 3 rows; merged, "a|region=x||" would have had 4 and closed
    assert [(c.version, c.segment, c.rows) for c in w.close_due()] == []
    w.add(batch([4], version="a", first_offset=4, regions=["x|"]))
    closed = w.close_due()
    assert [(c.version, c.segment, c.rows) for c in closed] == [("a", "", 3), ("a", "region=x|", 3)]
    w.add(batch([5], version="a|region=x", first_offset=5))
    mixed = closed + w.close_due()
    ids = {window_key("m", "count", c).id for c in mixed}
    assert len(ids) == len(mixed) == 3


def test_idle_close_uses_the_wall_clock() -> None:
    w = ModelWindows("m", tumbling(lateness="5m"))
    w.add(batch([1_000, 2_000]))
    assert w.close_idle(now_ms=30_000) == []          # window [0,1m) not over on the wall clock
    assert [c.rows for c in w.close_idle(now_ms=6 * MIN)] == [2]


def test_snapshot_restore_refills_only_open_windows() -> None:
    """Rows re-read below the durable offset refill restored windows, nothing else."""
    cfg = tumbling()
    ts = [0, 10_000, 61_000, 70_000, 125_000, 126_000]
    a = ModelWindows("m", cfg)
    a.add(batch(ts[:4]))
    closed_a = a.close_due()
    assert [(c.start, c.rows) for c in closed_a] == [(0, 2)]
    snap = a.snapshot()
    assert snap["open"][0]["ranges"] == {"0": [2, 3]}
    # restart: restore, re-read from the first offset an open window holds (2)
    b = ModelWindows("m", cfg)
    b.restore(snap)
    b.add(batch(ts[2:], first_offset=2), replay_before={0: 4})  # 126s vouches for 125s
    closed_b = b.close_due()
    assert [(c.start, c.rows) for c in closed_b] == [(60_000, 2)]
    assert b.late_total == 0


def test_count_window_restore_refills_by_offset_range() -> None:
    cfg = WindowConfig(by="count", size=3)
    a = ModelWindows("m", cfg)
    a.add(batch([0] * 4))
    assert [c.rows for c in a.close_due()] == [3]
    snap = a.snapshot()
    b = ModelWindows("m", cfg)
    b.restore(snap)
    b.add(batch([0] * 3, first_offset=3), replay_before={0: 4})  # offset 3 replayed, 4 and 5 new
    assert [(c.start, c.rows) for c in b.close_due()] == [(3, 3)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10 * MIN), min_size=1, max_size=60), st.integers(1, 10))
def test_property_tumbling_counts_every_row_once(ts: list[int], cut: int) -> None:
    """With no lateness limit hit (sorted input), every row lands in exactly one window."""
    ts = sorted(ts)
    w = ModelWindows("m", tumbling())
    for i in range(0, len(ts), cut):
        w.add(batch(ts[i:i + cut], first_offset=i))
    closed = w.close_due() + w.close_idle(now_ms=100 * MIN)
    assert sum(c.rows for c in closed) == len(ts)
    for c in closed:
        assert all(c.start <= t < c.end for t in c.ts_ms().tolist())


@pytest.mark.parametrize("lateness", ["0s", "30s"])
def test_empty_batch_changes_nothing(lateness: str) -> None:
    w = ModelWindows("m", tumbling(lateness=lateness))
    assert w.add(batch([])) == []
    assert w.snapshot()["open"] == []


def test_sliding_windows_share_each_pane_of_rows_instead_of_copying_it() -> None:
    cfg = WindowConfig(type="sliding", size="10m", slide="1m", lateness="0s")
    w = ModelWindows("m", cfg)
    ts = [i * 6_000 for i in range(100)]  # 10 minutes, 10 rows per 1-minute pane
    w.add(batch(ts))
    chunks = [c for win in w.open.values() for c in win.chunks]
    assert sum(len(c) for c in chunks) == 100 * 10  # every row is in 10 windows ...
    assert len({id(c) for c in chunks}) == 10  # ... but each pane is held once
    full = w.open[("v1", "", 0, 10 * MIN)]
    assert full.columns()["x"].tolist() == [float(i) for i in range(100)]


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=8 * MIN), min_size=1, max_size=80),
    st.integers(1, 25),
    st.sampled_from(["0s", "30s"]),
    st.lists(st.integers(0, 2), min_size=80, max_size=80),
)
@example([MIN, 0], 2, "0s", [0] * 80)  # one batch, the later pane first
def test_property_sliding_rows_land_in_every_open_window_that_holds_them(
    ts: list[int], cut: int, lateness: str, parts: list[int]
) -> None:
    """Unsorted rows from several partitions, cut into batches anywhere: each row is in
    exactly the windows [s, s + size) that hold its time and had not closed when it came
    (the watermark before it, from the rows before it), and a window reads its rows in
    the order they came, whatever the cuts (within one batch it takes them pane by pane);
    partition offset ranges cover exactly the rows held. The watermark follows the
    second-highest time seen (one row alone moves no clock)."""
    cfg = WindowConfig(type="sliding", size="3m", slide="1m", lateness=lateness)
    w = ModelWindows("m", cfg)
    lag = 30_000 if lateness == "30s" else 0
    expected: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(ts):
        wm = -(2**62) if i < 2 else sorted(ts[:i])[-2] - lag
        newest = t // MIN * MIN
        for s in range(newest - 2 * MIN, newest + 1, MIN):
            if s + 3 * MIN > wm:
                expected.setdefault((s, s + 3 * MIN), []).append(i)
    offsets = {p: 0 for p in range(3)}
    for lo in range(0, len(ts), cut):
        rows = list(range(lo, min(lo + cut, len(ts))))
        b = batch([ts[i] for i in rows])
        b.partition[:] = [parts[i] for i in rows]
        for k, i in enumerate(rows):
            b.offset[k] = offsets[parts[i]]
            offsets[parts[i]] += 1
        b.columns["x"][:] = rows
        b.event_id[:] = [f"r{i}" for i in rows]
        w.add(b)
    got = {(win.start, win.end): win for win in w.open.values()}
    assert sorted(got) == sorted(expected)
    for key, win in got.items():
        assert win.columns()["x"].tolist() == expected[key]
        assert win.event_ids().tolist() == [f"r{i}" for i in expected[key]]
        assert win.ts_ms().tolist() == [ts[i] for i in expected[key]]
        held = np.concatenate([c.partition for c in win.chunks]), np.concatenate([c.offset for c in win.chunks])
        assert win.ranges == {
            int(p): [int(held[1][held[0] == p].min()), int(held[1][held[0] == p].max())] for p in np.unique(held[0])
        }


def test_one_row_far_ahead_of_its_stream_closes_nothing() -> None:
    """A backlog a day behind the wall clock with one row stamped ahead (its time capped at
    the wall clock, still a day ahead of the stream): the watermark follows the stream, so
    the rows after it are not late and their windows close as the stream passes them."""
    w = ModelWindows("m", tumbling())
    w.add(batch([0, 1_000, 24 * 60 * MIN, 2_000, 59_000, MIN, MIN + 1]))
    assert w.late_total == 0
    assert w.max_ts == MIN + 1 and w.front == 24 * 60 * MIN
    assert [(c.start, c.rows) for c in w.close_due()] == [(0, 4)]


def test_a_snapshot_keeps_the_front_so_a_restart_moves_the_clock_as_before() -> None:
    """The clock's candidate (the highest time seen) is part of the snapshot: restored, the
    next rows move the watermark exactly as without the restart (with only the clock, the
    150 s row would be vouched no further than 100 s and [60 s, 120 s) would stay open)."""
    cfg = tumbling()
    ts = [0, 100_000, 200_000, 150_000]
    whole = ModelWindows("m", cfg)
    whole.add(batch(ts))
    a = ModelWindows("m", cfg)
    a.add(batch(ts[:3]))
    assert [c.start for c in a.close_due()] == [0]
    snap = a.snapshot()
    assert (snap["max_ts"], snap["front"]) == (100_000, 200_000)
    b = ModelWindows("m", cfg)
    b.restore(snap)
    b.add(batch(ts[3:], first_offset=3))
    assert (b.watermark, b.max_ts, b.front) == (whole.watermark, whole.max_ts, whole.front) == (150_000, 150_000, 200_000)
    assert [c.start for c in b.close_due()] == [60_000]
    old = {k: v for k, v in snap.items() if k != "front"}  # a snapshot of an older version
    c = ModelWindows("m", cfg)
    c.restore(old)
    assert c.front == c.max_ts == 100_000


def test_a_stream_of_one_row_closes_by_the_wall_clock() -> None:
    """One row has no vouched time (no event clock), but the idle close still closes its
    window once the wall clock passes it."""
    w = ModelWindows("m", tumbling())
    w.add(batch([1_000]))
    assert w.max_ts is None and w.front == 1_000
    assert w.close_idle(now_ms=30_000) == []
    assert [c.rows for c in w.close_idle(now_ms=MIN)] == [1]


def test_count_windows_keep_the_event_clock_too() -> None:
    """Count windows close by count; their event clock (a replay stamps their windows by
    it) is vouched the same way: one row far ahead does not move it."""
    w = ModelWindows("m", WindowConfig(by="count", size=3))
    w.add(batch([1_000, 10**12, 2_000, 3_000]))
    assert (w.max_ts, w.front) == (3_000, 10**12)
    assert [c.rows for c in w.close_due()] == [3]
