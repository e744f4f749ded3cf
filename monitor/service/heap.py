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
"""

from __future__ import annotations

import gc


def settle_heap() -> int:
    """Collect garbage, then freeze the survivors; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def resettle_heap() -> int:
    """In a process that froze its heap (:func:`settle_heap`): thaw it, collect, freeze again
    (after a reload replaced what was frozen); returns how many objects are frozen now.
    A process that never froze (tests, ``replay``) is left as it is: returns 0."""
    if not gc.get_freeze_count():
        return 0
    gc.unfreeze()
    return settle_heap()
