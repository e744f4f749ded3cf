"""The join's in-memory id index (monitor/labels/held_ids.py) against a plain multimap:
every held (id, ts) is among an id's candidates, through adds, merges, prunes, rebuilds and
ids sharing a key; pruned entries leave."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from monitor.labels import held_ids
from monitor.labels.held_ids import HeldIds, build

IDS = st.text(alphabet="abcdef", min_size=1, max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(st.tuples(IDS, st.integers(0, 50)), max_size=12)),
        st.tuples(st.just("prune"), st.integers(0, 60)),
        st.tuples(st.just("rebuild"), st.none()),
    ),
    max_size=25,
)


def check(index: HeldIds, held: set[tuple[str, int]], probe: list[str]) -> None:
    got = set(index.candidates(probe))
    want = {(i, t) for i, t in held if i in probe}
    assert want <= got, want - got  # never misses a held id
    assert {i for i, _t in got} <= set(probe)


@pytest.mark.parametrize("few_keys", [False, True], ids=["string-hash", "colliding-keys"])
# the patches are the same for every example
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS, probe=st.lists(IDS, max_size=10))
# an entry added while its hash was taken, then the first pruned: found all the same
@example(ops=[("add", [("a", 0)]), ("add", [("a", 1)]), ("prune", 1)], probe=[])
def test_candidates_hold_every_held_id(monkeypatch: pytest.MonkeyPatch, few_keys: bool,
                                       ops: list[tuple[str, object]], probe: list[str]) -> None:
    if few_keys:  # three keys for all ids: every lookup meets other ids' entries
        monkeypatch.setattr(held_ids, "key_of", lambda s: len(s) % 3)
    monkeypatch.setattr(held_ids, "MIN_RECENT", 4)  # merge often
    index = HeldIds()
    held: set[tuple[str, int]] = set()
    for op, arg in ops:
        if op == "add":
            rows = [r for r in dict(arg).items() if r not in held]  # type: ignore[call-overload]
            index.add([i for i, _t in rows], [t for _i, t in rows])
            held |= set(rows)
        elif op == "prune":
            kept = {(i, t) for i, t in held if t >= arg}  # type: ignore[operator]
            index.prune(arg, len(held) - len(kept))  # type: ignore[arg-type]
            held = kept
            assert all(t >= arg for _i, t in index.candidates(sorted({i for i, _t in held} | set(probe))))  # type: ignore[operator]
        else:
            rows = sorted(held)
            index = build([([i for i, _t in rows[:5]], [t for _i, t in rows[:5]]),
                           ([i for i, _t in rows[5:]], [t for _i, t in rows[5:]])])
        check(index, held, probe + [i for i, _t in held][:5])
    if not few_keys:  # distinct 64-bit keys: nothing but the held entries
        assert set(index.candidates(sorted({i for i, _t in held}))) == held


def test_memory_is_sixteen_bytes_an_id_once_merged() -> None:
    ids = [f"{i:032x}" for i in range(200_000)]
    index = HeldIds()
    index.add(ids, list(range(200_000)))
    assert len(index) == 200_000
    assert index.nbytes == 16 * 200_000  # the last add merged everything
    index.prune(100_000, 100_000)  # a half deleted: compacted
    assert len(index) == 100_000 and index.nbytes == 16 * 100_000
    index.prune(110_000, 10_000)  # a tenth: forgotten, compacted later
    assert index.nbytes == 16 * 100_000
    assert index.candidates(ids[109_999:110_001]) == [(ids[110_000], 110_000)]
    index.prune(150_000, 40_000)
    assert len(index) == 50_000 and index.nbytes == 16 * 50_000
    got = index.candidates(ids[149_990:150_010])
    assert got == [(ids[i], i) for i in range(150_000, 150_010)]


def test_an_empty_index_and_empty_probes() -> None:
    index = build([])
    assert len(index) == 0 and index.candidates(["a"]) == [] and index.candidates([]) == []
    index.prune(10, 0)
    index.add([], [])
    assert np.asarray(index.candidates(["a"])).size == 0
