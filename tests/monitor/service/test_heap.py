"""monitor.service.heap: start-up objects leave the collector's full passes."""

from __future__ import annotations

import gc

from monitor.service.heap import resettle_heap, settle_heap


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


def test_resettle_heap_frees_frozen_cycles_that_became_garbage() -> None:
    """After a reload, what the old config left in cycles was frozen with the rest: thawing,
    collecting and freezing again frees it. A process that never froze is left alone."""
    assert resettle_heap() == 0 and gc.get_freeze_count() == 0
    old_config = [_Cycle() for _ in range(10)]
    try:
        settle_heap()
        del old_config  # garbage now, but frozen: no collection reaches it
        gc.collect()
        gc.unfreeze()
        assert sum(type(o) is _Cycle for o in gc.get_objects()) == 10
        gc.freeze()
        assert resettle_heap() > 0
    finally:
        gc.unfreeze()
    assert sum(type(o) is _Cycle for o in gc.get_objects()) == 0
