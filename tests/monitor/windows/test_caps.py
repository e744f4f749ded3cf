"""Caps on versions and segment values: bounded windows, __other__ bucket, slots freed by idleness."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import LimitsConfig, WindowConfig
from monitor.ingest.batch import ColumnBatch
from monitor.windows.caps import OTHER, ValueCap
from monitor.windows.model_windows import ModelWindows

MIN = 60_000


def rows(ts: list[int], versions: list[str], regions: list[str | None] | None = None, first: int = 0) -> ColumnBatch:
    n = len(ts)
    obj = lambda vals: np.array(vals, dtype=object)  # noqa: E731
    return ColumnBatch(
        model="m",
        ts_ms=np.array(ts, dtype=np.int64),
        partition=np.zeros(n, dtype=np.int32),
        offset=np.arange(first, first + n, dtype=np.int64),
        event_id=obj([f"e{i}" for i in range(n)]),
        version=obj(versions),
        segments={"region": obj(regions if regions is not None else [None] * n)},
        columns={"x": np.arange(n, dtype=np.float64)},
    )


def tumbling() -> WindowConfig:
    return WindowConfig(type="tumbling", size="1m", lateness="0s")


def test_versions_beyond_the_cap_share_the_other_bucket() -> None:
    w = ModelWindows("m", tumbling(), ("region",), LimitsConfig(max_versions=3, max_segment_values=2))
    n = 4000
    w.add(rows([1000] * n, [f"v{i}" for i in range(n)], [f"r{i % 50}" for i in range(n)]))
    versions = {k[0] for k in w.open}
    assert versions == {"v0", "v1", "v2", OTHER}
    segs = {k[1] for k in w.open}
    assert segs == {"", "region=r0", "region=r1", f"region={OTHER}"}
    assert len(w.open) <= 4 * 4
    assert w.capped_rows() == {"version": n - 3, "segment:region": n - 2 * 80}
    assert sum(o.rows for k, o in w.open.items() if k[1] == "") == n


def test_too_long_values_go_to_other_and_admitted_values_keep_their_windows() -> None:
    w = ModelWindows("m", tumbling(), ("region",), LimitsConfig(max_value_length=5))
    w.add(rows([1, 2, 3], ["v1", "x" * 6, "v1"], ["eu", "[/]" * 3, "eu"]))
    assert sorted(k[:2] for k in w.open) == sorted([("v1", ""), ("v1", "region=eu"), (OTHER, ""),
                                                    (OTHER, f"region={OTHER}")])


def test_an_idle_version_frees_its_slot_for_a_new_one() -> None:
    w = ModelWindows("m", tumbling(), (), LimitsConfig(max_versions=2))
    w.add(rows([0, 1], ["v1", "v2"]))
    w.add(rows([30_000], ["v3"], first=2))            # both slots busy: v3 -> __other__
    assert {k[0] for k in w.open} == {"v1", "v2", OTHER}
    # two rows: the watermark passes v1's newest row + size (one row alone moves no clock)
    w.add(rows([2 * MIN + 5, 2 * MIN + 5], ["v2", "v2"], first=3))
    w.add(rows([2 * MIN + 6], ["v4"], first=5))         # v1 retired, v4 admitted
    assert set(w.version_cap.last_seen) == {"v2", "v4"}
    assert w.capped_rows()["version"] == 1


def test_count_windows_of_an_evicted_version_are_closed_early() -> None:
    cfg = WindowConfig(type="tumbling", by="count", size=3, min_rows=1)
    w = ModelWindows("m", cfg, (), LimitsConfig(max_versions=1))
    w.add(rows([0], ["v1"]))
    # v2's first three rows find v1's slot busy (idle for 1..3 rows); the fourth, at
    # ordinal 5, finds v1 idle for more than 3 rows: v1 is evicted, its window closed early
    w.add(rows([0, 0, 0, 0], ["v2"] * 4, first=1))
    closed = w.close_due()
    assert [(c.version, c.rows) for c in closed] == [(OTHER, 3), ("v1", 1)]
    assert w.capped_rows()["version"] == 3
    assert set(w.version_cap.last_seen) == {"v2"}


def test_caps_survive_a_snapshot() -> None:
    limits = LimitsConfig(max_versions=2)
    a = ModelWindows("m", tumbling(), (), limits)
    a.add(rows([0, 1, 2], ["v1", "v2", "v3"]))
    b = ModelWindows("m", tumbling(), (), limits)
    b.restore(a.snapshot())
    b.add(rows([3, 4], ["v3", "v1"], first=3))
    assert {k[0] for k, o in b.open.items() if o.rows} == {"v1", OTHER}  # restored v2 awaits its replay
    assert b.capped_rows()["version"] == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 10 * MIN), st.sampled_from([f"v{i}" for i in range(8)])), min_size=1, max_size=60),
    st.integers(1, 59),
)
def test_capping_does_not_depend_on_batch_boundaries(events: list[tuple[int, str]], cut: int) -> None:
    ts = sorted(t for t, _ in events)
    vs = [v for _, v in events]
    limits = LimitsConfig(max_versions=3)
    one = ModelWindows("m", tumbling(), (), limits)
    one.add(rows(ts, vs))
    two = ModelWindows("m", tumbling(), (), limits)
    k = min(cut, len(ts))
    two.add(rows(ts[:k], vs[:k]))
    two.add(rows(ts[k:], vs[k:], first=k))
    assert one.version_cap.last_seen == two.version_cap.last_seen
    assert one.capped_rows() == two.capped_rows()
    assert {k: o.rows for k, o in one.open.items()} == {k: o.rows for k, o in two.open.items()}


def test_value_cap_unit_replay_rows_only_look_up() -> None:
    cap = ValueCap(limit=1, max_length=10, retire_after=10)
    vals = np.array(["a", "b"], dtype=object)
    clock = np.array([0, 100], dtype=np.int64)
    out, gone = cap.apply(vals, clock, clock, np.array([True, False]))
    assert out.tolist() == [OTHER, "b"] and gone == [] and cap.capped_rows == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([None, "a", "b", "c", "d", "e"]), st.integers(0, 50), st.booleans()),
           min_size=1, max_size=40),
    st.lists(st.sampled_from(["a", "b", "c", "d", "e"]), max_size=4),
    st.integers(1, 4),
    st.booleans(),
)
def test_a_batch_is_capped_as_its_rows_one_by_one(
    rows_: list[tuple[str | None, int, bool]], admitted: list[str], limit: int, only_admitted: bool
) -> None:
    """Whichever path a batch takes (every value admitted already, or a row at a time), the
    values, evictions and what the cap remembers equal those of its rows applied singly."""
    def cap() -> ValueCap:
        c = ValueCap(limit=limit, max_length=10, retire_after=20)
        for i, v in enumerate(admitted[:limit]):
            c.last_seen[v] = i
        return c

    if only_admitted and admitted[:limit]:  # the path for batches of admitted values only
        known = admitted[:limit]
        rows_ = [(None if v is None else known[ord(v) % len(known)], t, r) for v, t, r in rows_]
    whole, single = cap(), cap()
    vals = np.array([v for v, _t, _r in rows_], dtype=object)
    seen = np.array([t for _v, t, _r in rows_], dtype=np.int64)
    replay = np.array([r for _v, _t, r in rows_])
    out, gone = whole.apply(vals, seen, seen, replay)
    outs, gones = [], []
    for i in range(len(rows_)):
        o, g = single.apply(vals[i:i + 1], seen[i:i + 1], seen[i:i + 1], replay[i:i + 1])
        outs.extend(o.tolist())
        gones.extend(g)
    assert out.tolist() == outs and gone == gones
    assert whole.last_seen == single.last_seen and whole.capped_rows == single.capped_rows
