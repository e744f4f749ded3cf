"""driftwarden replay: a file of events through the live pipeline gives the tables of a live
run over the same records (JSON lines and flattened CSV and Parquet alike); rules fire
without notifying unless --notify; bad rows are dead letters; the replay never writes
into a folder it did not make."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker
from monitor.demo.sinks import WebhookSink
from monitor.service.replay import ReplayError, run_replay
from storage.db import Store
from storage.state_dir import REPLAY_MARKER
from tests.monitor.daemon_helpers import produce, stream, table_dump, write_config
from tests.monitor.fault_helpers import fault_config, run_to_completion
from tests.store_targets import SqliteTarget

RULE = """
[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.5
notifiers = ["hook"]

[notifiers.hook]
type = "webhook"
url = "{url}"
backoff = "1s"
"""


def _files(folder: Path, msgs: list[bytes], *, tables: bool = True) -> dict[str, Path]:
    """The messages as JSON lines, and (``tables``) flattened into CSV and Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    jsonl = folder / "events.jsonl"
    jsonl.write_bytes(b"\n".join(msgs) + b"\n")
    out = {"jsonl": jsonl}
    if tables:
        flat = pd.json_normalize([orjson.loads(m) for m in msgs], sep=".")
        out["csv"], out["parquet"] = folder / "events.csv", folder / "events.parquet"
        flat.to_csv(out["csv"], index=False)
        flat.to_parquet(out["parquet"], index=False)
    return out


@pytest.mark.broker
def test_replay_equals_a_live_run_over_the_same_records(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = "replay-live"
    broker.create_topic(topic)
    msgs = stream(windows=6, per_window=200, shift_from=3, seed=17)
    produce(broker.bootstrap, topic, msgs)
    cfg = fault_config(tmp_path / "live", bootstrap=broker.bootstrap, topic=topic, idle_timeout="2s")
    live = run_to_completion(cfg, len(msgs), all_closed=True)
    assert len(live["windows"]) == 6 * 4  # every window, overall and per region, closed

    files = _files(tmp_path / "data", msgs)
    # the command line, as a user runs it
    out = subprocess.run(
        [sys.executable, "-m", "monitor.cli.app", "replay", "-c", str(cfg), str(files["jsonl"]),
         "--state-dir", str(tmp_path / "r-jsonl")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == (
        "replayed 1200 rows: 24 windows, 0 late rows, 0 dead letters, 0 alert(s) fired"
        " (notifications off; --notify sends them)"
    )
    assert "replay" in out.stderr and "1200/1200" in out.stderr  # the progress bar
    # a replay writes SQLite whatever the live store (DRIFTWARDEN_TEST_STORE=postgres: PostgreSQL)
    assert table_dump(SqliteTarget(tmp_path / "r-jsonl" / "driftwarden.db")) == live
    # the usual export of JSON events: struct columns (features, segment), not flattened
    files["nested-parquet"] = tmp_path / "data" / "nested.parquet"
    pq.write_table(pa.Table.from_pylist([orjson.loads(m) for m in msgs]), files["nested-parquet"])
    for kind in ("csv", "parquet", "nested-parquet"):
        run_replay(load_config(cfg), files[kind], tmp_path / f"r-{kind}", chunk_rows=333)
        assert table_dump(SqliteTarget(tmp_path / f"r-{kind}" / "driftwarden.db")) == live, kind


def _hostile(ev: dict) -> list[bytes]:
    """Messages live dead-letters (each with the reason code it gets), as bytes."""
    def with_(**kw: object) -> bytes:
        return orjson.dumps({**ev, "event_id": "hostile", **kw})

    clean = orjson.dumps(ev)
    return [
        with_(ts=ev["ts"] * 1000),  # epoch microseconds sent as milliseconds
        with_(ts="2090-01-01T00:00:00Z"),  # far ahead of the wall clock
        with_(ts=10**17),
        with_(ts=True),
        with_(ts=str(ev["ts"])),  # a number as text is not an RFC 3339 time
        orjson.dumps({k: v for k, v in ev.items() if k != "prediction"}),
        with_(event_id="x" * 300),
        orjson.dumps({k: v for k, v in ev.items() if k != "event_id"}),
        with_(segment={"region": ["eu", "us"]}),
        with_(model=["churn"]),
        with_(model=[]),
        b"[1,2,3]",
        clean.replace(b'"age":', b'"age":NaN,"x":'),
        clean.replace(b'"prediction":', b'"prediction":1e999,"p2":'),
        clean.replace(b'"basic"', b'"\xff\xfe"').replace(b'"pro"', b'"\xff\xfe"'),
        clean[:-1] + b',"deep":' + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"}",
    ]


@pytest.mark.broker
@pytest.mark.sqlite_only("reads the live run's dead letters from its SQLite file")
def test_rows_live_dead_letters_are_dead_letters_of_the_replay_too(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """One hostile event (a far-future time, an out-of-range time, a missing prediction, a
    model given as a list, a line that is no JSON object...) among clean ones: live
    dead-letters each and the windows stay as they are; the replay of the same records
    gives the same tables and the same dead letters. Before, an event time far ahead
    closed every window (4 instead of 24, the rest late), missing predictions and long
    ids were counted, and a list model or a NaN literal stopped the replay."""
    topic = "replay-hostile"
    broker.create_topic(topic)
    msgs = stream(windows=6, per_window=200, shift_from=3, seed=17)
    bad = _hostile(orjson.loads(msgs[150]))
    for i, b in zip(range(150 + 40 * (len(bad) - 1), 149, -40), reversed(bad), strict=True):
        msgs.insert(i, b)
    at = [i for i, m in enumerate(msgs) if m in bad]
    last = orjson.loads(msgs[-1])  # two later events close every window in the live run
    msgs += [orjson.dumps({**last, "ts": last["ts"] + 600_000, "event_id": eid}) for eid in ("sentinel", "sentinel-2")]
    produce(broker.bootstrap, topic, msgs)
    cfg = fault_config(tmp_path / "live", bootstrap=broker.bootstrap, topic=topic, idle_timeout="2s")
    live = run_to_completion(cfg, len(msgs), all_closed=True)
    files = _files(tmp_path / "data", msgs, tables=False)
    res = run_replay(load_config(cfg), files["jsonl"], tmp_path / "replay", chunk_rows=100)
    assert table_dump(SqliteTarget(tmp_path / "replay" / "driftwarden.db")) == live
    assert len(live["windows"]) >= 6 * 4  # every window of the clean stream closed

    def dead(db: Path) -> list[tuple[int, str]]:
        s = Store(db, readonly=True)
        try:
            rows = s.query('SELECT "offset", reason FROM dead_letters ORDER BY "offset"')
        finally:
            s.close()
        # "too far in the future: 2082...s ahead": seconds differ between the runs
        return [(r["offset"], re.sub(r"\d+s ahead", "Ns ahead", r["reason"])) for r in rows]

    live_dead = dead(tmp_path / "live" / "state" / "driftwarden.db")
    assert [o for o, _ in live_dead] == at
    assert dead(tmp_path / "replay" / "driftwarden.db") == live_dead
    assert res.dead_letters == len(bad) and res.rows == len(msgs) - len(bad) and res.late_rows == 0


def test_rules_fire_without_notifying_unless_asked(tmp_path: Path) -> None:
    msgs = stream(windows=6, per_window=200, shift_from=3, seed=17)
    files = _files(tmp_path / "data", msgs)
    with WebhookSink() as sink:
        cfg_path = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                                extra=RULE.format(url=sink.url + "/drift"))
        cfg = load_config(cfg_path)
        quiet = run_replay(cfg, files["jsonl"], tmp_path / "quiet")
        assert quiet.alerts_fired >= 1 and quiet.deliveries_sent == 0
        assert sink.requests == []
        store = Store(tmp_path / "quiet" / "driftwarden.db", readonly=True)
        try:
            assert store.query("SELECT COUNT(*) AS n FROM deliveries")[0]["n"] == 0  # nothing queued either
            assert store.query("SELECT state FROM alerts WHERE rule = 'drift'")[0]["state"] == "firing"
        finally:
            store.close()
        loud = run_replay(cfg, files["jsonl"], tmp_path / "loud", notify=True)
        assert loud.deliveries_sent >= 1
        assert len(sink.accepted()) == loud.deliveries_sent
        assert sink.accepted()[0].path == "/hooks/drift"



def test_a_replay_logs_the_transitions_its_windows_make(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A window's transitions are logged once its flush commits, as the daemon logs them
    (the replay logged only its ticks' transitions, and kept every window's in memory for
    the whole file)."""
    msgs = stream(windows=6, per_window=200, shift_from=3, seed=17)
    files = _files(tmp_path / "data", msgs)
    cfg_path = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                            extra=RULE.format(url="http://127.0.0.1:9/drift"))
    with caplog.at_level("INFO", logger="driftwarden"):
        result = run_replay(load_config(cfg_path), files["jsonl"], tmp_path / "r")
    fired = [r for r in caplog.records if getattr(r, "event", None) == "alert_transition"
             and r.transition == "firing"]
    assert result.alerts_fired >= 1
    assert len(fired) == result.alerts_fired and fired[0].rule == "drift"

def test_a_replay_returns_only_once_every_notification_is_answered_and_recorded(tmp_path: Path) -> None:
    """The outbox sends on lanes of their own; a replay closes its store when it returns,
    so it must wait for them. With a receiver that takes 0.5 s to answer, a replay that
    only started the lanes returned with the request unanswered and its delivery never
    recorded (the lane then met a closed database)."""
    msgs = stream(windows=6, per_window=200, shift_from=3, seed=17)
    files = _files(tmp_path / "data", msgs)
    with WebhookSink() as sink:
        sink.hold(max_seconds=0.5)  # every request answered after 0.5 s
        cfg_path = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                                extra=RULE.format(url=sink.url + "/drift"))
        result = run_replay(load_config(cfg_path), files["jsonl"], tmp_path / "slow", notify=True)
        assert result.deliveries_sent >= 1
        assert len(sink.accepted()) == result.deliveries_sent
        store = Store(tmp_path / "slow" / "driftwarden.db", readonly=True)
        try:
            rows = store.query("SELECT status, attempts FROM deliveries")
        finally:
            store.close()
        assert rows and all(r["status"] == "sent" and r["attempts"] == 1 for r in rows)
        assert len(rows) == result.deliveries_sent


def test_a_replay_counts_what_was_delivered_not_what_was_tried(tmp_path: Path) -> None:
    """A receiver that answers 503 got requests but no notification: the summary says none
    was delivered and how many stay pending (it used to count the attempts as sent)."""
    msgs = stream(windows=6, per_window=200, shift_from=3, seed=17)
    files = _files(tmp_path / "data", msgs)
    with WebhookSink() as sink:
        sink.set_down(True)  # 503 to everything
        cfg_path = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                                extra=RULE.format(url=sink.url + "/drift"))
        result = run_replay(load_config(cfg_path), files["jsonl"], tmp_path / "down", notify=True)
        assert len(sink.requests) >= 1 and sink.accepted() == []
    assert result.alerts_fired >= 1
    assert result.deliveries_sent == 0 and result.deliveries_dead == 0
    assert result.deliveries_pending >= 1
    store = Store(tmp_path / "down" / "driftwarden.db", readonly=True)
    try:
        pending = store.query("SELECT COUNT(*) AS n FROM deliveries WHERE status = 'pending'")[0]["n"]
    finally:
        store.close()
    assert pending == result.deliveries_pending


def test_bad_rows_are_dead_letters_and_good_rows_count(tmp_path: Path) -> None:
    """Rows are judged by the live decoder: its reason codes and wording, a number given as
    text is a dead letter (it was counted as a missing value before, unlike live)."""
    msgs = stream(windows=2, per_window=100, shift_from=9, seed=3)
    rows = [orjson.loads(m) for m in msgs]
    rows[5]["model"] = "fraud"
    rows[6]["ts"] = "yesterday"
    del rows[7]["ts"]
    rows[8]["features"]["age"] = "forty"
    files = _files(tmp_path / "data", [orjson.dumps(r) for r in rows], tables=False)
    cfg = load_config(write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9))
    res = run_replay(cfg, files["jsonl"], tmp_path / "out")
    assert (res.rows, res.dead_letters) == (196, 4)
    store = Store(tmp_path / "out" / "driftwarden.db", readonly=True)
    try:
        dead = store.query('SELECT topic, "offset", reason, payload FROM dead_letters ORDER BY "offset"')
    finally:
        store.close()
    assert [(d["topic"], d["offset"], d["reason"]) for d in dead] == [
        ("replay:events.jsonl", 5, "unknown_model: fraud"),
        ("replay:events.jsonl", 6, "bad_type: ts is not an RFC 3339 time: 'yesterday'"),
        ("replay:events.jsonl", 7, "missing_field: ts (and the record has no timestamp)"),
        ("replay:events.jsonl", 8, "bad_type: features.age expected number, got string"),
    ]
    # the payload is the message as the file holds it, not a flattened row
    assert bytes(dead[1]["payload"]) == orjson.dumps(rows[6])


def test_a_shared_store_config_replays_into_its_own_sqlite_file(tmp_path: Path) -> None:
    """With ``[storage] url`` set, a replay still writes only its --state-dir's SQLite file:
    the database (here a port nobody listens on) is never contacted."""
    cfg_path = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9,
                            extra='\n[storage]\nurl = "postgresql://driftwarden@127.0.0.1:9/nowhere"\n')
    cfg = load_config(cfg_path)
    assert cfg.storage.url is not None
    files = _files(tmp_path / "data", stream(windows=2, per_window=100, shift_from=9, seed=3), tables=False)
    res = run_replay(cfg, files["jsonl"], tmp_path / "out")
    assert (res.rows, res.dead_letters) == (200, 0)
    store = Store(tmp_path / "out" / "driftwarden.db", readonly=True)
    try:
        assert store.query("SELECT COUNT(*) AS n FROM windows")[0]["n"] == res.windows >= 2
    finally:
        store.close()


@pytest.mark.sqlite_only("a daemon's SQLite file in the folder given to the replay")
def test_replay_never_writes_into_a_folder_it_did_not_make(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9))
    files = _files(tmp_path / "data", stream(windows=1, per_window=50, shift_from=9))
    live_state = tmp_path / "live-state"
    live_state.mkdir()
    (live_state / "driftwarden.db").write_text("the daemon's")
    with pytest.raises(ReplayError, match="holds files a replay did not create"):
        run_replay(cfg, files["jsonl"], live_state)
    assert (live_state / "driftwarden.db").read_text() == "the daemon's"
    run_replay(cfg, files["jsonl"], tmp_path / "again")
    assert (tmp_path / "again" / REPLAY_MARKER).is_file()
    run_replay(cfg, files["jsonl"], tmp_path / "again")  # its own folder: rewritten


PERFORMANCE = """
[models.performance]
enabled = true
baseline_version = "v1"

[[rules]]
name = "canary"
metric = "accuracy_worse_p"
op = "<"
threshold = 0.01

[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.5
"""


def test_a_replay_says_labels_are_not_replayed_and_which_rules_cannot_fire(tmp_path: Path) -> None:
    """A file's rows are predictions: with a model joining labels, the replay says so before
    it runs and names the rules on labelled figures (they stayed silent with no word said,
    a `label` field in the rows notwithstanding); rules on figures of the predictions are not named."""
    from typer.testing import CliRunner

    from monitor.cli.app import app

    msgs = [orjson.dumps({**orjson.loads(m), "label": 1}) for m in stream(windows=3, per_window=100, shift_from=9)]
    files = _files(tmp_path / "data", msgs, tables=False)
    cfg_path = write_config(tmp_path / "conf", bootstrap="127.0.0.1:9", topic="t", http_port=9, extra=PERFORMANCE)
    out = CliRunner().invoke(app, ["replay", "-c", str(cfg_path), str(files["jsonl"]),
                                   "--state-dir", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert out.stderr.splitlines()[0] == (
        "driftwarden: note: labels are not replayed (a file's rows are predictions; a label field in them is"
        " not read): the performance figures of model(s) churn stay unlabelled, so rule(s) canary cannot fire"
        " in this replay; drift, quality and estimated_* figures come from the predictions and are replayed;"
        " --labels FILE replays a file of label events"
    )
    assert out.stdout.startswith("replayed 300 rows:")
    # without a model joining labels, no note
    plain = write_config(tmp_path / "plain", bootstrap="127.0.0.1:9", topic="t", http_port=9)
    out = CliRunner().invoke(app, ["replay", "-c", str(plain), str(files["jsonl"]), "--state-dir", str(tmp_path / "p")])
    assert out.exit_code == 0, out.output
    assert "note:" not in out.stderr


@pytest.mark.parametrize(
    ("metric", "labelled"),
    [("accuracy", True), ("accuracy_worse_p", True), ("f1_delta", True), ("mae_segment_gap", True),
     ("roc_auc_estimation_error", True), ("label_coverage", True), ("label_drift", True),
     ("estimated_accuracy", False), ("drift_share", False), ("row_count", False), ("no_data", False)],
)
def test_needs_labels_tells_labelled_figures_from_those_of_the_predictions(metric: str, labelled: bool) -> None:
    from monitor.metric_names import needs_labels

    assert needs_labels(metric) is labelled


def test_the_replay_note_names_a_rule_on_labels_unknown_class(tmp_path: Path) -> None:
    """``labels_unknown_class`` counts joined labels: a replay has none, so a rule on it
    cannot fire either and the note names it with the others (it was left out)."""
    from monitor.config import load_config
    from monitor.service.replay import unlabelled_note

    extra = PERFORMANCE + '\n[[rules]]\nname = "stale-classes"\nmetric = "labels_unknown_class"\nop = ">"\nthreshold = 0\n'
    cfg = load_config(write_config(tmp_path, bootstrap="127.0.0.1:9", topic="t", http_port=9, extra=extra))
    note = unlabelled_note(cfg)
    assert note is not None and "so rule(s) canary, stale-classes cannot fire" in note
