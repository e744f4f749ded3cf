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
from storage.dead_letters import dead_letter_drops
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


def _stored(p: Pipeline) -> dict[str, tuple[int, int, str]]:
    """The stored windows of all segments: ``{start|segment: (rows, late rows, computed_at)}``."""
    rows = p.store.query("SELECT start, segment, rows, late_rows, computed_at FROM windows")
    return {f"{r['start']}|{r['segment']}": (int(r["rows"]), int(r["late_rows"]), r["computed_at"]) for r in rows}


def _old_log_then_resent(p: Pipeline, events: list[bytes], resent: list[bytes]) -> dict[str, tuple[int, int, str]]:
    """The old log's records of ``events`` read and stored, then the topic recreated with
    ``resent`` (offsets from 0 again): the windows stored before the new log's records."""
    p.auto_claim = False
    p.adopt([0], generation=1)
    for i in range(0, len(events), 100):
        p.process_records([Rec("predictions", 0, i + j, NOW_MS, v) for j, v in enumerate(events[i:i + 100])])
        p.flush()
    before = _stored(p)
    for i in range(0, len(resent), 100):
        p.process_records([Rec("predictions", 0, i + j, NOW_MS, v) for j, v in enumerate(resent[i:i + 100])])
        p.flush()
    return before


def test_a_recreated_topic_does_not_rewrite_the_time_windows_its_old_log_stored(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """The producer sends part of the day again into the recreated topic: the windows the
    old log closed and stored stay as they were, the new log's rows of them are late.
    Before, the model's clock was reset with the partition: the re-sent rows made those
    windows again and each was stored over the old one (100 rows -> the 50 re-sent)."""
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    minutes = iter(range(10_000))
    p = Pipeline(cfg, store_target.open(), clock=lambda: START.replace(day=24, minute=next(minutes) % 60))
    events = stream(8, 100, shift_from=99)
    before = _old_log_then_resent(p, events, events[50:250])
    after = _stored(p)
    first, second = sorted(k for k in before if k.endswith("|"))[:2]
    assert after[first][0] == before[first][0] == 100
    assert after[second][0] == before[second][0] == 100
    # the re-sent rows are counted as late rows of the stored windows, not as new windows
    assert (after[first][1], after[second][1]) == (50, 100)
    assert {k: v[2] for k, v in after.items()} == {k: v[2] for k, v in before.items()}


COUNT_WINDOW = 'type = "tumbling"\nby = "count"\nsize = 100\nmin_rows = 50'


def test_a_recreated_topic_does_not_rewrite_the_count_windows_its_old_log_stored(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """Count windows are numbered by the model's rows: the new log's rows go on from
    where the old log's ended. Before, the numbering began at 0 again with the new log
    and its windows were stored over the old log's (same positions, same ids)."""
    path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1)
    text = path.read_text()
    window = 'type = "tumbling"\nsize = "1m"\nlateness = "0s"\nmin_rows = 50\nidle_timeout = "2s"'
    assert window in text
    path.write_text(text.replace(window, COUNT_WINDOW))
    cfg = load_config(path)
    minutes = iter(range(10_000))
    p = Pipeline(cfg, store_target.open(), clock=lambda: START.replace(day=24, minute=next(minutes) % 60))
    events = stream(8, 100, shift_from=99)
    before = _old_log_then_resent(p, events[:400], events[:300])
    after = _stored(p)
    assert {k: v for k, v in after.items() if k in before} == before
    assert len(after) > len(before)  # the new log's windows are stored after the old log's


def test_a_bad_record_of_a_recreated_topic_at_an_offset_the_old_log_dead_lettered_is_counted(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """The old log's dead letter at offset 3 stays stored; the new log's bad record at
    offset 3 is another record: it cannot take the row (the table's key is topic,
    partition and offset) but it is counted as a letter not stored, never taken for a
    re-read. Re-read after a restart it is counted once. Before, it was taken for a
    re-read of the stored one and silently dropped."""
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    store = store_target.open()
    events = stream(8, 100, shift_from=99)

    def log(values: list[bytes], bad: bytes) -> list[Rec]:
        out = [Rec("predictions", 0, j, NOW_MS, v) for j, v in enumerate(values)]
        out[3] = Rec("predictions", 0, 3, NOW_MS, bad)
        return out

    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    p.auto_claim = False
    p.adopt([0], generation=1)
    p.process_records(log(events[:400], b"old: not json"))
    p.flush()
    # the topic is recreated; its new log has another bad record at offset 3
    new = log(events[400:450], b"{new: not json either")
    p.process_records(new)
    p.flush()
    rows = store.query('SELECT "offset", payload FROM dead_letters')
    assert [(int(r["offset"]), bytes(r["payload"])) for r in rows] == [(3, b"old: not json")]
    assert dead_letter_drops(store) == {"not_json": (0, 1)}
    # a restart re-reads the new log from its open window's first row: offset 3 again
    p2 = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    p2.auto_claim = False
    seek, _ = p2.adopt([0], generation=2)
    assert seek[0] <= 3
    p2.process_records(new[seek[0]:])
    p2.flush()
    assert dead_letter_drops(store) == {"not_json": (0, 1)}
    assert len(store.query("SELECT id FROM dead_letters")) == 1
