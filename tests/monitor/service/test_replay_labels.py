"""driftwarden replay --labels: a label file goes through the live label join interleaved
with the predictions in event time; the performance windows equal a live run's over the
same predictions and labels, rules on labelled figures fire at event times, bad label rows
are dead letters, and the files are read in bounded chunks."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.replay import ReplayError, run_replay
from monitor.service.replay_source import ReplaySource, ReplaySourceError, merged
from storage.db import Store
from storage.labels import label_counters
from tests.monitor.daemon_helpers import produce, table_dump, wait_for
from tests.monitor.fault_helpers import finished, start_daemon, terminate, wait_ready
from tests.monitor.labels.broker_helpers import labels_done, perf_dump
from tests.monitor.labels.helpers import label_config, labels_for, predictions
from tests.monitor.labels.test_join import scenario
from tests.store_targets import SqliteTarget, open_state_store

ACCURACY_RULE = """
[[rules]]
name = "accuracy-low"
metric = "accuracy"
op = "<"
threshold = 0.6
"""


def _jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return path


def _replay_dump(state: Path) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    db = state / "driftwarden.db"
    return table_dump(SqliteTarget(db)), perf_dump(db)


@pytest.mark.broker
@pytest.mark.slow
def test_a_replay_with_labels_stores_the_performance_windows_of_a_live_run(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Labels delayed 20-40 min, shuffled, some never, some twice (the later flips the
    class): the live daemon over both topics and the replay over both files store the same
    windows and figures (performance ones with their intervals) and join the same labels."""
    tag = uuid.uuid4().hex[:8]
    preds_topic, labels_topic = f"preds-{tag}", f"labels-{tag}"
    broker.create_topic(preds_topic)
    broker.create_topic(labels_topic)
    preds, labs = scenario(seed=8)
    labels = [ev for ev, _p, _o in labs]
    cfg = label_config(tmp_path / "live", bootstrap=broker.bootstrap, topic=preds_topic, labels_topic=labels_topic,
                       http_port=free_port(), extra=ACCURACY_RULE, group=f"g-{tag}")
    produce(broker.bootstrap, preds_topic, [orjson.dumps(p) for p in preds])
    produce(broker.bootstrap, labels_topic, [orjson.dumps(lab) for lab in labels])
    db = tmp_path / "live" / "state" / "driftwarden.db"
    proc = start_daemon(cfg, log=tmp_path / "daemon.log")
    try:
        assert wait_ready(cfg), "daemon not ready"
        assert wait_for(lambda: finished(db, len(preds), all_closed=True) and labels_done(db, len(labels)),
                        timeout=60)
    finally:
        assert terminate(proc) == 0
    live = table_dump(db), perf_dump(db)
    live_joined = label_counters(open_state_store(db))["churn"]["joined"]
    assert len(live[1]) > 0 and live_joined > 0

    data = _jsonl(tmp_path / "data" / "events.jsonl", preds)
    label_file = _jsonl(tmp_path / "data" / "labels.jsonl", labels)
    # the command line, as a user runs it
    out = subprocess.run(
        [sys.executable, "-m", "monitor.cli.app", "replay", "-c", str(cfg), str(data), "--labels", str(label_file),
         "--state-dir", str(tmp_path / "r-jsonl")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0].startswith(
        f"replayed 1200 rows and {len(labels)} labels ({live_joined} joined, 0 dead letters): 24 windows,"
    )
    assert "note:" not in out.stderr  # the labels are replayed: no word that they are not
    assert f"{1200 + len(labels)}/{1200 + len(labels)}" in out.stderr  # the progress bar counts both files
    assert _replay_dump(tmp_path / "r-jsonl") == live
    # labels as CSV and Parquet tables, the predictions in small chunks (many flushes)
    frame = pd.DataFrame(labels)
    frame.to_csv(tmp_path / "data" / "labels.csv", index=False)
    frame.to_parquet(tmp_path / "data" / "labels.parquet", index=False)
    for kind in ("csv", "parquet"):
        res = run_replay(load_config(cfg), data, tmp_path / f"r-{kind}", labels=tmp_path / "data" / f"labels.{kind}",
                         chunk_rows=97)
        assert res.labels_read == len(labels) and res.labels_joined == live_joined, kind
        assert _replay_dump(tmp_path / f"r-{kind}") == live, kind


def _drop_files(folder: Path, **kw: Any) -> tuple[Path, Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Six one-minute windows; labels 30 s after their predictions, from window 3 on
    two in three flipped (accuracy falls from about 0.8 to about 0.4)."""
    preds = predictions(windows=6, per_window=200, seed=11)
    labels = labels_for(preds, delay_ms=30_000, accuracy_drop_from=3, drop=0.66, per_window=200, **kw)
    return _jsonl(folder / "events.jsonl", preds), _jsonl(folder / "labels.jsonl", labels), preds, labels


def test_an_accuracy_rule_fires_in_the_replay_on_a_labelled_drop(tmp_path: Path) -> None:
    """The rule fires at the event time the first bad window matured (its end plus
    ``labels.delay`` = 2 min on the join's clock), not at the end of the file nor at the
    wall clock; without --labels it cannot fire."""
    from typer.testing import CliRunner

    from monitor.cli.app import app

    data, label_file, _preds, labels = _drop_files(tmp_path / "data")
    cfg_path = label_config(tmp_path / "conf", extra=ACCURACY_RULE)
    cfg = load_config(cfg_path)
    out = CliRunner().invoke(app, ["replay", "-c", str(cfg_path), str(data), "--labels", str(label_file),
                                   "--state-dir", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0] == (
        "replayed 1200 rows and 1200 labels (1200 joined, 0 dead letters): 24 windows, 0 late rows, 0 dead letters,"
        " 1 alert(s) fired (notifications off; --notify sends them)"
    )
    assert "note:" not in out.stderr  # the labels are replayed
    store = Store(tmp_path / "r" / "driftwarden.db", readonly=True)
    (alert,) = store.query("SELECT rule, state, started_at, fired_at FROM alerts")
    assert alert["rule"] == "accuracy-low" and alert["state"] == "firing"
    # window 3 is 12:03-12:04; it matures once the join's clock (events of both files)
    # passes 12:06, the delay past its end: the rule fires then, within the file
    fired = datetime.fromisoformat(alert["fired_at"].replace("Z", "+00:00"))
    assert datetime(2026, 11, 23, 12, 6, tzinfo=UTC) <= fired < datetime(2026, 11, 23, 12, 6, 31, tzinfo=UTC)
    accuracy = {r["window_id"].split("|")[3][11:16]: r["value"] for r in store.query(
        "SELECT window_id, value FROM metrics WHERE metric = 'accuracy' AND window_id LIKE 'churn|v1||%'")}
    assert len(accuracy) == 6  # every window, the last ones computed at the end of the files
    assert all(accuracy[f"12:0{i}"] > 0.7 for i in range(3)) and all(accuracy[f"12:0{i}"] < 0.5 for i in (3, 4, 5))
    store.close()
    quiet = run_replay(cfg, data, tmp_path / "q")
    assert quiet.alerts_fired == 0 and quiet.labels_read == 0
    # a label file that is not there: refused before anything is replayed
    out = CliRunner().invoke(app, ["replay", "-c", str(cfg_path), str(data), "--labels", str(tmp_path / "none.csv"),
                                   "--state-dir", str(tmp_path / "n")])
    assert out.exit_code == 2 and f"--labels: no file {tmp_path / 'none.csv'}" in out.stderr


def test_labels_stamped_before_their_prediction_wait_and_join_it(tmp_path: Path) -> None:
    """A label stamped a second before its prediction comes first in the replay: it waits
    as an early label and joins when the prediction comes, as live (a flush per row here:
    in one flush a label meets its prediction at once); one stamped after the prediction
    plus ``labels.ttl`` (1 h) is counted expired, never joined."""
    preds = predictions(windows=2, per_window=50, seed=3)
    labels = [{**lab, "ts": int(lab["ts"]) - 1000} for lab in labels_for(preds)]
    labels[0] = {**labels[0], "ts": int(preds[0]["ts"]) + 2 * 3_600_000}
    data = _jsonl(tmp_path / "events.jsonl", preds)
    label_file = _jsonl(tmp_path / "labels.jsonl", sorted(labels, key=lambda e: e["ts"]))
    cfg = load_config(label_config(tmp_path / "conf"))
    res = run_replay(cfg, data, tmp_path / "r", labels=label_file, chunk_rows=1)
    assert res.labels_read == 100 and res.labels_joined == 99
    counters = label_counters(Store(tmp_path / "r" / "driftwarden.db", readonly=True))["churn"]
    assert counters["early"] == 99 and counters["joined"] == 99 and counters["expired_labels"] == 1


def test_bad_label_rows_are_dead_letters_and_the_replay_goes_on(tmp_path: Path) -> None:
    """The label decoder's reason codes (missing label, unknown model, a class the
    reference lacks, a bad time), and the file's own refusals (a row over
    ``kafka.max_message_bytes``, a CSV row with too many cells), each a dead letter of
    topic ``replay:<label file>``; the good labels are joined."""
    preds = predictions(windows=2, per_window=50, seed=4)
    good = labels_for(preds, delay_ms=10_000)
    ts = int(good[-1]["ts"])
    header = "event_id,model,label,ts"
    rows = [f"{g['event_id']},churn,{g['label']},{g['ts']}" for g in good]
    bad = [
        f"{preds[0]['event_id']},churn,,{ts}",  # missing_field: label
        f"{preds[1]['event_id']},fraud,1,{ts}",  # unknown_model
        f"{preds[2]['event_id']},churn,maybe,{ts}",  # bad_type: none of the reference's classes
        f"{preds[3]['event_id']},churn,1,yesterday",  # bad_type: the time
        f"{preds[4]['event_id']},churn,1,{ts},extra",  # bad_csv: five cells
        f"{preds[5]['event_id']},churn,1,{ts}," + "x" * 3000,  # too_large (limit below)
    ]
    label_file = tmp_path / "labels.csv"
    label_file.write_text("\n".join([header, *rows[:50], *bad, *rows[50:]]) + "\n")
    data = _jsonl(tmp_path / "events.jsonl", preds)
    cfg_path = label_config(tmp_path / "conf")
    cfg_path.write_text(cfg_path.read_text().replace("[kafka]\n", "[kafka]\nmax_message_bytes = 2048\n", 1))
    res = run_replay(load_config(cfg_path), data, tmp_path / "r", labels=label_file)
    assert res.labels_read == 106 and res.label_dead_letters == 6 and res.labels_joined == 100
    assert res.dead_letters == 0 and res.rows == 100  # the predictions' count is the predictions'
    store = Store(tmp_path / "r" / "driftwarden.db", readonly=True)
    dead = [(r["topic"], r["offset"], r["reason"].split(":", 1)[0]) for r in store.query(
        'SELECT topic, "offset", reason FROM dead_letters ORDER BY "offset"')]
    assert dead == [("replay:labels.csv", 50 + i, code) for i, code in enumerate(
        ["missing_field", "unknown_model", "bad_type", "bad_type", "bad_csv", "too_large"])]


def test_a_label_file_is_read_in_bounded_chunks_in_event_time_order(tmp_path: Path) -> None:
    """The two files are merged row by row in event time (each read in its own order), in
    groups of at most ``chunk_rows`` rows: no whole file is held."""
    preds = predictions(windows=3, per_window=100, seed=5)
    labels = labels_for(preds, delay_ms=20_000)
    cfg = load_config(label_config(tmp_path / "conf"))
    now = datetime.now(UTC)
    source = ReplaySource(cfg, _jsonl(tmp_path / "events.jsonl", preds), chunk_rows=64, received_at=now)
    label_source = ReplaySource(cfg, _jsonl(tmp_path / "labels.jsonl", labels), chunk_rows=64, received_at=now,
                                labels=True, topic="replay:labels.jsonl")
    groups = list(merged(source, label_source))
    assert max(sum(c.rows for c in g) for g in groups) == 64
    assert all([c.labels for c in g] in ([False], [True], [False, True]) for g in groups)
    times = [[orjson.loads(r.value)["ts"] for c in g for r in c.records] for g in groups]
    assert sum(map(len, times)) == 600
    # each flush's rows come after the last flush's, in event time (a tie: the prediction first)
    assert all(max(a) <= min(b) for a, b in zip(times, times[1:], strict=False))
    assert [c.labels for c in groups[0]] == [False, True]  # labels 20 s late: in the first flush already
    assert sum(len(c.records) for g in groups for c in g if c.labels) == 300


def test_a_label_file_the_replay_cannot_use_is_refused_before_it_starts(tmp_path: Path) -> None:
    preds = predictions(windows=1, per_window=10)
    data = _jsonl(tmp_path / "events.jsonl", preds)
    no_label = _jsonl(tmp_path / "nolabel.jsonl", [{"event_id": p["event_id"], "model": "churn", "ts": p["ts"]}
                                                   for p in preds])
    cfg = load_config(label_config(tmp_path / "conf"))
    with pytest.raises(ReplaySourceError, match='--labels: no "label" field \\(the label\\)'):
        run_replay(cfg, data, tmp_path / "r", labels=no_label)
    assert not (tmp_path / "r").exists()  # refused before the folder was touched
    from tests.monitor.daemon_helpers import write_config

    plain = load_config(write_config(tmp_path / "plain", bootstrap="127.0.0.1:9", topic="t", http_port=9))
    labels = _jsonl(tmp_path / "labels.jsonl", labels_for(preds))
    with pytest.raises(ReplayError, match="--labels: no model joins labels"):
        run_replay(plain, data, tmp_path / "r", labels=labels)


def test_a_label_file_with_no_json_object_replays_as_dead_letters_not_a_traceback(tmp_path: Path) -> None:
    """An empty label file, one of blank lines, one of lines that are not JSON: no field
    to check, so no refusal; the replay runs (every non-blank line a ``not_json`` dead
    letter, as live) instead of failing with a TypeError. The same for a predictions
    file with no JSON object."""
    preds = predictions(windows=1, per_window=60, seed=6)
    data = _jsonl(tmp_path / "events.jsonl", preds)
    cfg = load_config(label_config(tmp_path / "conf"))
    cases = {"empty.jsonl": (b"", 0), "blank.jsonl": (b"\n\n", 0), "garbage.jsonl": (b"garbage\nmore\n", 2)}
    for name, (text, dead) in cases.items():
        (tmp_path / name).write_bytes(text)
        res = run_replay(cfg, data, tmp_path / f"r-{name}", labels=tmp_path / name)
        assert (res.rows, res.labels_read, res.label_dead_letters, res.labels_joined) == (60, dead, dead, 0), name
    res = run_replay(cfg, tmp_path / "garbage.jsonl", tmp_path / "r-data")
    assert (res.rows, res.dead_letters, res.windows) == (0, 2, 0)


def test_a_label_file_out_of_time_order_by_more_than_the_ttl_is_said_not_silently_half_joined(
    tmp_path: Path,
) -> None:
    """A label file read in its own order (as a topic) whose rows go back in time by more
    than ``labels.ttl`` (1 h here; two hours of labels in reverse): the predictions of the
    labels that come that far behind have left the join, so they are not joined. The
    replay counts those rows and says so on stderr (sort the file by ts); a sorted file
    joins every label and gets no warning."""
    from typer.testing import CliRunner

    from monitor.cli.app import app

    preds = predictions(windows=120, per_window=5, seed=3)  # two hours
    labels = labels_for(preds, delay_ms=30_000)
    data = _jsonl(tmp_path / "events.jsonl", preds)
    cfg_path = label_config(tmp_path / "conf")
    cfg = load_config(cfg_path)
    back = _jsonl(tmp_path / "reversed.jsonl", sorted(labels, key=lambda e: -int(e["ts"])))
    res = run_replay(cfg, data, tmp_path / "r", labels=back, chunk_rows=50)
    assert res.labels_joined < len(labels)
    # behind the first labels by more than the hour: about the first hour's labels (the
    # first row goes at the earlier of its time and the next row's: the second newest)
    first = sorted((int(e["ts"]) for e in labels), reverse=True)[1]
    assert res.labels_out_of_order == sum(1 for e in labels if int(e["ts"]) < first - 3_600_000) > 0
    out = CliRunner().invoke(app, ["replay", "-c", str(cfg_path), str(data), "--labels", str(back),
                                   "--state-dir", str(tmp_path / "cli")])
    assert out.exit_code == 0, out.output
    assert (f"warning: {res.labels_out_of_order} label(s) of {back} are stamped more than labels.ttl (1h)"
            " before a label above them") in out.stderr
    ordered = _jsonl(tmp_path / "sorted.jsonl", sorted(labels, key=lambda e: int(e["ts"])))
    out = CliRunner().invoke(app, ["replay", "-c", str(cfg_path), str(data), "--labels", str(ordered),
                                   "--state-dir", str(tmp_path / "ok")])
    assert out.exit_code == 0 and "warning:" not in out.stderr
    assert f"and {len(labels)} labels ({len(labels)} joined, 0 dead letters)" in out.stdout


def test_labels_for_a_model_without_a_label_join_are_refused_saying_so(tmp_path: Path) -> None:
    """``--model`` naming a model whose performance is off: the refusal says that model
    has no label join (it said it had one)."""
    preds = predictions(windows=1, per_window=10)
    data = _jsonl(tmp_path / "events.jsonl", preds)
    labels = _jsonl(tmp_path / "labels.jsonl", labels_for(preds))
    cfg_path = label_config(tmp_path / "conf")
    text = cfg_path.read_text()
    second = ('[[models]]\nname = "fraud"\nreference = "reference.csv"\n[models.features]\n'
              'numerical = ["age"]\ncategorical = ["plan"]\n[models.window]\ntype = "tumbling"\nsize = "1m"\n\n')
    cfg_path.write_text(text.replace("[labels]\n", second + "[labels]\n", 1))
    cfg = load_config(cfg_path)
    assert [m.performance.enabled for m in cfg.models] == [True, False]
    with pytest.raises(ReplaySourceError) as err:
        run_replay(cfg, data, tmp_path / "r", labels=labels, model="fraud")
    assert str(err.value) == "--labels: model fraud has no label join ([models.performance] enabled = true)"


def test_one_label_row_stamped_far_ahead_does_not_hold_back_the_label_file(tmp_path: Path) -> None:
    """Two hours of sorted labels (``labels.ttl`` 1 h) with, near the top, a row stamped in
    year 9999 (a dead letter: beyond ``kafka.max_future_skew``) and a label stamped a day
    after its prediction (expired, as live). Neither may keep the rest of the label file
    waiting until the predictions file passed its time: the predictions would leave the
    join before their labels came (half of them were never joined). The stored figures
    are those of the file without the two rows; a predictions row stamped far ahead
    likewise does not hold the predictions back."""
    preds = predictions(windows=120, per_window=5, seed=3)  # two hours
    labels = sorted(labels_for(preds, delay_ms=30_000), key=lambda e: int(e["ts"]))
    data = _jsonl(tmp_path / "events.jsonl", preds)
    cfg = load_config(label_config(tmp_path / "conf"))
    clean = run_replay(cfg, data, tmp_path / "clean", labels=_jsonl(tmp_path / "clean.jsonl", labels), chunk_rows=50)
    assert clean.labels_joined == len(labels)
    day_late = {**labels[1], "ts": int(labels[1]["ts"]) + 86_400_000}
    far = {**labels[2], "ts": "9999-12-31T23:59:59Z"}
    hostile = _jsonl(tmp_path / "hostile.jsonl", [labels[0], far, day_late, *labels[1:]])
    res = run_replay(cfg, data, tmp_path / "r", labels=hostile, chunk_rows=50)
    assert (res.labels_read, res.label_dead_letters, res.labels_joined) == (len(labels) + 2, 1, len(labels))
    assert res.labels_out_of_order == 0
    assert perf_dump(tmp_path / "r" / "driftwarden.db") == perf_dump(tmp_path / "clean" / "driftwarden.db")
    # the predictions file: one row stamped far ahead (a dead letter) near the top
    ahead = {**preds[3], "event_id": "ahead", "ts": "9999-12-31T23:59:59Z"}
    data2 = _jsonl(tmp_path / "events2.jsonl", [*preds[:3], ahead, *preds[3:]])
    res = run_replay(cfg, data2, tmp_path / "r2", labels=tmp_path / "clean.jsonl", chunk_rows=50)
    assert (res.dead_letters, res.labels_joined) == (1, len(labels))
    assert perf_dump(tmp_path / "r2" / "driftwarden.db") == perf_dump(tmp_path / "clean" / "driftwarden.db")
