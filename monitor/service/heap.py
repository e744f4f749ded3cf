"""Keeping Python's cyclic garbage collector off the daemon's start-up objects.

Once the daemon has started, most objects in the process (the imported libraries:
pandas, scipy, evidently; the prepared references) live as long as it does. CPython's
collector still walks all of them in each full (generation-2) collection: ~50 ms on this
project's build machine, during which the consumer loop and alert delivery stand still.
Measured with ``bench/ingest.py``'s alert latency: one such pause made a webhook arrive
59 ms after its window closed where the others took ~5 ms.

:func:`settle_heap` collects what is garbage now, then moves every survivor to the
permanent generation (:func:`gc.freeze`): later full collections walk only objects made
after start-up. Frozen objects are never collected; what was alive at start-up is meant
to stay, and anything of it that becomes garbage later (a reference replaced by a
reload) is freed by reference counting as usual, unless it sits in a cycle. So a reload
calls :func:`resettle_heap`: one full collection over everything, then a new freeze, and
what the old configuration left in cycles is freed rather than kept for good.

Both then hand the C allocator's free pages back to the system
(:func:`release_free_memory`). Start-up frees far more than it keeps: parsing a
reference makes temporary frames and copies, and glibc keeps the pages they leave free in
the middle of its heap. Measured with ``bench/scale.py``'s scenarios right after
start-up: a 1,000-column model's RSS went from 42.5–53 MB to 17.5–18.6 MB (its reference
arrays are 15.3 MB), a 200-column one's from 9.9 MB to 6.2–6.4 MB.
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable


def settle_heap() -> int:
    """Collect garbage, freeze the survivors, give free pages back (:func:`release_free_memory`);
    returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    release_free_memory()
    return gc.get_freeze_count()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``int malloc_trim(size_t pad)``, or None (musl and macOS have none; on
    Windows ``CDLL(None)`` itself fails)."""
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return the pages the C allocator holds free to the system (glibc's ``malloc_trim(0)``,
    which also releases free pages inside the heap, not only at its end; ~20 ms on a
    fragmented 300 MiB heap, ~1 ms when repeated). True when glibc says it may have
    released memory (it can say so with nothing left to give); False otherwise, and where
    the C library has no such call."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def resettle_heap() -> int:
    """In a process that froze its heap (:func:`settle_heap`): thaw it, collect, freeze again
    (after a reload replaced what was frozen); returns how many objects are frozen now.
    A process that never froze (tests, ``replay``) is left as it is: returns 0."""
    if not gc.get_freeze_count():
        return 0
    gc.unfreeze()
    return settle_heap()
