"""Offsets Kafka skipped before the daemon read them (records deleted by retention, then the
consumer reset to ``auto_offset_reset``): counted and warned about; holes of a compacted or
transactional log are not.

The real Pipeline over a real store, fed as the daemon feeds it (Kafka records of one
partition per call, in offset order). The embedded broker cannot delete records
(DeleteRecords is not supported), so the broker's log start offsets are given as the
broker would answer them; :func:`monitor.ingest.kafka_client.log_starts` is tested
against the real broker in ``tests/monitor/ingest/test_kafka_client.py``.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from collections.abc import Mapping
from pathlib import Path

import pytest

from monitor.config import load_config
from monitor.ingest.skipped import RETRY_SECONDS, WARN_EVERY, SkippedOffsets
from monitor.service.pipeline import Pipeline
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.labels.helpers import Clock, label_config, labels_for, predictions, records
from tests.store_targets import StoreTarget

Rec = namedtuple("Rec", "topic partition offset timestamp value")
NOW_MS = int(START.timestamp() * 1000) + 86_400_000


class Ticks:
    """Monotonic seconds that tests move by hand."""

    def __init__(self) -> None:
        self.at = 1000.0

    def __call__(self) -> float:
        return self.at


def _starts(answer: Mapping[int, int]) -> object:
    """The broker's answer to "where does each partition's log begin"."""
    return lambda topic, partitions: {p: answer[p] for p in partitions}


def _pipeline(tmp_path: Path, store_target: StoreTarget, ticks: Ticks) -> tuple[Pipeline, SkippedOffsets]:
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="predictions", http_port=1))
    p = Pipeline(cfg, store_target.open(), clock=lambda: START.replace(day=24))
    p.auto_claim = False  # as the daemon runs it: partitions claimed on assignment
    skipped = SkippedOffsets("latest", clock=ticks)
    p.watch_skipped(skipped)
    return p, skipped


def _feed(p: Pipeline, events: list[bytes], start: int) -> None:
    p.process_records([Rec("predictions", 0, start + j, NOW_MS, v) for j, v in enumerate(events)])


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "skipped unread" in r.getMessage()]


def test_records_deleted_unread_are_counted_and_warned(
    tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    p, skipped = _pipeline(tmp_path, store_target, Ticks())
    p.adopt([0], generation=1)
    events = stream(4, 100, shift_from=99)
    _feed(p, events[:100], 0)
    # the daemon lagged; retention deleted offsets 100..499 and Kafka reset the consumer
    _feed(p, events[100:200], 500)
    caplog.set_level(logging.WARNING)
    skipped.confirm(_starts({0: 500}))
    assert skipped.totals == {("predictions", 0): 400}
    assert skipped.pending == []
    (line,) = _warnings(caplog)
    assert "topic predictions: 400 offsets skipped unread (partition 0: 400 (offsets 100..499))" in line
    assert "auto_offset_reset = latest" in line and "retention" in line
    assert p.stats.rows == 200  # what was read is counted as ever


def test_holes_of_compacted_or_transactional_logs_stay_quiet(
    tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    p, skipped = _pipeline(tmp_path, store_target, Ticks())
    p.adopt([0], generation=1)
    events = stream(4, 100, shift_from=99)
    caplog.set_level(logging.WARNING)
    _feed(p, events[:100], 0)
    _feed(p, events[100:200], 101)  # one offset: a transaction's commit marker
    assert skipped.pending == []
    _feed(p, events[200:300], 260)  # a hole: compacted away, or an aborted transaction's records
    assert len(skipped.pending) == 1
    skipped.confirm(_starts({0: 0}))  # the log still begins at 0: nothing was deleted unread
    assert skipped.totals == {} and skipped.pending == []
    assert _warnings(caplog) == []


def test_a_start_from_a_stored_offset_behind_the_log_start_warns(
    tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = Ticks()
    p, _ = _pipeline(tmp_path, store_target, ticks)
    p.adopt([0], generation=1)
    events = stream(8, 100, shift_from=99)
    _feed(p, events[:400], 0)
    p.flush()
    # stopped for longer than the topic's retention: offsets up to 999 are deleted; a new
    # daemon seeks to its stored offset and Kafka resets it to the log's start (earliest)
    p2 = Pipeline(p.config, p.store, clock=lambda: START.replace(day=24))
    p2.auto_claim = False
    skipped = SkippedOffsets("earliest", clock=ticks)
    p2.watch_skipped(skipped)
    seek, _ = p2.adopt([0], generation=2)
    assert 0 < seek[0] <= 400
    caplog.set_level(logging.WARNING)
    _feed(p2, events[400:], 1000)
    skipped.confirm(_starts({0: 1000}))
    assert skipped.totals == {("predictions", 0): 1000 - seek[0]}
    (line,) = _warnings(caplog)
    assert f"offsets {seek[0]}..999" in line and "the log's new start" in line


def test_warnings_are_one_a_minute_per_topic_summing(
    tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    ticks = Ticks()
    p, skipped = _pipeline(tmp_path, store_target, ticks)
    p.adopt([0], generation=1)
    events = stream(4, 100, shift_from=99)
    caplog.set_level(logging.WARNING)
    _feed(p, events[:100], 0)
    _feed(p, events[100:200], 300)  # 200 skipped
    skipped.confirm(_starts({0: 300}))
    _feed(p, events[200:300], 1000)  # 600 more, 10 s later: held back, summed
    ticks.at += 10
    skipped.confirm(_starts({0: 1000}))
    _feed(p, events[300:400], 1200)  # and 100 more
    skipped.confirm(_starts({0: 1200}))
    assert len(_warnings(caplog)) == 1
    assert skipped.totals == {("predictions", 0): 900}  # /metrics counts at once
    ticks.at += WARN_EVERY
    skipped.tell()  # the daemon's loop calls it every turn
    first, second = _warnings(caplog)
    assert "200 offsets skipped unread (partition 0: 200 (offsets 100..299))" in first
    assert "700 offsets skipped unread (partition 0: 700 (offsets 400..1199))" in second
    skipped.tell()
    assert len(_warnings(caplog)) == 2


def test_gaps_are_kept_while_the_broker_does_not_answer(tmp_path: Path, store_target: StoreTarget) -> None:
    ticks = Ticks()
    p, skipped = _pipeline(tmp_path, store_target, ticks)
    p.adopt([0], generation=1)
    events = stream(4, 100, shift_from=99)
    _feed(p, events[:100], 0)
    _feed(p, events[100:200], 500)
    asked: list[int] = []

    def away(topic: str, partitions: list[int]) -> dict[int, int]:
        asked.append(len(partitions))
        raise TimeoutError("no answer")

    skipped.confirm(away)
    skipped.confirm(away)  # not asked again at once
    assert asked == [1] and len(skipped.pending) == 1 and skipped.totals == {}
    ticks.at += RETRY_SECONDS
    skipped.confirm(_starts({0: 500}))
    assert skipped.totals == {("predictions", 0): 400} and skipped.pending == []


def test_labels_deleted_unread_are_counted(tmp_path: Path, store_target: StoreTarget) -> None:
    cfg = load_config(label_config(tmp_path))
    p = Pipeline(cfg, store_target.open(), clock=Clock())
    p.auto_claim = False
    p.adopt([0], generation=1)
    skipped = SkippedOffsets("earliest", clock=Ticks())
    p.watch_skipped(skipped)
    preds = predictions(windows=4, per_window=100)
    labs = labels_for(preds, seed=2)
    p.process_records(records("predictions", preds))
    assert p.labels is not None
    p.labels.reading_from(0, 0)
    p.process_label_records(records("labels", labs[:100]))
    p.process_label_records(records("labels", labs[200:], start=200))  # 100..199 deleted unread
    skipped.confirm(_starts({0: 200}))
    assert skipped.totals == {(p.labels.topic, 0): 100}
    assert p.stats.labels == len(labs) - 100
