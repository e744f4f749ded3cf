"""The label join's front goes with a hand-over (see tests/monitor/service/test_handover_front.py).

The join's clock is the second-highest capped event time of either stream; the highest
(``front``) is kept in the partition's row where it differs from the clock. A prediction
and a label stamped ahead just before the cut: the next owner resumes the same front
and stores what one uninterrupted run stores. Guard (the front was carried already).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from monitor.config import load_config
from tests.monitor.labels.helpers import Clock, Rec, label_config
from tests.monitor.labels.test_handover import CHUNK, dump, instance, run, solo, streams
from tests.monitor.labels.test_join import settle
from tests.store_targets import StoreTarget

CUT = 3 * CHUNK


def _ahead(recs: list[Rec], i: int, ms: int) -> None:
    ev = orjson.loads(recs[i].value)
    ev["ts"] = int(ev["ts"]) + ms
    recs[i] = recs[i]._replace(value=orjson.dumps(ev))


def test_the_next_owner_resumes_the_joins_front(tmp_path: Path, store_target: StoreTarget) -> None:
    cfg = load_config(label_config(tmp_path, ttl="2h", delay="2m"))
    preds, labels = streams()
    _ahead(preds, CUT - 1, 50 * 60_000)
    _ahead(labels, CUT - 1, 50 * 60_000)
    want = solo(cfg, store_target.fresh(), preds, labels)

    store_a, store_b = store_target.open(), store_target.open()
    clock = Clock()
    a = instance(cfg, store_a, clock, "a")
    a.adopt([0], generation=1)
    run(a, clock, preds[:CUT], labels[:CUT])
    assert a.labels is not None
    front, stored_clock = dict(a.labels.front_ms), dict(a.labels.clock_ms)
    assert front["churn"] > stored_clock["churn"]
    assert a.release_partitions(set()) == [0]
    b = instance(cfg, store_b, clock, "b")
    seek, refused = b.adopt([0], generation=2)
    assert b.labels is not None and refused == set()
    assert (b.labels.front_ms, b.labels.clock_ms) == (front, stored_clock)
    b_preds, b_labels = preds[seek[0] :], labels[b.labels.positions[0] :]
    b.process_records(b_preds[: CUT - seek[0]])
    run(b, clock, b_preds[CUT - seek[0] :], b_labels)
    settle(b, clock)
    assert dump(store_b) == want
