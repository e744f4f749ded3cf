"""One event stamped ahead must not blind a model while the stream runs *behind* the wall
clock: a ``replay`` of a history file (rows have no record timestamp, the base is the
replay's start), a consumer catching up a backlog hours behind when one message has no
record timestamp, or one forged to the present. The base (min(record timestamp, wall
clock)) is then far ahead of the stream; what bounds the event is the stream's own
progress: a time moves a clock once a second row reached it
(:func:`monitor.ingest.event_time.vouch`).

Real Pipeline on SQLite with an injected wall clock days ahead of the rows (no broker),
both decode paths, a restart from the stored state; the real replay command, time and
count windows; the label join's clock. Before the fix the hostile row moved the
watermark (the join's clock) to the wall clock: every row after it was late (every
prediction expired)."""

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
from storage.records import parse_iso
from tests.monitor.daemon_helpers import START, write_config
from tests.monitor.fault_helpers import shaped
from tests.monitor.labels.helpers import Clock, Rec, label_config, labels_for, pipeline, predictions

START_MS = int(START.timestamp() * 1000)
MIN = 60_000
#: the wall clock of the live tests: three days after the rows (a backlog after an outage)
WALL = START + timedelta(days=3)
WALL_MS = int(WALL.timestamp() * 1000)
#: the hostile event: 30 minutes ahead of the wall clock (1 h allowed), so three days
#: ahead of its stream
HOSTILE_MS = WALL_MS + 30 * MIN


def _recs(topic: str, payloads: list[dict[str, Any]], first: int, *, record_ts: Any = "ts",
          poison: bool = False) -> list[Rec]:
    """Records from offset ``first``; each stamped with its event's time (``record_ts =
    "ts"``, a producer's CreateTime) or ``record_ts`` (None: no timestamp). ``poison``: a
    record that is not JSON first (the batch takes the per-record path)."""
    out = [Rec(topic, 0, first, START_MS, b"not json")] if poison else []
    for p in payloads:
        ts = int(p["ts"]) if record_ts == "ts" else record_ts
        out.append(Rec(topic, 0, first + len(out), ts, orjson.dumps(p)))
    return out


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _windows(store: Store) -> list[tuple[str, int, int]]:
    return [(r["start"], r["rows"], r["late_rows"]) for r in store.query(
        "SELECT start, rows, late_rows FROM windows WHERE segment = '' ORDER BY start")]


#: the three minutes of the stream and the hostile row's window, once all have closed
ALL_CLOSED = [("2026-11-23T12:00:00.000Z", 60, 0), ("2026-11-23T12:01:00.000Z", 60, 0),
              ("2026-11-23T12:02:00.000Z", 60, 0), ("2026-11-26T12:30:00.000Z", 1, 0)]


@pytest.mark.parametrize(("path", "record_ts", "restart"), [
    ("typed", None, False), ("per-record", None, False), ("typed", WALL_MS, False), ("per-record", WALL_MS, True),
    ("typed", None, True),
])
def test_one_hostile_row_in_a_backlog_makes_no_row_late(
    tmp_path: Path, path: str, record_ts: int | None, restart: bool
) -> None:
    """The daemon catches up three minutes of rows three days behind its wall clock; the
    first message is stamped 30 min ahead of the wall clock, without a record timestamp
    (``record_ts`` None) or with one forged to the present. No row is late (before: all
    180); the stream's windows close as it passes them, the last ones and the hostile
    row's by the idle close. ``restart``: the daemon restarts before the third minute and
    re-reads from where its open windows begin (its snapshot keeps the front the hostile
    row set, not a clock)."""
    preds = predictions(windows=3, per_window=60)
    hostile = {**preds[0], "event_id": "hostile", "ts": HOSTILE_MS}
    clock = Clock(WALL)
    cfg_path = label_config(tmp_path, idle_timeout="2s")
    _cfg, store, p = pipeline(cfg_path, clock)
    try:
        sent = _recs("predictions", [hostile], 0, record_ts=record_ts, poison=path == "per-record")
        p.process_records(sent)
        for w in range(3):
            batch = _recs("predictions", preds[w * 60:(w + 1) * 60], len(sent), poison=path == "per-record")
            sent += batch
            if restart and w == 2:
                store.close()
                _cfg, store, p = pipeline(cfg_path, clock)
                resume = p.resume_offsets()[0]
                # the hostile row's window is open: re-read from it (after the poison record)
                assert resume == (1 if path == "per-record" else 0)
                p.process_records(sent[resume:-len(batch)])
            p.process_records(batch)
            p.flush()
        assert p.stats.late_rows == 0
        rt = p.models["churn"]
        # the stream's newest time (lateness 0): the hostile row, highest, vouches only for that
        assert rt.windows.watermark == max(int(x["ts"]) for x in preds)
        assert _windows(store) == ALL_CLOSED[:2]

        clock.at = _at(HOSTILE_MS + MIN + 3000)  # the wall clock passes the hostile row's window; idle
        p.tick()
        p.flush()
        assert _windows(store) == ALL_CLOSED
        assert p.stats.late_rows == 0
    finally:
        store.close()


def test_a_stream_resuming_after_a_gap_moves_the_watermark_at_its_second_row(tmp_path: Path) -> None:
    """A legitimate jump: minute 0, then the stream resumes an hour later. Its first row
    alone does not close minute 0 (it could be one stamped ahead); its second does. (No
    label join: its clock would store performance windows of minute 0 as it matures them.)"""
    preds = predictions(windows=1, per_window=60)
    later = [{**preds[i], "event_id": f"later-{i}", "ts": int(preds[i]["ts"]) + 60 * MIN} for i in range(2)]
    cfg_path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, idle_timeout="1h")
    _cfg, store, p = pipeline(cfg_path, Clock(WALL))
    try:
        p.process_records(_recs("predictions", preds, 0))
        p.process_records(_recs("predictions", later[:1], 60))
        p.flush()
        assert _windows(store) == []
        p.process_records(_recs("predictions", later[1:], 61))
        p.flush()
        assert _windows(store) == [("2026-11-23T12:00:00.000Z", 60, 0)]
        assert p.stats.late_rows == 0
    finally:
        store.close()


@pytest.mark.parametrize("hostile_on", ["predictions", "labels"])
@pytest.mark.parametrize("path", ["typed", "per-record"])
def test_one_hostile_event_in_a_backlog_does_not_move_the_join_clock(
    tmp_path: Path, hostile_on: str, path: str
) -> None:
    """With ``ttl = 10m``, a backlog three days behind the wall clock whose first
    prediction or label has no record timestamp and is stamped 30 min ahead of the wall
    clock: before, the join's clock jumped to the wall clock and every prediction left
    the join as expired, every label unmatched. Now every prediction gets its label and
    the clock follows the stream."""
    preds = predictions(windows=3, per_window=60)
    labels = labels_for(preds)
    clock = Clock(WALL)
    _cfg, store, p = pipeline(label_config(tmp_path, ttl="10m", delay="2m", early_ttl="5m", n_boot=0), clock)
    poison = path == "per-record"
    try:
        first_pred = first_label = 0
        if hostile_on == "predictions":
            sent = _recs("predictions", [{**preds[0], "event_id": "hostile", "ts": HOSTILE_MS}], 0,
                         record_ts=None, poison=poison)
            p.process_records(sent)
            first_pred = len(sent)
        else:
            sent = _recs("labels", [{**labels[0], "event_id": "hostile", "ts": HOSTILE_MS}], 0,
                         record_ts=None, poison=poison)
            p.process_label_records(sent)
            first_label = len(sent)
        p.flush()
        assert p.labels is not None
        assert "churn" not in p.labels.clock_ms  # one event: no clock yet
        p.process_records(_recs("predictions", preds, first_pred))
        p.flush()
        p.process_label_records(_recs("labels", labels, first_label))
        p.flush()
        assert p.labels.clock_ms["churn"] <= max(int(x["ts"]) for x in labels)
        c = label_counters(store)["churn"]
        assert c["joined"] == len(preds)
        assert c.get("expired_predictions", 0) == 0 and c.get("unmatched_labels", 0) == 0
    finally:
        store.close()


def _history(now: datetime, *, per_window: int) -> list[dict[str, Any]]:
    """Six minutes of history a day before ``now``, with one row (the 11th) stamped 30
    minutes after ``now`` (a replay accepts up to ``max_future_skew`` = 1 h ahead of its
    start)."""
    evs = list(events(model="churn", start=now - timedelta(days=1), windows=6, per_window=per_window,
                      window_seconds=60, shift_from=6, seed=3))
    future = int((now + timedelta(minutes=30)).timestamp() * 1000)
    evs.insert(10, {**evs[10], "event_id": "future", "ts": future})
    return evs


def test_a_replay_of_history_with_one_future_row_makes_no_row_late(tmp_path: Path) -> None:
    """``driftwarden replay`` of six minutes of day-old history with one row stamped 30 min
    ahead of the replay's start: before, the row moved the watermark to the start and
    the 349 rows after it were late (found live: 498 of 500). Now none is: the six
    windows hold their 60 rows, and the future row's window closes at the end of the
    file with it."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    evs = _history(now, per_window=60)
    cfg_path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="p", http_port=1)
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(e) for e in evs) + b"\n")
    res = run_replay(load_config(cfg_path), data, tmp_path / "out", chunk_rows=100)
    assert (res.rows, res.late_rows, res.dead_letters) == (361, 0, 0)
    store = Store(tmp_path / "out" / DB_FILENAME)
    try:
        assert [(r["rows"], r["late_rows"]) for r in store.query(
            "SELECT rows, late_rows FROM windows WHERE segment = '' ORDER BY start")] == [(60, 0)] * 6 + [(1, 0)]
    finally:
        store.close()


def test_a_replay_stamps_count_windows_by_the_stream_not_by_one_future_row(tmp_path: Path) -> None:
    """Count windows have no watermark, but a replay judges each at its newest row's time,
    never before a window judged earlier: one future row stamped its window, and so every
    window after it, 30 min after the replay's start (and ran the alert ticks of a day in
    between). Now each window is judged at a time of the history."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    evs = _history(now, per_window=100)
    cfg_path = write_config(tmp_path, bootstrap="127.0.0.1:9", topic="p", http_port=1)
    cfg_path.write_text(shaped(cfg_path.read_text(), "count"))
    data = tmp_path / "events.jsonl"
    data.write_bytes(b"\n".join(orjson.dumps(e) for e in evs) + b"\n")
    res = run_replay(load_config(cfg_path), data, tmp_path / "out", chunk_rows=50)
    assert (res.rows, res.late_rows, res.dead_letters) == (601, 0, 0)
    store = Store(tmp_path / "out" / DB_FILENAME)
    try:
        rows = store.query("SELECT start, rows, computed_at FROM windows WHERE segment = '' ORDER BY start")
    finally:
        store.close()
    assert [r["rows"] for r in rows] == [250, 250, 250]  # rows 0-249, 125-374, 250-499
    history_end = now - timedelta(days=1) + timedelta(minutes=6)
    assert all(parse_iso(r["computed_at"]) <= history_end for r in rows), [r["computed_at"] for r in rows]
