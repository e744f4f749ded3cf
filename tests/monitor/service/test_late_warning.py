"""Rows that arrive after their window closed are said so in the log, not only counted.

On call: a producer that was away sent its backlog (rows stamped during the pause) after
the wall clock had closed their windows (``idle_timeout``): every row was late, in no
figure, and only ``/metrics`` and the shutdown line counted them. A real Pipeline on
SQLite with an injected wall clock; no broker."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from monitor.windows.model_windows import ModelWindows
from tests.monitor.daemon_helpers import START
from tests.monitor.labels.helpers import Clock, Rec, label_config, pipeline, predictions

START_MS = int(START.timestamp() * 1000)


def _recs(payloads: list[dict[str, Any]], first: int) -> list[Rec]:
    return [Rec("predictions", 0, first + i, int(p["ts"]), orjson.dumps(p)) for i, p in enumerate(payloads)]


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_a_backlog_after_an_idle_close_is_warned_about_once_a_minute(tmp_path: Path, caplog: Any) -> None:
    preds = predictions(windows=4, per_window=60)
    clock = Clock(_at(START_MS + 60_000))
    _cfg, store, p = pipeline(label_config(tmp_path, idle_timeout="2s"), clock)
    caplog.set_level(logging.WARNING, logger="driftwarden.pipeline")
    try:
        p.process_records(_recs(preds[:60], 0))
        p.flush()
        # the producer goes away; the wall clock closes the first window and moves on
        clock.at = _at(START_MS + 5 * 60_000)
        p.tick()
        p.flush()
        assert not [r for r in caplog.records if "late" in r.getMessage()]
        # it comes back with the rows it held, stamped 12:01-12:02: their windows are closed
        p.process_records(_recs(preds[60:120], 60))
        p.flush()
        assert p.stats.late_rows == 120  # each row late in the all-rows window and its segment's
        [warning] = [r for r in caplog.records if "arrived after their window closed" in r.getMessage()]
        text = warning.getMessage()
        assert warning.levelno == logging.WARNING
        assert text.startswith("model churn: 60 row(s) arrived after their window closed (the newest for the window"
                               " 2026-11-23T12:01:00.000Z..2026-11-23T12:02:00.000Z)")
        assert "window.idle_timeout (2s)" in text
        # more within the minute: counted into the next warning, not logged each batch
        clock.at += timedelta(seconds=30)
        p.process_records(_recs(preds[120:150], 120))
        clock.at += timedelta(seconds=31)
        p.process_records(_recs(preds[150:180], 150))
        late = [r.getMessage() for r in caplog.records if "arrived after their window closed" in r.getMessage()]
        assert len(late) == 2 and late[1].startswith("model churn: 60 row(s) arrived"), late
    finally:
        store.close()


class _RaisesAfterLate(ModelWindows):
    """Fault injection: a batch holding event id ``poison-*`` raises after its rows were
    windowed (and counted late), when its due windows are closed: the poison-pill
    isolation must undo the late rows it counted."""

    poisoned = False

    def add(self, batch: Any, replay_before: Any = None) -> Any:
        out = super().add(batch, replay_before)
        self.poisoned = any(str(e).startswith("poison") for e in batch.event_id.tolist())
        return out

    def close_due(self) -> Any:
        if self.poisoned:
            raise RuntimeError("injected fault")
        return super().close_due()


def test_a_batch_rolled_back_counts_its_late_rows_once_in_the_warning(tmp_path: Path, caplog: Any) -> None:
    preds = predictions(windows=4, per_window=60)
    clock = Clock(_at(START_MS + 60_000))
    _cfg, store, p = pipeline(label_config(tmp_path, idle_timeout="2s"), clock)
    rt = p.models["churn"]
    rt.windows = _RaisesAfterLate("churn", rt.config.window, rt.schema.segments, rt.config.limits)
    caplog.set_level(logging.WARNING, logger="driftwarden.pipeline")
    try:
        p.process_records(_recs(preds[:60], 0))
        p.flush()
        clock.at = _at(START_MS + 5 * 60_000)
        p.tick()
        p.flush()
        # a backlog of 60 late rows with one poison record among them: the batch is undone
        # and bisected; the poison is dead-lettered, the 60 others are late once
        backlog = list(preds[60:120])
        backlog.insert(17, dict(preds[70], event_id="poison-1"))
        p.process_records(_recs(backlog, 60))
        assert p.stats.dead_letters.get("internal") == 1
        assert p.stats.late_rows == 120  # each row late in the all-rows window and its segment's
        clock.at += timedelta(seconds=61)
        p.process_records(_recs(preds[120:130], 121))
        late = [r.getMessage() for r in caplog.records if "arrived after their window closed" in r.getMessage()]
        assert [t.split(" arrived")[0] for t in late] == ["model churn: 60 row(s)", "model churn: 10 row(s)"], late
    finally:
        store.close()
