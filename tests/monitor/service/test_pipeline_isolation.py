"""No record and no window can stop the pipeline: the real Pipeline over a real store.

A record whose processing raises is isolated by bisecting its batch, dead-lettered
as ``internal: ...``, and every other record gives exactly the figures of a run
without it. A window whose figures raise is stored with status ``error``. The
faults are injected through public extension points (a registered drift test, a
window assigner subclass), never by replacing the code under test.
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path
from typing import Any

import orjson

from monitor.config import load_config
from monitor.service.pipeline import Pipeline
from monitor.windows.model_windows import ModelWindows
from storage.db import Store
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.store_targets import StoreTarget

Rec = namedtuple("Rec", "topic partition offset timestamp value")
NOW_MS = int(START.timestamp() * 1000) + 86_400_000


def records(payloads: list[bytes]) -> list[Rec]:
    return [Rec("predictions", 0, i, NOW_MS, p) for i, p in enumerate(payloads)]


def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    w = [tuple(r.values()) for r in store.query(
        'SELECT id, rows, status, error FROM windows ORDER BY id')]
    m = [tuple(r.values()) for r in store.query(
        'SELECT window_id, "column", metric, value, threshold, drifted FROM metrics ORDER BY window_id, "column", metric')]
    return {"windows": w, "metrics": m}


def run(tmp: Path, target: StoreTarget, payloads: list[bytes], *, batch: int = 500, extra: str = "") -> Store:
    cfg = load_config(write_config(tmp, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, extra=extra))
    store = target.open()
    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    recs = records(payloads)
    for i in range(0, len(recs), batch):
        p.process_records(recs[i:i + batch])
        p.flush()
    for rt in p.models.values():
        p._collect(rt, rt.windows.close_idle(NOW_MS * 10), START)
    p.flush()
    return store


class PoisonedWindows(ModelWindows):
    """Fault injection: raises while assigning any batch that holds event id ``poison-*``."""

    def add(self, batch: Any, replay_before: Any = None) -> Any:
        out = super().add(batch, replay_before)  # mutate first, so the rollback is exercised
        if any(str(e).startswith("poison") for e in batch.event_id.tolist()):
            raise RuntimeError("injected fault")
        return out


def test_a_record_that_makes_processing_raise_is_isolated(tmp_path: Path, store_target: StoreTarget) -> None:
    good = stream(6, 120, shift_from=3)
    clean = dump(run(tmp_path / "clean", store_target.fresh(), good))

    poisoned = list(good)
    for at in (5, 250, 251, 700):
        ev = orjson.loads(good[at])
        ev["event_id"] = f"poison-{at}"
        poisoned.insert(at, orjson.dumps(ev))
    cfg = load_config(write_config(tmp_path / "p", bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    store = store_target.open()
    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    rt = p.models["churn"]
    rt.windows = PoisonedWindows("churn", rt.config.window, rt.schema.segments, rt.config.limits)
    recs = records(poisoned)
    for i in range(0, len(recs), 300):
        p.process_records(recs[i:i + 300])
        p.flush()
    p._collect(rt, rt.windows.close_idle(NOW_MS * 10), START)
    p.flush()

    dead = store.query('SELECT "offset", reason FROM dead_letters ORDER BY "offset"')
    poison_offsets = [i for i, r in enumerate(recs) if b"poison-" in r.value]
    assert [d["offset"] for d in dead] == poison_offsets
    assert all(d["reason"] == "internal: RuntimeError: injected fault" for d in dead)
    assert dump(store) == clean
    assert p.positions[0] == len(recs)


def test_a_window_whose_figures_raise_is_stored_as_error(
    tmp_path: Path, store_target: StoreTarget, exploding_test: str
) -> None:
    payloads = stream(4, 120, shift_from=99)
    ev = orjson.loads(payloads[130])  # in the second window
    ev["features"]["age"] = 999.0
    payloads[130] = orjson.dumps(ev)
    extra = ""
    cfg_path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, extra=extra)
    cfg_path.write_text(cfg_path.read_text().replace(
        'idle_timeout = "2s"', f'idle_timeout = "2s"\n[models.drift.columns.age]\nmethod = "{exploding_test}"'))
    cfg = load_config(cfg_path)
    store = store_target.open()
    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    p.process_records(records(payloads))
    p.flush()
    rows = store.query("SELECT start, segment, status, error, rows FROM windows WHERE segment = '' ORDER BY start")
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error"] == "internal: FloatingPointError: cannot score this window"
    assert rows[1]["rows"] == 120
    metrics = store.query("SELECT metric FROM metrics WHERE window_id = (SELECT id FROM windows WHERE status = 'error'"
                          " AND segment = '' LIMIT 1)")
    assert [m["metric"] for m in metrics] == ["row_count"]
    assert p.stats.window_errors >= 1


def test_a_nul_character_in_a_record_stops_nothing(tmp_path: Path, store_target: StoreTarget) -> None:
    """U+0000 (JSON ``\\u0000``) in a model name, a version, a segment value, an event id and
    a category: PostgreSQL text cannot hold it, and one such record used to fail every
    flush for good there. The unknown model is a dead letter whose reason shows the NUL as
    ``\\x00``; in the other fields it is stored as U+FFFD; both stores alike, and the good
    records before and after give exactly the figures of a run without them."""
    good = stream(6, 120, shift_from=3)
    clean = dump(run(tmp_path / "clean", store_target.fresh(), good))

    dirty, nul_models = list(good), []
    for i, at in enumerate(range(700, 100, -10)):  # 60 rows: windows of their own version
        ev = orjson.loads(good[at])
        ev.update(version="nul\u0000v", event_id=f"nul\u0000{i}")
        ev["segment"]["region"] = "e\u0000u"
        ev["features"]["plan"] = "pro\u0000"
        dirty.insert(at, orjson.dumps(ev))
    for at in (650, 5):
        dirty.insert(at, b'{"model": "churn\\u0000", "event_id": "x", "ts": 1}')
    nul_models = [i for i, p in enumerate(dirty) if p.startswith(b'{"model": "churn\\u0000"')]
    store = run(tmp_path / "dirty", store_target, dirty)

    dead = store.query('SELECT "offset", reason FROM dead_letters ORDER BY "offset"')
    assert [(d["offset"], d["reason"]) for d in dead] == [(i, "unknown_model: churn\\x00") for i in nul_models]
    got = dump(store)
    v1 = {"windows": [w for w in got["windows"] if w[0].split("|")[1] == "v1"],
          "metrics": [m for m in got["metrics"] if m[0].split("|")[1] == "v1"]}
    assert v1 == clean
    nul = store.query("SELECT segment, SUM(rows) AS n FROM windows WHERE version = ? GROUP BY segment ORDER BY segment",
                      ("nul\ufffdv",))
    assert [(r["segment"], r["n"]) for r in nul] == [("", 60), ("region=e\ufffdu", 60)]
