"""A slot of performance windows whose judgement raises forgets what its rules saw.

The label join computes all of one time slot's performance windows (every version, every
segment) in one savepoint of the flush, and logs and skips a slot whose figures or rules
raise. The savepoint rolls back the earlier windows' alert writes; what a rule without
``version`` saw of the slot (a clear held for the other version) must go with them, or
:meth:`alerts.engine.AlertEngine.finish_slots` counts it for windows never stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from monitor.config import load_config
from monitor.demo.data import label_events
from monitor.service.alerting import Alerting
from monitor.service.pipeline import Pipeline
from storage.records import WindowKey
from tests.monitor.labels.helpers import NOW_MS, Clock, Rec, label_config, predictions
from tests.monitor.labels.test_join import settle
from tests.store_targets import open_state_store

# every version of the slot: the slot breaches when any of them has fewer than 150 labels
RULE = """
[[rules]]
name = "few-labels"
metric = "labelled_rows"
op = "<"
threshold = 150.0
resolve_after = 2
"""
PER_WINDOW = 200
BREACHING = 2  # the first slots have 100 labels a version, the later ones all 200
WINDOWS = 4
LAST = "2026-11-23T12:03:00.000Z"  # the last slot


def _labels(preds: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Labels for ``preds``: half of each of the first BREACHING windows' predictions."""
    out = label_events(preds, seed=seed)
    by_id = {str(p["event_id"]): i for i, p in enumerate(preds)}
    return [ev for ev in out
            if by_id[str(ev["event_id"])] >= BREACHING * PER_WINDOW or by_id[str(ev["event_id"])] % 2 == 0]


def test_a_slot_whose_later_window_raises_forgets_the_held_clear(tmp_path: Path) -> None:
    """Both versions breach in the first slots (the alert fires), both are clear in the
    third (one clear counted). In the last slot the canary's window (judged first) is clear,
    held for the stable version, whose window then raises: the slot is skipped, its writes
    rolled back. The held clear must go with them: counted by ``finish_slots``, the alert
    resolved on a window never stored."""
    cfg = load_config(label_config(tmp_path, perf='baseline_version = "stable"', extra=RULE, n_boot=20))
    store = open_state_store(cfg.daemon.state_dir)
    clock = Clock()
    alerting = Alerting(cfg, store, clock=clock)
    failed: list[str] = []

    def on_performance(key: WindowKey, metrics: list, model: Any, reference: Any) -> None:
        """The alerting's listener, failing on the stable version's window of the last slot."""
        if key.version == "stable" and key.start == LAST:
            failed.append(key.segment)
            raise RuntimeError("the stable window's judgement failed")
        alerting.on_performance(key, metrics, model, reference)

    p = Pipeline(cfg, store, clock=clock, on_window=alerting.on_window, on_performance=on_performance,
                 after_windows=alerting.finish_slots, on_outcome=alerting.flush_outcome,
                 performance_savepoint=alerting.engine.memory_savepoint)
    stable = predictions(WINDOWS, PER_WINDOW, seed=3, version="stable")
    canary = predictions(WINDOWS, PER_WINDOW, seed=4, version="canary")
    for ev in canary:
        ev["event_id"] = "c-" + str(ev["event_id"])
    preds = sorted(stable + canary, key=lambda e: (int(e["ts"]), str(e["event_id"])))
    labels = _labels(stable, 5) + _labels(canary, 6)
    for ev in labels:
        ev["ts"] = int(ev["ts"]) + 30 * 60_000
    p.process_records([Rec("predictions", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(preds)])
    p.flush()
    p.process_label_records([Rec("labels", 0, i, NOW_MS, orjson.dumps(e)) for i, e in enumerate(labels)])
    p.flush()
    settle(p, clock)
    assert failed and set(failed) == {""}  # the slot is judged again when recomputed
    # the last slot's windows were never stored (the slot rolled back as a whole)
    stored = store.query("SELECT window_id FROM metrics WHERE metric = 'labelled_rows' AND window_id LIKE 'churn|%||%'"
                         " ORDER BY window_id")
    assert [r["window_id"].split("|")[1] + " " + r["window_id"].split("|")[3][11:16] for r in stored] == [
        "canary 12:00", "canary 12:01", "canary 12:02", "stable 12:00", "stable 12:01", "stable 12:02"]
    alerts = store.query("SELECT rule, state, clears FROM alerts")
    assert [(a["rule"], a["state"], a["clears"]) for a in alerts] == [("few-labels", "firing", 1)]
