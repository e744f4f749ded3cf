"""Performance windows of segments through the real Pipeline and store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.monitor.labels import test_shapes
from tests.monitor.labels.helpers import predictions


def test_a_segment_key_holding_an_equals_sign_gets_figures(tmp_path: Path, monkeypatch: Any) -> None:
    """A segment window is ``KEY=VALUE``; its rows were found by splitting that at the first
    ``=``, so a key holding one (``segments = ["re=gion"]``) matched no column: its windows
    had labelled rows but never a figure (drift windows of that key work)."""
    make = test_shapes.label_config

    def config(tmp: Path, **kw: Any) -> Path:
        path = make(tmp, **kw)
        path.write_text(path.read_text().replace('segments = ["region"]', 'segments = ["re=gion"]'))
        return path

    monkeypatch.setattr(test_shapes, "label_config", config)
    preds = predictions(windows=3, per_window=200)
    labels = []
    for ev in preds:
        ev["segment"] = {"re=gion": ev["segment"]["region"]}
        labels.append({"event_id": ev["event_id"], "model": "churn", "label": int(ev["prediction"] >= 0.5),
                       "ts": int(ev["ts"]) + 600_000})
    store = test_shapes.run(tmp_path, "", preds, labels)
    rows = store.query(
        "SELECT w.segment, m.metric, m.value FROM metrics m JOIN windows w ON w.id = m.window_id"
        " WHERE m.family = 'performance' AND w.start = '2026-11-23T12:00:00.000Z'"
        " AND m.metric IN ('accuracy', 'labelled_rows')")
    got = {(r["segment"], r["metric"]): r["value"] for r in rows}
    eu = sum(1 for ev in preds[:200] if ev["segment"]["re=gion"] == "eu")
    assert eu >= 50  # min_rows
    assert got[("re=gion=eu", "labelled_rows")] == eu
    assert got[("re=gion=eu", "accuracy")] == 1.0
    assert got[("", "accuracy")] == 1.0
