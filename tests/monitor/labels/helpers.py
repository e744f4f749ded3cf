"""Helpers for label-join tests: configs with performance on, records of both topics, the
expected join computed independently in plain Python."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from monitor.config import Config, load_config
from monitor.demo.data import events, label_events, write_reference_csv
from monitor.service.pipeline import Pipeline
from storage.db import Store
from tests.monitor.daemon_helpers import START, write_config
from tests.store_targets import StoreTarget, open_state_store

Rec = namedtuple("Rec", "topic partition offset timestamp value")
NOW = START + timedelta(days=1)
NOW_MS = int(NOW.timestamp() * 1000)

PERFORMANCE = """
[models.performance]
enabled = true
{perf}
[labels]
ttl = "{ttl}"
early_ttl = "{early_ttl}"
delay = "{delay}"
coverage = {coverage}
recompute_interval = "1s"
bootstrap = {bootstrap}
"""


def label_config(
    folder: Path, *, topic: str = "predictions", labels_topic: str = "labels", bootstrap: str = "127.0.0.1:9",
    ttl: str = "1h", early_ttl: str = "30m", delay: str = "2m", coverage: float = 1.0, n_boot: int = 50,
    perf: str = "", extra: str = "", **kw: Any,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_reference_csv(str(folder / "reference.csv"), n=3000, seed=7, label=True)
    block = PERFORMANCE.format(
        perf=perf, ttl=ttl, early_ttl=early_ttl, delay=delay, coverage=coverage, bootstrap=n_boot
    )
    path = write_config(folder, bootstrap=bootstrap, topic=topic, http_port=kw.pop("http_port", 1), extra=block + extra, **kw)
    text = path.read_text().replace(f'predictions_topic = "{topic}"', f'predictions_topic = "{topic}"\nlabels_topic = "{labels_topic}"')
    path.write_text(text)
    return path


def predictions(windows: int = 6, per_window: int = 200, seed: int = 11, version: str = "v1") -> list[dict[str, Any]]:
    return list(events(model="churn", start=START, windows=windows, per_window=per_window, window_seconds=60,
                       shift_from=windows, seed=seed, version=version))


def labels_for(preds: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    return label_events(preds, **kw)


def records(topic: str, payloads: list[dict[str, Any]], start: int = 0) -> list[Rec]:
    return [Rec(topic, 0, start + i, NOW_MS, orjson.dumps(p)) for i, p in enumerate(payloads)]


class Clock:
    """An injected wall clock that tests move by hand."""

    def __init__(self, at: datetime = NOW) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **kw: float) -> None:
        self.at += timedelta(**kw)


def pipeline(
    cfg_path: Path, clock: Callable[[], datetime] | None = None, on_performance: Any = None,
    target: StoreTarget | None = None,
) -> tuple[Config, Store, Pipeline]:
    """A pipeline on ``target``'s store (default: the config's state dir's)."""
    cfg = load_config(cfg_path)
    store = target.open() if target is not None else open_state_store(cfg.daemon.state_dir)
    p = Pipeline(cfg, store, clock=clock or Clock(), on_performance=on_performance)
    p.restore()
    return cfg, store, p


def expected_join(
    preds: list[dict[str, Any]], labels: list[tuple[dict[str, Any], int, int]], ttl_ms: int
) -> dict[str, Any]:
    """event_id -> the label that wins: the latest ts, ties to the larger (partition, offset);
    labels later than the prediction's ts + ttl are not used. ``labels``: (event, partition, offset)."""
    ts_of = {p["event_id"]: int(p["ts"]) for p in preds}
    best: dict[str, tuple[int, int, int, Any]] = {}
    for ev, part, off in labels:
        eid = ev["event_id"]
        if eid not in ts_of or int(ev["ts"]) - ts_of[eid] > ttl_ms:
            continue
        cand = (int(ev["ts"]), part, off, ev["label"])
        if eid not in best or cand[:3] > best[eid][:3]:
            best[eid] = cand
    return {k: v[3] for k, v in best.items()}


def perf_rows(store: Store, family: str = "performance") -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in store.query(
        'SELECT window_id, "column", metric, value, p_value, threshold, drifted, test, ci_low, ci_high'
        ' FROM metrics WHERE family = ? ORDER BY window_id, "column", metric', (family,))]


def metric(store: Store, window_id: str, name: str) -> float | None:
    rows = store.query("SELECT value FROM metrics WHERE window_id = ? AND metric = ?", (window_id, name))
    return rows[0]["value"] if rows else None
