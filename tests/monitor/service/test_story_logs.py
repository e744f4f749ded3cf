"""The logs tell the story: a line per stored window, per alert transition, start-up and shutdown."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import load_config
from monitor.logs import setup_logging
from monitor.service.daemon import Daemon
from storage.windows import windows_with_verdicts
from tests.monitor.daemon_helpers import stream, write_config
from tests.monitor.service.test_pipeline_isolation import run as run_on
from tests.monitor.web.seed_helpers import seeded_daemon
from tests.store_targets import state_target


def run(tmp: Path, payloads: list[bytes], **kw: Any) -> Any:
    """The pipeline fed ``payloads`` on the default store in ``tmp`` (SQLite, or PostgreSQL when the suite runs on it)."""
    return run_on(tmp, state_target(tmp), payloads, **kw)


def story(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_one_info_line_per_stored_window_with_its_facts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="driftwarden.story")
    store = run(tmp_path, stream(4, 200, 2))
    try:
        stored = {w["id"]: w for w in windows_with_verdicts(store)}
    finally:
        store.close()
    lines = story(caplog, "window_closed")
    assert sorted(r.window_id for r in lines) == sorted(stored)  # once each, none twice
    assert all(r.levelno == logging.INFO for r in lines)
    drifted = next(r for r in lines if r.segment == "" and r.verdict == "drifted")
    w = stored[drifted.window_id]
    assert (drifted.model, drifted.version, drifted.rows, drifted.status) == ("churn", "v1", w["rows"], "ok")
    assert drifted.drift_share == pytest.approx(w["drift_share"]) and drifted.drift_share_threshold == 0.5
    assert drifted.compute_ms > 0
    names = [c["column"] for c in drifted.drifted_columns]
    assert {"age", "monthly_charges"} <= set(names)
    text = drifted.getMessage()
    assert text.startswith(f"window closed: model=churn version=v1 segment=(all) {w['start']}..{w['end']} rows={w['rows']}"
                           " verdict=drifted drift_share=")
    assert f"{names[0]} (" in text and "compute_ms=" in text
    seg = next(r for r in lines if r.segment == "region=eu")
    assert "segment=region=eu " in seg.getMessage()


def test_the_window_line_names_each_drifted_columns_statistic(caplog: pytest.LogCaptureFixture) -> None:
    # "drifted=[amount (ks 1.14e-19), …]": the KS p-value read like a (tiny) distance
    from datetime import UTC, datetime

    from monitor.service.telemetry import log_window
    from monitor.windows.figures import WindowFigures
    from storage.records import MetricRow, WindowKey, WindowRecord

    caplog.set_level(logging.INFO, logger="driftwarden.story")
    key = WindowKey("churn", "v1", "", "2026-11-23T12:00:00.000Z", "2026-11-23T12:05:00.000Z")
    top = [("amount", "ks", 1.14e-19), ("income", "wasserstein", 0.3123)]
    log_window(WindowFigures(WindowRecord(key, 300, "ok", datetime.now(UTC)),
                             [MetricRow("", "drift_share", 1.0, 0.5, True)], top_drifted=top))
    [line] = story(caplog, "window_closed")
    assert " drifted=[amount (ks p=1.1e-19), income (wasserstein 0.312)] " in line.getMessage(), line.getMessage()
    # the structured fields keep the figures as they are
    assert line.drifted_columns == [{"column": "amount", "test": "ks", "score": 1.14e-19},  # type: ignore[attr-defined]
                                    {"column": "income", "test": "wasserstein", "score": 0.3123}]


def test_a_hostile_segment_value_cannot_forge_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="driftwarden.story")
    payloads = []
    for p in stream(1, 120, 99):
        ev = orjson.loads(p)
        ev["segment"] = {"region": "eu\n2026-11-23 ERROR driftwarden: forged"}
        payloads.append(orjson.dumps(ev))
    store = run(tmp_path, payloads)
    store.close()
    line = next(r for r in story(caplog, "window_closed") if r.segment.startswith("region="))
    assert "\n" not in line.getMessage()
    assert "segment=region=eu\\n2026-11-23 ERROR driftwarden: forged" in line.getMessage()
    assert line.segment == "region=eu\n2026-11-23 ERROR driftwarden: forged"  # the field keeps the value


def test_alert_transitions_are_logged_once_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with seeded_daemon(tmp_path, monkeypatch, windows=7, shift_from=3) as s:
        alerts = {a["rule"]: a for a in s.daemon.store.query("SELECT * FROM alerts")}
    lines = story(caplog, "alert_transition")
    by_rule: dict[str, list[str]] = {}
    for r in lines:
        by_rule.setdefault(r.rule, []).append(r.transition)
    # age-drift needs two windows in a row (for = 2): the first window's 0.1 makes it pending,
    # the next clears it; after the shift it goes pending, then fires
    assert by_rule == {"dataset-drift": ["firing"], "age-drift": ["pending", "inactive", "pending", "firing"]}
    firing = next(r for r in lines if r.rule == "dataset-drift")
    assert firing.alert_id == alerts["dataset-drift"]["id"] and firing.notifiers == ["slack"]
    assert firing.getMessage() == (
        "alert firing: rule=dataset-drift model=churn metric=drift_share severity=critical value=0.6 threshold=0.5"
        " inactive->firing notify=slack"
    )
    assert firing.value == 0.6 and (firing.from_state, firing.to_state) == ("inactive", "firing")
    sent = story(caplog, "delivery")
    assert {r.status for r in sent} == {"sent"} and len(sent) == 2


def test_start_up_and_shutdown_summaries_in_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTWARDEN_TEST_STORY_SLACK", "xoxb-story-secret-token")
    extra = ('[notifiers.slack]\ntype = "slack"\ntoken_env = "DRIFTWARDEN_TEST_STORY_SLACK"\nchannel = "#x"\n')
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="p", http_port=1, extra=extra))
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    out = io.StringIO()
    try:
        setup_logging("info", "json", secrets=cfg.secrets)
        root.handlers[0].setStream(out)  # type: ignore[attr-defined]
        daemon = Daemon(cfg, http=False)
        daemon.stop()  # run() starts, finds the stop asked for, drains and stops at once
        assert daemon.run() == 0
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    start = next(d for d in docs if d.get("event") == "startup")
    assert start["level"] == "info" and start["models"][0]["name"] == "churn"
    assert start["models"][0]["window"] == "tumbling 1m" and start["models"][0]["reference_rows"] == 3000
    assert start["notifiers"] == ["slack"] and start["http_listen"] == "127.0.0.1:1"
    assert "1 model(s): churn (tumbling 1m, fixed reference of 3000 rows)" in start["msg"]
    warn = next(d for d in docs if d.get("event") == "config_warning")
    assert warn["level"] == "warning" and "daemon.public_url is not set" in warn["msg"]
    stop = next(d for d in docs if d.get("event") == "shutdown")
    assert stop["rows"] == 0 and stop["windows_closed"] == 0 and stop["msg"].startswith("driftwarden stopped after ")
    assert "xoxb-story-secret-token" not in out.getvalue()
