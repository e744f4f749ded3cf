"""Labels through the real broker and the real daemon: one group, two topics.

Labels arrive delayed, shuffled, duplicated, missing, for unknown ids and malformed; the
stored performance figures equal scikit-learn's on the joined rows, a rule on a performance
figure fires, and the labels topic's committed offset is what the join made durable.
"""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from monitor.demo.broker import EmbeddedBroker, free_port
from storage.labels import label_counters
from tests.monitor.daemon_helpers import produce, wait_for
from tests.monitor.fault_helpers import committed, http_port, start_daemon, terminate, wait_ready
from tests.monitor.labels.broker_helpers import (
    assert_figures_equal_expected,
    data_dump,
    label_offset,
    labels_done,
    perf_dump,
    performance_windows,
)
from tests.monitor.labels.helpers import expected_join, label_config
from tests.monitor.labels.test_join import scenario
from tests.store_targets import open_state_store

pytestmark = [pytest.mark.broker]

RULE = """
[[rules]]
name = "accuracy-low"
metric = "accuracy"
op = "<"
threshold = 0.99
[[rules]]
name = "coverage-low"
metric = "label_coverage"
op = "<"
threshold = 0.5
"""


def test_labels_through_the_broker(broker: EmbeddedBroker, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    preds_topic, labels_topic = f"preds-{tag}", f"labels-{tag}"
    broker.create_topic(preds_topic)
    broker.create_topic(labels_topic)
    preds, labs = scenario(seed=8)
    ghosts = [{"event_id": f"ghost-{i}", "model": "churn", "label": 0, "ts": int(preds[0]["ts"])} for i in range(5)]
    bad = [b"{not json", orjson.dumps({"event_id": "x", "model": "churn", "label": {"a": 1}})]
    label_payloads = [orjson.dumps(ev) for ev, _p, _o in labs] + [orjson.dumps(g) for g in ghosts] + bad
    cfg = label_config(
        tmp_path, bootstrap=broker.bootstrap, topic=preds_topic, labels_topic=labels_topic,
        http_port=free_port(), extra=RULE, group=f"g-{tag}",
    )
    produce(broker.bootstrap, preds_topic, [orjson.dumps(p) for p in preds])
    produce(broker.bootstrap, labels_topic, label_payloads)
    db = tmp_path / "state" / "driftwarden.db"
    proc = start_daemon(cfg, log=tmp_path / "daemon.log")
    try:
        assert wait_ready(cfg), "daemon not ready"
        assert wait_for(lambda: labels_done(db, len(label_payloads)), timeout=60), label_offset(db)
        # the labels topic's committed offset follows what is durable
        assert wait_for(lambda: committed(broker, f"g-{tag}") >= len(preds) + len(label_payloads) - 1, timeout=20)
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port(cfg)}/metrics", timeout=5) as r:
            exposition = r.read().decode()
        # a late label: its performance windows change, nothing else does
        before_perf, before_data = perf_dump(db), data_dump(db)
        joined = expected_join(preds, labs, ttl_ms=3_600_000)
        target = next(q for q in preds[400:600] if q["event_id"] not in joined)
        late = {"event_id": target["event_id"], "model": "churn", "label": 1, "ts": int(target["ts"]) + 50 * 60_000}
        produce(broker.bootstrap, labels_topic, [orjson.dumps(late)])
        assert wait_for(lambda: labels_done(db, len(label_payloads) + 1) and perf_dump(db) != before_perf, timeout=30)
        after_perf = perf_dump(db)
        assert data_dump(db) == before_data
    finally:
        assert terminate(proc) == 0
    changed = {r[0] for r in set(after_perf) ^ set(before_perf)}
    region = f"region={target['segment']['region']}"
    assert changed == {
        "churn|v1||2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z",
        f"churn|v1|{region}|2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z",
    }
    store = open_state_store(db)
    labs = [*labs, (late, 0, len(label_payloads))]
    joined = expected_join(preds, labs, ttl_ms=3_600_000)
    ids = performance_windows(store)
    assert len(ids) >= 12
    assert_figures_equal_expected(store, ids, preds, joined)
    c = label_counters(store)["churn"]
    assert c["joined"] == len(joined) and c["duplicate_labels"] == len(labs) - len(joined)
    assert c["labels"] == len(labs) + len(ghosts)
    assert c["early"] == 5  # the ghosts wait (early_ttl) for predictions that never come
    reasons = sorted(r["reason"].split(":", 1)[0] for r in store.query(
        "SELECT reason FROM dead_letters WHERE topic = ?", (labels_topic,)))
    assert reasons == ["bad_type", "not_json"]
    # the durable counters are exported per model
    # (scraped before the late label)
    assert f'driftwarden_label_join_total{{event="joined",model="churn"}} {float(c["joined"] - 1)}' in exposition
    assert 'driftwarden_label_join_total{event="early",model="churn"} 5.0' in exposition
    assert "driftwarden_label_windows_waiting 0.0" in exposition
    # both topics' partition 0 consumed to the end (the late label comes after the scrape)
    assert f'driftwarden_consumer_lag_messages{{partition="0",topic="{labels_topic}"}} 0.0' in exposition
    assert f'driftwarden_consumer_lag_messages{{partition="0",topic="{preds_topic}"}} 0.0' in exposition
    # every prediction is held (ttl 1h): the in-memory index has each id once
    assert f'driftwarden_label_held_ids{{model="churn"}} {float(len(preds))}' in exposition
    assert f'driftwarden_label_held_ids_bytes{{model="churn"}} {float(16 * len(preds))}' in exposition
    alerts = {(a["rule"], a["state"]) for a in store.query("SELECT rule, state FROM alerts")}
    assert ("accuracy-low", "firing") in alerts
    assert not any(r == "coverage-low" and s == "firing" for r, s in alerts)


def test_early_labels_wait_and_too_late_ones_are_counted_through_the_broker(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Every label is consumed before its prediction exists: each waits (``early``) and joins
    when the prediction comes. Labels later than ``ttl`` after their prediction are counted,
    never joined, and change no figure."""
    from tests.monitor.labels.helpers import labels_for, predictions

    tag = uuid.uuid4().hex[:8]
    preds_topic, labels_topic = f"preds-{tag}", f"labels-{tag}"
    broker.create_topic(preds_topic)
    broker.create_topic(labels_topic)
    preds = predictions(windows=3, per_window=100, seed=21)
    labels = labels_for(preds, delay_ms=30_000)
    # three second opinions two hours after their predictions: past the 1h ttl
    too_late = [{**lab, "label": 1 - int(lab["label"]), "ts": int(lab["ts"]) + 7_200_000} for lab in labels[:3]]
    cfg = label_config(tmp_path, bootstrap=broker.bootstrap, topic=preds_topic, labels_topic=labels_topic,
                       http_port=free_port(), group=f"g-{tag}")
    db = tmp_path / "state" / "driftwarden.db"
    produce(broker.bootstrap, labels_topic, [orjson.dumps(lab) for lab in labels])
    proc = start_daemon(cfg, log=tmp_path / "daemon.log")
    try:
        assert wait_ready(cfg), "daemon not ready"
        assert wait_for(lambda: label_offset(db) >= len(labels), timeout=60), label_offset(db)
        store = open_state_store(db)
        assert label_counters(store)["churn"]["early"] == len(labels)  # all wait for their predictions
        assert store.query("SELECT COUNT(*) AS n FROM label_early")[0]["n"] == len(labels)
        produce(broker.bootstrap, preds_topic, [orjson.dumps(p) for p in preds])
        produce(broker.bootstrap, labels_topic, [orjson.dumps(lab) for lab in too_late])
        total = len(labels) + len(too_late)
        assert wait_for(lambda: labels_done(db, total) and label_counters(store)["churn"]["joined"] == len(preds),
                        timeout=60), label_counters(store)
    finally:
        assert terminate(proc) == 0
    c = label_counters(store)["churn"]
    assert c["joined"] == len(preds) and c["labels"] == total
    assert c["expired_labels"] == len(too_late), c
    assert store.query("SELECT COUNT(*) AS n FROM label_early")[0]["n"] == 0  # every early label found its prediction
    joined = expected_join(preds, [(lab, 0, i) for i, lab in enumerate([*labels, *too_late])], ttl_ms=3_600_000)
    assert joined == {lab["event_id"]: lab["label"] for lab in labels}  # the too-late ones changed nothing
    wids = []
    for w in range(3):
        start_ms = int(preds[w * 100]["ts"]) // 60_000 * 60_000
        start = np.datetime64(start_ms, "ms").astype(str) + "Z"
        wids.append(next(r["window_id"] for r in store.query(
            "SELECT DISTINCT window_id FROM metrics WHERE family = 'performance' AND metric = 'accuracy'"
            " AND window_id LIKE ?", (f"churn|v1||{start}|%",))))  # fmt: skip
    assert_figures_equal_expected(store, wids, preds, joined)
