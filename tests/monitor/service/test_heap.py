"""monitor.service.heap: start-up objects leave the collector's full passes."""

from __future__ import annotations

import gc
import os
import platform

import pytest

from monitor.service import heap
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


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


#: the test frees memory through glibc's own malloc: another allocator (preloaded, or glibc
#: tuned to serve small blocks by mmap) gives pages back without malloc_trim, or never
_GLIBC_MALLOC = (
    heap._malloc_trim() is not None
    and platform.libc_ver()[0] == "glibc"
    and "LD_PRELOAD" not in os.environ
    and not any(k.startswith("MALLOC_") or k.startswith("GLIBC_TUNABLES") for k in os.environ)
)


@pytest.mark.skipif(not _GLIBC_MALLOC, reason="not glibc's malloc as configured by default")
def test_settle_heap_gives_the_pages_start_up_freed_back_to_the_system() -> None:
    """What start-up allocated and freed (here ~100 MiB of 4 kB blocks, above pymalloc's
    512-byte limit, so from malloc; one in 50 kept, so the freed pages sit inside the heap
    where free() alone never returns them) leaves the process's RSS."""
    blocks = [bytes(4000) for _ in range(25_000)]
    kept = blocks[::50]
    del blocks
    before = _rss_mib()
    try:
        settle_heap()
    finally:
        gc.unfreeze()
    assert before - _rss_mib() > 50
    assert len(kept) == 500
