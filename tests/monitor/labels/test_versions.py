"""Version comparison (A/B, canary) through the real Pipeline, alert engine and store.

A canary whose labels are worse by a known margin crosses ``accuracy_worse_p < 0.01`` in
every window and its alert fires; two equal versions stay below the rule in all but about
1 % of windows (the false-positive rate over many seeds is checked at the statistics level
in tests/detectors/test_window_performance.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from monitor.config import load_config
from monitor.demo.data import label_events
from monitor.service.alerting import Alerting
from monitor.service.pipeline import Pipeline
from storage.db import Store
from tests.monitor.labels.helpers import NOW_MS, Clock, Rec, label_config, predictions
from tests.monitor.labels.test_join import settle
from tests.store_targets import open_state_store

RULE = """
[[rules]]
name = "canary-worse"
metric = "accuracy_worse_p"
op = "<"
threshold = 0.01
version = "canary"
"""


def run(folder: Path, seed: int, drop: float, windows: int = 6, per_window: int = 500) -> Store:
    cfg = load_config(label_config(folder, perf='baseline_version = "stable"', extra=RULE, n_boot=100))
    store = open_state_store(cfg.daemon.state_dir)
    clock = Clock()
    alerting = Alerting(cfg, store, clock=clock)
    p = Pipeline(cfg, store, clock=clock, on_window=alerting.on_window, on_performance=alerting.on_performance)
    stable = predictions(windows, per_window, seed=seed, version="stable")
    canary = predictions(windows, per_window, seed=seed + 1000, version="canary")
    for ev in canary:
        ev["event_id"] = "c-" + str(ev["event_id"])
    preds = sorted(stable + canary, key=lambda e: (int(e["ts"]), str(e["event_id"])))
    labels: list[dict[str, Any]] = label_events(stable, seed=seed) + label_events(
        canary, seed=seed + 1, accuracy_drop_from=0, drop=drop, per_window=per_window
    )
    for ev in labels:
        ev["ts"] = int(ev["ts"]) + 30 * 60_000
    p.process_records([Rec("predictions", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(preds)])
    p.flush()
    p.process_label_records([Rec("labels", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(labels)])
    p.flush()
    settle(p, clock)
    return store


def worse_p(store: Store) -> list[float]:
    return [r["value"] for r in store.query(
        "SELECT value FROM metrics WHERE metric = 'accuracy_worse_p' AND window_id LIKE 'churn|canary||%'"
        " ORDER BY window_id")]


def test_a_worse_canary_alerts(tmp_path: Path) -> None:
    store = run(tmp_path, seed=1, drop=0.3)
    ps = worse_p(store)
    assert len(ps) == 6 and max(ps) < 0.01, ps
    deltas = [r["value"] for r in store.query(
        "SELECT value FROM metrics WHERE metric = 'accuracy_delta' AND window_id LIKE 'churn|canary||%'")]
    assert all(-0.3 < d < -0.1 for d in deltas), deltas  # flipping 30 % of ~83 %-right labels: about -0.2
    alerts = store.query("SELECT rule, state, version, value FROM alerts")
    assert [(a["rule"], a["state"], a["version"]) for a in alerts] == [("canary-worse", "firing", "canary")]
    # the baseline's own windows carry no comparison
    assert not store.query("SELECT 1 FROM metrics WHERE metric LIKE '%_worse_p' AND window_id LIKE 'churn|stable|%'")
    # per segment too
    assert store.query("SELECT COUNT(*) AS n FROM metrics WHERE metric = 'accuracy_worse_p'"
                       " AND window_id LIKE 'churn|canary|region=%'")[0]["n"] > 0


def test_equal_versions_rarely_cross_the_rule(tmp_path: Path) -> None:
    ps: list[float] = []
    for seed in range(8):
        ps += worse_p(run(tmp_path / str(seed), seed=seed + 10, drop=0.0))
    assert len(ps) == 48
    crossed = sum(p < 0.01 for p in ps)
    # expected 0.48 at alpha = 0.01; P(X >= 4) < 0.2 %
    assert crossed <= 3, sorted(ps)[:5]
    assert 0.3 < sum(ps) / len(ps) < 0.7  # p-values of equal versions centre on 0.5
