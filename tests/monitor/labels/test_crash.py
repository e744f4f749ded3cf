"""Crash equivalence of the label join: SIGKILL the daemon at seeded random points while
predictions and labels flow, restart it each time; the final windows, metrics (drift and
performance families, intervals included), the join table and its counters equal those of
an uninterrupted run.

Both streams arrive in chunks, one chunk of each per life of the crashed daemon; labels
are shuffled and delayed (some come before their predictions, some twice, some never).
The ``early`` counter is left out of the comparison: how many labels had to wait depends
on how the two topics' polls interleave, which differs between any two runs.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.demo.broker import EmbeddedBroker, free_port
from tests.monitor.daemon_helpers import produce, table_dump, wait_for
from tests.monitor.fault_helpers import (
    durable_offset,
    finished,
    start_daemon,
    terminate,
    wait_ready,
    with_sentinel,
)
from tests.monitor.labels.broker_helpers import label_offset, labels_done, perf_dump
from tests.monitor.labels.helpers import label_config
from tests.monitor.labels.test_join import scenario
from tests.store_targets import open_state_store

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FAST_SESSION = (
    'session_timeout = "6s"\nheartbeat_interval = "1s"',
    'session_timeout = "2s"\nheartbeat_interval = "500ms"',
)


def config(folder: Path, broker: EmbeddedBroker, preds: str, labels: str) -> Path:
    cfg = label_config(
        folder, bootstrap=broker.bootstrap, topic=preds, labels_topic=labels, http_port=free_port(),
        group=f"{folder.name}-{preds}", idle_timeout="1h", max_poll_records=150, early_ttl="2h",
    )
    cfg.write_text(cfg.read_text().replace(*FAST_SESSION))
    return cfg


def join_dump(db: Path) -> dict[str, Any]:
    store = open_state_store(db, readonly=True)

    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in store.query(sql)]

    try:
        held = rows(
            "SELECT model, event_id, version, ts, segments, prediction, label, label_ts, label_pos"
            " FROM label_predictions ORDER BY model, event_id"
        )
        early = rows("SELECT * FROM label_early ORDER BY model, event_id")
        counters = rows("SELECT model, name, value FROM label_counters WHERE name != 'early' ORDER BY model, name")
        slots = rows('SELECT model, start, "end", rows, labelled FROM label_slots ORDER BY start')
    finally:
        store.close()
    return {"held": held, "early": early, "counters": counters, "slots": slots, "perf": perf_dump(db), **table_dump(db)}


def done(db: Path, n_preds: int, n_labels: int) -> bool:
    return finished(db, n_preds) and labels_done(db, n_labels)


def test_sigkill_during_the_join_equals_a_clean_run(broker: EmbeddedBroker, tmp_path: Path) -> None:
    seed, kills = 303, 8
    tag = uuid.uuid4().hex[:8]
    preds_topic, labels_topic = f"cp-{tag}", f"cl-{tag}"
    broker.create_topic(preds_topic)
    broker.create_topic(labels_topic)
    preds, labs = scenario(seed=seed)
    pred_msgs = with_sentinel([orjson.dumps(p) for p in preds])
    label_msgs = [orjson.dumps(ev) for ev, _p, _o in labs]
    n_p, n_l = len(pred_msgs), len(label_msgs)
    rng = random.Random(seed)
    pcuts = [0, *sorted(rng.sample(range(1, n_p), kills)), n_p]
    lcuts = [0, *sorted(rng.sample(range(1, n_l), kills)), n_l]

    cfg = config(tmp_path / "crashed", broker, preds_topic, labels_topic)
    db = cfg.parent / "state" / "driftwarden.db"
    log = cfg.parent / "daemon.log"
    kill_at: list[tuple[int, int]] = []
    for i in range(kills):
        produce(broker.bootstrap, labels_topic, label_msgs[lcuts[i] : lcuts[i + 1]])
        produce(broker.bootstrap, preds_topic, pred_msgs[pcuts[i] : pcuts[i + 1]])
        before = durable_offset(db) + label_offset(db)
        proc = start_daemon(cfg, log=log)
        try:
            wait_for(
                lambda b=before: durable_offset(db) + label_offset(db) > b or done(db, n_p, n_l),
                timeout=30, interval=0.02,
            )
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            proc.kill()
            proc.wait()
        kill_at.append((durable_offset(db), label_offset(db)))
    produce(broker.bootstrap, labels_topic, label_msgs[lcuts[kills] :])
    produce(broker.bootstrap, preds_topic, pred_msgs[pcuts[kills] :])
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg), "daemon not ready"
        assert wait_for(lambda: done(db, n_p, n_l), timeout=90), (durable_offset(db), label_offset(db))
    finally:
        assert terminate(proc) == 0
    crashed = join_dump(db)

    clean_cfg = config(tmp_path / "clean", broker, preds_topic, labels_topic)
    clean_db = clean_cfg.parent / "state" / "driftwarden.db"
    proc = start_daemon(clean_cfg)
    try:
        assert wait_ready(clean_cfg), "daemon not ready"
        assert wait_for(lambda: done(clean_db, n_p, n_l), timeout=90)
    finally:
        assert terminate(proc) == 0
    clean = join_dump(clean_db)
    print(f"\n{kills} kills at durable (prediction, label) offsets {kill_at}; "
          f"{len(clean['perf'])} performance figures, {len(clean['held'])} held predictions compared")
    assert sum(0 < p < n_p or 0 < q < n_l for p, q in kill_at) >= kills // 2, kill_at
    assert len(clean["perf"]) > 100 and len(clean["held"]) == len(preds) + 2
    for key in ("windows", "metrics", "perf", "held", "early", "counters", "slots"):
        assert crashed[key] == clean[key], key
