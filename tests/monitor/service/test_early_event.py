"""One event stamped ahead (accepted: within ``kafka.max_future_skew`` of min(record
timestamp, wall clock)) must not blind a model: it moves the watermark, and the label
join's clock, no further than that base, so the normal rows after it are not late, and
its own window closes when the stream or the idle close by the wall clock gets there.

A real Pipeline on SQLite with an injected wall clock that follows the stream (each
batch read at the time of its newest event, record timestamps = event times, as live);
no broker. Both decode paths: the typed fast path and the per-record path (a batch with
a bad record in it). And the replay command, whose wall clock is its start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.data import events
from monitor.service.replay import run_replay
from storage.db import DB_FILENAME, Store
from storage.labels import label_counters
from tests.monitor.daemon_helpers import START, write_config
from tests.monitor.fault_helpers import shaped
from tests.monitor.labels.helpers import Clock, Rec, label_config, labels_for, pipeline, predictions

START_MS = int(START.timestamp() * 1000)
MIN = 60_000
#: the early event: 50 minutes ahead of its record's timestamp and the wall clock (1 h allowed)
AHEAD_MS = START_MS + 50 * MIN


def _recs(topic: str, payloads: list[dict[str, Any]], first: int, *, record_ts: int | None = None,
          poison: bool = False) -> list[Rec]:
    """Records from offset ``first``, each stamped with its event's time (or ``record_ts``);
    ``poison``: a record that is not JSON first (the batch takes the per-record path)."""
    out = [Rec(topic, 0, first, record_ts or START_MS, b"not json")] if poison else []
    for p in payloads:
        ts = record_ts if record_ts is not None else int(p["ts"])
        out.append(Rec(topic, 0, first + len(out), ts, orjson.dumps(p)))
    return out


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _all_rows_windows(store: Any) -> list[tuple[str, int, int]]:
    return [(r["start"], r["rows"], r["late_rows"]) for r in store.query(
        "SELECT start, rows, late_rows FROM windows WHERE segment = '' ORDER BY start")]


#: the windows (all rows) of the early-prediction stream, once every one has closed: (start, rows, late rows)
ALL_CLOSED = [("2026-11-23T12:00:00.000Z", 60, 0), ("2026-11-23T12:01:00.000Z", 60, 0),
              ("2026-11-23T12:02:00.000Z", 60, 0), ("2026-11-23T12:50:00.000Z", 1, 0)]


@pytest.mark.parametrize(("path", "restart"), [("typed", False), ("per-record", False), ("typed", True)])
def test_an_early_prediction_does_not_make_the_rows_after_it_late(tmp_path: Path, path: str, restart: bool) -> None:
    """A prediction stamped 50 min ahead, then three minutes of normal rows: none is late
    (the old watermark jumped 50 min and dropped all 180); their windows close as the
    stream passes them, and the early row's window closes by the wall clock, with its row.
    ``restart``: the daemon restarts after the second minute and re-reads from where its
    open windows begin (the early row's): the same windows."""
    preds = predictions(windows=3, per_window=60)
    early = {**preds[0], "event_id": "early", "ts": AHEAD_MS}
    clock = Clock(_at(START_MS + 1000))
    cfg_path = label_config(tmp_path, idle_timeout="2s")
    _cfg, store, p = pipeline(cfg_path, clock)
    try:
        sent = _recs("predictions", [early], 0, record_ts=START_MS, poison=path == "per-record")
        p.process_records(sent)
        assert p.stats.dead_letters == ({"not_json": 1} if path == "per-record" else {})
        for w in range(3):
            rows = preds[w * 60:(w + 1) * 60]
            clock.at = _at(int(rows[-1]["ts"]))
            batch = _recs("predictions", rows, len(sent))
            sent += batch
            if restart and w == 2:
                store.close()
                _cfg, store, p = pipeline(cfg_path, clock)
                resume = p.resume_offsets()[0]
                assert resume == 0, "the early row's window is open: re-read from it"
                p.process_records(sent[resume:-len(batch)])
            p.process_records(batch)
            p.flush()
        assert p.stats.late_rows == 0
        rt = p.models["churn"]
        # the stream's: its second-highest time (the newest a second row reached; lateness 0)
        assert rt.windows.watermark == sorted(int(x["ts"]) for x in preds)[-2]
        assert _all_rows_windows(store) == ALL_CLOSED[:2]

        clock.at = _at(AHEAD_MS + MIN + 3000)  # the wall clock passes the early row's window; idle
        p.tick()
        p.flush()
        assert _all_rows_windows(store) == ALL_CLOSED
        assert p.stats.late_rows == 0
    finally:
        store.close()


@pytest.mark.parametrize("early_on", ["predictions", "labels"])
@pytest.mark.parametrize("path", ["typed", "per-record"])
def test_an_early_event_does_not_move_the_join_clock_ahead(tmp_path: Path, early_on: str, path: str) -> None:
    """With ``ttl = 10m``, one prediction or one label stamped 50 min ahead used to move the
    join's clock 50 min: every prediction before it left the join at the next flush
    (expired), and their labels were unmatched. Now the clock stops at the event's base:
    every prediction gets its label."""
    preds = predictions(windows=3, per_window=60)
    labels = labels_for(preds)
    clock = Clock(_at(START_MS + 1000))
    _cfg, store, p = pipeline(label_config(tmp_path, ttl="10m", delay="2m", early_ttl="5m", n_boot=0), clock)
    poison = path == "per-record"
    try:
        if early_on == "predictions":
            early = [_recs("predictions", [{**preds[0], "event_id": "early", "ts": AHEAD_MS}], 0,
                           record_ts=START_MS, poison=poison)]
            p.process_records(early[0])
            first = len(early[0])
        else:
            lab = _recs("labels", [{**labels[0], "event_id": "early", "ts": AHEAD_MS}], 0,
                        record_ts=START_MS, poison=poison)
            p.process_label_records(lab)
            first = 0
        p.flush()
        assert p.labels is not None
        # one event: no clock yet (a second must vouch for its time), and no further than its base
        assert "churn" not in p.labels.clock_ms and p.labels.front_ms["churn"] == START_MS
        clock.at = _at(int(preds[-1]["ts"]))
        p.process_records(_recs("predictions", preds, first))
        p.flush()
        clock.at += timedelta(seconds=5)
        p.process_label_records(_recs("labels", labels, 0 if early_on == "predictions" else len(lab)))
        p.flush()
        c = label_counters(store)["churn"]
        assert c["joined"] == len(preds)
        assert c.get("expired_predictions", 0) == 0 and c.get("unmatched_labels", 0) == 0
    finally:
        store.close()


def test_a_replay_closes_the_windows_of_rows_stamped_ahead_of_its_start(tmp_path: Path) -> None:
    """A file whose last three minutes lie ahead of the replay's start (its wall clock: the
    rows have no record timestamp): they move the watermark no further than the start, so
    their windows close at the end of the file, all of them (before, the newest window
    was left open and never stored; with the cap, all three would have been)."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    evs = list(events(model="churn", start=now - timedelta(minutes=3), windows=6, per_window=60,
                      window_seconds=60, shift_from=6, seed=3))
    cfg_path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="p", http_port=1)
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(e) for e in evs) + b"\n")
    res = run_replay(load_config(cfg_path), data, tmp_path / "out")
    assert (res.rows, res.late_rows, res.dead_letters) == (360, 0, 0)
    store = Store(tmp_path / "out" / DB_FILENAME)
    try:
        assert [(r["rows"], r["late_rows"]) for r in store.query(
            "SELECT rows, late_rows FROM windows WHERE segment = '' ORDER BY start")] == [(60, 0)] * 6
    finally:
        store.close()


def test_count_windows_take_an_early_row_in_its_place(tmp_path: Path) -> None:
    """Count windows have no watermark: an early row is one more row in consumption order,
    as before (a guard, not a fix): the first 250 rows, the early one first, fill the first
    window, nothing is late."""
    cfg_path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1)
    cfg_path.write_text(shaped(cfg_path.read_text(), "count"))
    preds = predictions(windows=5, per_window=60)
    clock = Clock(_at(START_MS + 1000))
    _cfg, store, p = pipeline(cfg_path, clock)
    try:
        sent = _recs("predictions", [{**preds[0], "event_id": "early", "ts": AHEAD_MS}], 0, record_ts=START_MS)
        sent += _recs("predictions", preds, 1)
        clock.at = _at(int(preds[-1]["ts"]))
        p.process_records(sent)
        p.flush()
        assert p.stats.late_rows == 0
        assert [(r["rows"], r["late_rows"]) for r in store.query(
            "SELECT rows, late_rows FROM windows WHERE segment = '' ORDER BY start")] == [(250, 0)]
    finally:
        store.close()
