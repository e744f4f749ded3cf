"""monitor.service.heap: start-up objects leave the collector's full passes."""

from __future__ import annotations

import gc

from monitor.service.heap import settle_heap


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_settle_heap_collects_garbage_then_freezes_the_survivors() -> None:
    kept = [_Cycle() for _ in range(100)]
    _Cycle()  # garbage in a cycle: collected, not frozen
    try:
        frozen = settle_heap()
        assert frozen == gc.get_freeze_count() > len(kept)
        # frozen: out of every generation a collection walks
        assert sum(type(o) is _Cycle for o in gc.get_objects()) == 0
    finally:
        gc.unfreeze()  # the test process goes on
    # the kept ones come back; the one in a garbage cycle was collected before the freeze
    assert sum(type(o) is _Cycle for o in gc.get_objects()) == len(kept) == 100
