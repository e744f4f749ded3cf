"""driftwarden replay judges history on its own clock: event time. Alerts are stamped with
the times the live daemon, fed the stream as it happened, would have given them (a window
at its end plus lateness), no-data rules fire and resolve over gaps in the file, and the
same file and config give the same alert rows.

Before, the replay's alert clock stood still at the replay's start: every alert was
stamped with the wall clock of the run (started_at == fired_at, whatever the windows),
and no-data rules were never judged (a gap of hours in the file fired nothing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from monitor.config import load_config
from monitor.demo.data import events, write_reference_csv
from monitor.service.replay import run_replay
from storage.db import Store

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)  # history: weeks before any test run

MODEL = """
[daemon]
state_dir = "state"

[kafka]
bootstrap_servers = ["127.0.0.1:9"]
predictions_topic = "t"

[[models]]
name = "churn"
reference = "reference.csv"
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]
[models.window]
type = "tumbling"
size = "1m"
lateness = "30s"
min_rows = 50
idle_timeout = "2s"
"""

CONFIG = MODEL + """
[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.3
for = 3

[[rules]]
name = "quiet"
metric = "no_data"
no_data_for = "2m"
"""


def _setup(folder: Path, parts: list[tuple[int, int, int, int]]) -> tuple[Path, Path]:
    """A config and a JSON-lines file: ``parts`` of (minutes after START, windows of one
    minute, first drifting window, seed), one after the other."""
    folder.mkdir(parents=True, exist_ok=True)
    write_reference_csv(str(folder / "reference.csv"), n=3000, seed=7)
    (folder / "config.toml").write_text(CONFIG)
    lines = []
    for i, (minutes, windows, shift_from, seed) in enumerate(parts):
        for e in events(model="churn", start=START + timedelta(minutes=minutes), windows=windows, per_window=200,
                        window_seconds=60, shift_from=shift_from, seed=seed):
            lines.append(orjson.dumps({**e, "event_id": f"{i}-{e['event_id']}"}))
    (folder / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return folder / "config.toml", folder / "events.jsonl"


def _rows(db: Path, sql: str) -> list[dict]:
    s = Store(db, readonly=True)
    try:
        return [dict(r) for r in s.query(sql)]
    finally:
        s.close()


def _at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_alerts_and_windows_are_stamped_with_event_times_and_a_rerun_gives_the_same_rows(tmp_path: Path) -> None:
    # drift from the 4th window (12:03) to the 6th, then 3 clean windows
    cfg, data = _setup(tmp_path, [(0, 6, 3, 17), (6, 3, 99, 18)])
    run_replay(load_config(cfg), data, tmp_path / "r1")
    db = tmp_path / "r1" / "driftwarden.db"
    shares = _rows(db, "SELECT w.start, m.value FROM metrics m JOIN windows w ON w.id = m.window_id"
                       " WHERE m.metric = 'drift_share' AND m.\"column\" = '' ORDER BY w.start")
    breaching = [r["start"] for r in shares if r["value"] >= 0.3]
    assert breaching == [_at(m) for m in (3, 4, 5)], shares  # the premise: three drifting windows

    # a window is stamped when the live daemon would have closed it: its end plus lateness
    windows = _rows(db, "SELECT start, computed_at FROM windows ORDER BY start")
    assert [w["computed_at"] for w in windows] == [_at(i + 1.5) for i in range(9)]

    (alert,) = _rows(db, "SELECT * FROM alerts WHERE rule = 'drift'")
    assert alert["state"] == "resolved"
    assert alert["started_at"] == _at(4.5)  # the first breaching window (12:03-12:04) closed
    assert alert["fired_at"] == _at(6.5)  # `for = 3`: the third one
    assert alert["resolved_at"] == _at(7.5)  # the first clear window
    assert alert["updated_at"] == _at(9.5)  # the last window judged

    # deterministic: the same file and config give the same alert rows, timestamps included
    run_replay(load_config(cfg), data, tmp_path / "r2", chunk_rows=333)
    everything = "SELECT * FROM alerts ORDER BY id"
    assert _rows(tmp_path / "r2" / "driftwarden.db", everything) == _rows(db, everything)


def test_no_data_rules_fire_over_a_gap_in_the_file_and_resolve_when_rows_come_back(tmp_path: Path) -> None:
    # 4 windows (12:00-12:04), nothing for 10 minutes, 4 windows from 12:14
    cfg, data = _setup(tmp_path, [(0, 4, 99, 17), (14, 4, 99, 18)])
    run_replay(load_config(cfg), data, tmp_path / "r")
    (alert,) = _rows(tmp_path / "r" / "driftwarden.db", "SELECT * FROM alerts WHERE rule = 'quiet'")
    # the last window before the gap closed at 12:04:30; silent for no_data_for = 2m at 12:06:30
    assert alert["fired_at"] == _at(6.5)
    # the first window after the gap closed at 12:15:30: the model is active again
    assert alert["resolved_at"] == _at(15.5)
    assert alert["state"] == "resolved"


def test_the_end_of_the_file_is_not_a_silence(tmp_path: Path) -> None:
    """No tick runs past the last window: a file that ends is not a model that went quiet,
    and a file without gaps fires no no-data rule."""
    cfg, data = _setup(tmp_path, [(0, 5, 99, 17)])
    res = run_replay(load_config(cfg), data, tmp_path / "r")
    assert _rows(tmp_path / "r" / "driftwarden.db", "SELECT * FROM alerts WHERE rule = 'quiet'") == []
    assert res.windows == 5


INHIBITED = CONFIG.replace('''[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.3
for = 3
''', '''[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.3
for = 1
repeat_interval = "1m"

[[rules]]
name = "drift_critical"
metric = "drift_share"
op = ">="
threshold = 0.3
for = 2
severity = "critical"
''')


def test_a_reminder_held_back_by_an_inhibition_does_not_stop_the_ticks_due_after_it(tmp_path: Path) -> None:
    """A firing warning whose critical twin fires has its reminders inhibited: the reminder
    stays due (its last notification does not move), and the tick at that time changes
    nothing. The ticks due after it (a no-data rule over a gap) must still run at their
    times; the catch-up used to stop at the first tick that changed nothing."""
    # drifting from the first window to the gap (12:00-12:04), nothing for 10 minutes, then clean
    cfg, data = _setup(tmp_path, [(0, 4, 0, 17), (14, 4, 99, 18)])
    (tmp_path / "config.toml").write_text(INHIBITED)
    run_replay(load_config(cfg), data, tmp_path / "r")
    db = tmp_path / "r" / "driftwarden.db"
    warning, critical = _rows(db, "SELECT * FROM alerts WHERE rule LIKE 'drift%' ORDER BY rule")
    assert (warning["fired_at"], critical["fired_at"]) == (_at(1.5), _at(2.5))  # the premise
    (alert,) = _rows(db, "SELECT * FROM alerts WHERE rule = 'quiet'")
    # the last window before the gap closed at 12:04:30; silent for no_data_for = 2m at 12:06:30
    assert alert["fired_at"] == _at(6.5)
    assert alert["resolved_at"] == _at(15.5)


def test_a_canary_rolled_back_does_not_keep_the_alert_firing(tmp_path: Path) -> None:
    """A rule without ``version`` over a baseline and a canary: a canary rolled back in a
    slot the baseline is clear must not keep the alert firing. The slot's clear was held in
    memory for the canary's window, which never comes: the alert stayed firing at the end."""
    write_reference_csv(str(tmp_path / "reference.csv"), n=3000, seed=7)
    (tmp_path / "config.toml").write_text(MODEL + '[[rules]]\nname = "drift"\nmetric = "drift_share"\nop = ">="\nthreshold = 0.5\n')
    rows = [
        *events(model="churn", start=START, windows=4, per_window=200, window_seconds=60,
                shift_from=99, seed=17, version="v1"),  # the baseline: clear throughout
        *events(model="churn", start=START, windows=3, per_window=200, window_seconds=60,
                shift_from=0, seed=18, version="v2"),  # the canary drifts; gone after 3 minutes
    ]
    rows = [{**r, "event_id": f"{r['version']}-{r['event_id']}"} for r in rows]
    rows.sort(key=lambda r: r["ts"])
    (tmp_path / "events.jsonl").write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    run_replay(load_config(tmp_path / "config.toml"), tmp_path / "events.jsonl", tmp_path / "r")
    (alert,) = _rows(tmp_path / "r" / "driftwarden.db", "SELECT * FROM alerts WHERE rule = 'drift'")
    assert alert["fired_at"] == _at(1.5)  # the first slot: the canary's window breaches
    assert alert["state"] == "resolved"  # the 4th slot: the baseline alone, clear
    assert alert["resolved_at"] == _at(4.5)
