"""Service figures of closed windows: events per second and latency percentiles, through the
real Pipeline and store; the latency field is read by both decoding paths."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import orjson

from monitor.config import load_config
from monitor.service.pipeline import Pipeline
from storage.db import Store
from tests.monitor.daemon_helpers import START, write_config
from tests.store_targets import open_state_store

Rec = namedtuple("Rec", "topic partition offset timestamp value")
NOW_MS = int(START.timestamp() * 1000) + 86_400_000


def run(tmp: Path, payloads: list[bytes]) -> Store:
    path = write_config(tmp, bootstrap="127.0.0.1:9", topic="predictions", http_port=1)
    path.write_text(path.read_text().replace('[models.features]', 'fields = { latency = "latency_ms" }\n[models.features]'))
    cfg = load_config(path)
    store = open_state_store(cfg.daemon.state_dir)
    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    p.process_records([Rec("predictions", 0, i, NOW_MS, v) for i, v in enumerate(payloads)])
    for rt in p.models.values():
        p._collect(rt, rt.windows.close_idle(NOW_MS * 10), START)
    p.flush()
    return store


def event(i: int, latency: object, region: str = "eu") -> dict[str, object]:
    return {
        "event_id": f"e{i}", "model": "churn", "version": "v1", "ts": int(START.timestamp() * 1000) + i * 100,
        "features": {"age": 40.0, "tenure_days": 3.0, "monthly_charges": 70.0, "plan": "pro", "region": region},
        "prediction": 0.5, "segment": {"region": region}, "latency_ms": latency,
    }


def test_latency_percentiles_and_event_rate(tmp_path: Path) -> None:
    lat = np.random.default_rng(0).gamma(2.0, 20.0, 300).round(1)
    evs = [event(i, float(v), "eu" if i % 3 else "us") for i, v in enumerate(lat)]
    evs[7]["latency_ms"] = None  # absent: left out
    store = run(tmp_path / "fast", [orjson.dumps(e) for e in evs])
    wid = "churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z"
    got = {r["metric"]: r["value"] for r in store.query("SELECT metric, value FROM metrics WHERE window_id = ?", (wid,))}
    kept = np.delete(lat, 7)
    for q in (50, 95, 99):
        assert got[f"latency_p{q}"] == float(np.percentile(kept, q))
    assert got["events_per_second"] == 300 / 60
    seg = "churn|v1|region=us|2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z"
    us = store.query("SELECT value FROM metrics WHERE window_id = ? AND metric = 'events_per_second'", (seg,))
    assert us[0]["value"] == 100 / 60
    # the per-record path (a batch with one bad latency) gives the same figures for the rest
    bad = [*evs, {**event(999, "slow"), "ts": evs[-1]["ts"]}]
    store2 = run(tmp_path / "slow", [orjson.dumps(e) for e in bad])
    got2 = {r["metric"]: r["value"] for r in store2.query("SELECT metric, value FROM metrics WHERE window_id = ?", (wid,))}
    assert {k: got2[k] for k in got if k.startswith("latency")} == {k: got[k] for k in got if k.startswith("latency")}
    dl = store2.query("SELECT reason FROM dead_letters")
    assert [d["reason"] for d in dl] == ["bad_type: latency_ms expected number, got string"]


def test_the_prediction_has_its_own_quality_figures(tmp_path: Path) -> None:
    # every event carries a prediction: its missing share was stored as 1.0 in every window
    # (only the features were handed to the quality figures), so a `missing_share` rule on
    # column "*" fired for ever
    evs = [event(i, 10.0) for i in range(300)]
    for i in (3, 30, 300 - 1):
        evs[i]["prediction"] = 50.0  # far outside the reference's predictions
    store = run(tmp_path, [orjson.dumps(e) for e in evs])
    wid = "churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z"
    got = {r["metric"]: r["value"] for r in store.query(
        "SELECT metric, value FROM metrics WHERE window_id = ? AND \"column\" = 'prediction'", (wid,))}
    assert got["missing_share"] == 0.0
    assert got["out_of_range_share"] == 3 / 300
    assert "prediction_drift" in got
