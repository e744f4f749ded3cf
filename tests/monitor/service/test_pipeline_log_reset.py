"""A partition's log that goes back (the topic deleted and recreated, or truncated by hand):
its new records are counted, not taken for a replay of what the old log held.

The real Pipeline over a real store, fed as the daemon feeds it (Kafka records of one
partition per call, in offset order).
"""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

from monitor.config import load_config
from monitor.service.pipeline import Pipeline
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.labels.helpers import Clock, label_config, labels_for, predictions, records
from tests.store_targets import StoreTarget

Rec = namedtuple("Rec", "topic partition offset timestamp value")
NOW_MS = int(START.timestamp() * 1000) + 86_400_000


def _counted(p: Pipeline) -> int:
    """Rows in stored windows plus rows of the windows still open (all segments)."""
    stored = sum(int(r["rows"]) for r in p.store.query("SELECT rows FROM windows WHERE segment = ''"))
    return stored + sum(w.rows for rt in p.models.values() for k, w in rt.windows.open.items() if k[1] == "")


def test_records_of_a_recreated_topic_are_counted(tmp_path: Path, store_target: StoreTarget) -> None:
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    p = Pipeline(cfg, store_target.open(), clock=lambda: START.replace(day=24))
    p.auto_claim = False  # as the daemon runs it: partitions claimed on assignment
    seek, refused = p.adopt([0], generation=1)
    assert not refused
    events = stream(8, 100, shift_from=99)
    old, new = events[:400], events[400:]
    for i in range(0, len(old), 100):
        p.process_records([Rec("predictions", 0, i + j, NOW_MS, v) for j, v in enumerate(old[i:i + 100])])
        if i + 100 < len(old):  # the last windows the old log closed are not stored yet
            p.flush()
    # the topic is deleted and recreated: Kafka resets the consumer to the new log's start
    for i in range(0, len(new), 100):
        p.process_records([Rec("predictions", 0, i + j, NOW_MS, v) for j, v in enumerate(new[i:i + 100])])
        p.flush()
    # the old log's rows (its windows closed before, stored) and the new log's (an open
    # window of the old log is dropped with it)
    assert _counted(p) >= 400 + 300
    assert p.positions[0] == 400
    assert p.commit_offsets()[0] <= 400


def test_a_restart_on_a_recreated_topic_counts_its_records(tmp_path: Path, store_target: StoreTarget) -> None:
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    store = store_target.open()
    events = stream(8, 100, shift_from=99)
    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    p.auto_claim = False
    p.adopt([0], generation=1)
    p.process_records([Rec("predictions", 0, j, NOW_MS, v) for j, v in enumerate(events[:400])])
    p.flush()
    # stopped; the topic is recreated; a new pipeline claims the partition from the store
    # (stored at offset 400): Kafka finds that offset past the new log's end and resets to 0
    p2 = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    p2.auto_claim = False
    seek, _ = p2.adopt([0], generation=2)
    assert seek[0] > 0
    before = _counted(p2)
    p2.process_records([Rec("predictions", 0, j, NOW_MS, v) for j, v in enumerate(events[400:])])
    p2.flush()
    assert _counted(p2) - before >= 300


def test_labels_of_a_recreated_labels_topic_are_joined(tmp_path: Path, store_target: StoreTarget) -> None:
    cfg = load_config(label_config(tmp_path))
    clock = Clock()
    p = Pipeline(cfg, store_target.open(), clock=clock)
    p.auto_claim = False
    p.adopt([0], generation=1)
    preds = predictions(windows=4, per_window=100)
    labs = labels_for(preds, seed=2)
    p.process_records(records("predictions", preds))
    first, rest = labs[:200], labs[200:]
    p.process_label_records(records("labels", first))
    p.flush()
    assert p.stats.labels == 200
    # the labels topic is deleted and recreated: its records begin at offset 0 again
    p.process_label_records(records("labels", rest))
    p.flush()
    assert p.stats.labels == len(labs)
    assert p.labels is not None and p.labels.commit_offsets() == {0: len(rest)}
