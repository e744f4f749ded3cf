"""A hand-over right after a row stamped ahead of its stream: the front goes with the state.

The windows' event clock is the second-highest capped time seen; the highest (the
``front``) vouches the next row's time (:func:`monitor.ingest.event_time.vouch`). Handed
over without it, the next owner's clock would stay behind by a row: here the row after
the cut steps past the third window's end, vouched by the row stamped ahead before the
cut, so the third window's remaining rows are late in an uninterrupted run; a new owner
without the front would keep the window open and take them in. Runs on SQLite and
PostgreSQL (guard: the front was carried already; a lost one fails it).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.monitor.daemon_helpers import START, stream
from tests.monitor.service.test_handover import (
    Clock,
    config,
    dump,
    feed,
    pipeline,
    records,
    reference,
)
from tests.store_targets import StoreTarget

PER_WINDOW = 150
CUT = 2 * PER_WINDOW + 70  # inside the third window
THIRD_END = int(START.timestamp() * 1000) + 3 * 60_000
THIRD = "churn|v1||2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z"


def _stamped(payloads: list[bytes], i: int, ts: int) -> None:
    ev = orjson.loads(payloads[i])
    ev["ts"] = ts
    payloads[i] = orjson.dumps(ev)


def test_the_next_owner_closes_windows_as_an_uninterrupted_run_after_a_row_stamped_ahead(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    cfg = config(tmp_path, "tumbling")
    payloads = stream(windows=6, per_window=PER_WINDOW, shift_from=3, seed=4)
    _stamped(payloads, CUT - 1, THIRD_END + 30 * 60_000)  # ahead: the front, not the clock
    _stamped(payloads, CUT, THIRD_END + 1_000)  # vouched by the front: the third window closes
    recs = records(payloads)
    want = reference(cfg, store_target.fresh(), [recs])
    late = {w[0]: w[3] for w in want["windows"]}
    assert late[THIRD] > 0  # its rows after the cut came late

    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = pipeline(cfg, store_a, clock, "a")
    a.adopt([0], generation=1)
    feed(a, recs[:CUT])
    front = a.models["churn"].windows.front
    assert front == THIRD_END + 30 * 60_000 and a.models["churn"].windows.max_ts < front
    assert a.release_partitions(set()) == [0]
    b = pipeline(cfg, store_b, clock, "b")
    seek, refused = b.adopt([0], generation=2)
    assert refused == set() and b.models["churn"].windows.front == front
    feed(b, recs[seek[0] :])
    assert dump(store_b) == want
