"""The performance gauges over real HTTP: a daemon with the label join on, fed predictions and
then labels for the first windows only, so the newest window whose labels matured is older
than the newest judged one. The gauges equal that window's stored figures and intervals; the
estimated ones those of the newest judged window."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import free_port
from monitor.service.daemon import Daemon
from monitor.web.server import ApiServer
from tests.monitor.daemon_helpers import START
from tests.monitor.labels.helpers import (
    NOW_MS,
    Clock,
    Rec,
    label_config,
    labels_for,
    predictions,
    records,
)
from tests.monitor.web.http_helpers import TOKEN, TOKEN_ENV, wait_serving
from tests.monitor.web.test_metrics import (
    PERFORMANCE_PANELS,
    exposition,
    grafana_metrics,
    one,
    samples,
)
from tests.store_targets import StoreTarget

LABELLED_WINDOWS = 3


def feed(d: Daemon, clock: Clock, recs: list[Rec], labels: bool) -> None:
    """Pass ``recs`` through the daemon's pipeline as the consumer loop would, in batches."""
    p = d.pipeline
    if 0 not in p.claims:
        p.adopt([0], generation=None)
    for i in range(0, len(recs), 250):
        chunk = recs[i : i + 250]
        if labels:
            p.process_label_records(chunk)
        else:
            p.process_records(chunk)
        p.flush()
        clock.advance(seconds=2)


def test_performance_gauges_are_the_newest_matured_windows_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_target: StoreTarget
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    port = free_port()
    cfg = label_config(tmp_path, delay="30m", http_port=port, extra=store_target.storage_toml(),
                       daemon_extra=f'api_token_env = "{TOKEN_ENV}"')
    clock = Clock()
    d = Daemon(load_config(cfg), http=False, clock=clock)
    server = ApiServer(d)
    try:
        preds = predictions(windows=6, per_window=200)
        until = int((START + timedelta(minutes=LABELLED_WINDOWS)).timestamp() * 1000)
        labs = labels_for([p for p in preds if int(p["ts"]) < until], delay_ms=30_000)
        feed(d, clock, records("predictions", preds), labels=False)
        feed(d, clock, [Rec("labels", 0, i, NOW_MS, orjson.dumps(ev)) for i, ev in enumerate(labs)], labels=True)
        server.start()
        assert wait_serving(server.port)
        m = samples(exposition(server.port))
        store = d.store
        computed = store.query(
            "SELECT w.id, w.\"end\" FROM windows w JOIN metrics m ON m.window_id = w.id AND m.metric = 'labelled_rows'"
            " WHERE w.model = 'churn' AND w.segment = '' ORDER BY w.\"end\"")
        judged = store.query(
            "SELECT id FROM windows WHERE model = 'churn' AND segment = '' AND status = 'ok' ORDER BY \"end\"")
        assert len(computed) == LABELLED_WINDOWS and len(judged) == 5  # the newest two wait for their labels
        newest = computed[-1]
        key = {"model": "churn", "version": "v1"}
        assert one(m, "driftwarden_performance_window_end_timestamp_seconds", **key) == datetime.fromisoformat(
            newest["end"]).timestamp()
        figures = store.query(
            "SELECT metric, value, ci_low, ci_high FROM metrics WHERE window_id = ? AND family = 'performance'"
            " AND \"column\" = ''", (newest["id"],))
        assert {"accuracy", "f1", "roc_auc", "label_coverage", "labelled_rows"} <= {f["metric"] for f in figures}
        assert len(m["driftwarden_performance"]) == len(figures)
        with_ci = 0
        for f in figures:
            assert one(m, "driftwarden_performance", **key, metric=f["metric"]) == f["value"]
            if f["ci_low"] is not None:
                assert one(m, "driftwarden_performance_ci_low", **key, metric=f["metric"]) == f["ci_low"]
                assert one(m, "driftwarden_performance_ci_high", **key, metric=f["metric"]) == f["ci_high"]
                with_ci += 1
        assert with_ci == len(m["driftwarden_performance_ci_low"]) >= 7  # the binary figures
        assert one(m, "driftwarden_performance", **key, metric="label_coverage") == 1.0
        # an older window's figures differ: these are the newest window's, not any other's
        older = store.query("SELECT value FROM metrics WHERE window_id = ? AND metric = 'accuracy'", (computed[0]["id"],))
        assert older[0]["value"] != one(m, "driftwarden_performance", **key, metric="accuracy")
        # estimated performance: the newest judged window's, named by the figure it estimates
        est = store.query(
            "SELECT metric, value FROM metrics WHERE window_id = ? AND metric LIKE 'estimated_%'", (judged[-1]["id"],))
        assert len(est) == len(m["driftwarden_estimated_performance"]) == 5
        for e in est:
            name = e["metric"].removeprefix("estimated_")
            assert one(m, "driftwarden_estimated_performance", **key, metric=name) == e["value"]
        # the dashboard's performance panels query these, and each has samples here
        assert sorted(n for n in grafana_metrics() if "performance" in n) == PERFORMANCE_PANELS
        assert all(m[n] for n in PERFORMANCE_PANELS)
    finally:
        server.stop()
        d.close()
