"""The label join through the real Pipeline and a real store (no broker): delayed, early,
duplicated, missing, unknown and expired labels; figures equal scikit-learn's on the joined rows;
a late label changes only its performance window; the join does not depend on arrival order.
Tests taking ``store_target`` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm

from storage.labels import label_counters, pending_predictions
from tests.monitor.daemon_helpers import START
from tests.monitor.labels.helpers import (
    NOW_MS,
    Clock,
    Rec,
    expected_join,
    label_config,
    labels_for,
    metric,
    perf_rows,
    pipeline,
    predictions,
    records,
)
from tests.store_targets import StoreTarget, state_cli_args

MIN = 60_000


def settle(p: Any, clock: Clock, rounds: int = 20) -> None:
    """Let due recomputes run: move the wall clock past recompute_interval and flush."""
    for _ in range(rounds):
        clock.advance(seconds=2)
        p.tick()
        p.flush()
        if not p.store.query("SELECT 1 FROM label_slots WHERE dirty = 1 OR (computed_at IS NULL AND rows > 0)"):
            return


def feed(p: Any, clock: Clock, recs: list[Rec], labels: bool, batch: int = 250) -> None:
    for i in range(0, len(recs), batch):
        chunk = recs[i : i + batch]
        if labels:
            p.process_label_records(chunk)
        else:
            p.process_records(chunk)
        p.flush()
        clock.advance(seconds=2)


def scenario(seed: int = 3) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], int, int]]]:
    """Predictions, and labels (with the partition/offset they will be read at): 10 % never
    labelled, 8 % labelled twice (the later label flips the class), shuffled, delayed 20-40 min."""
    preds = predictions(windows=6, per_window=200)
    rng = random.Random(seed)
    labs = labels_for(preds, seed=seed)
    out: list[dict[str, Any]] = []
    for ev in labs:
        r = rng.random()
        if r < 0.10:
            continue
        ev = {**ev, "ts": int(ev["ts"]) + rng.randint(20, 40) * MIN}
        out.append(ev)
        if r > 0.92:
            out.append({**ev, "label": 1 - int(ev["label"]), "ts": int(ev["ts"]) + rng.randint(1, 5) * MIN})
    rng.shuffle(out)
    return preds, [(ev, 0, i) for i, ev in enumerate(out)]


def expected_figures(preds: list[dict[str, Any]], joined: dict[str, Any], window_start_ms: int, segment: str) -> dict[str, float]:
    rows = [
        p for p in preds
        if window_start_ms <= int(p["ts"]) < window_start_ms + MIN and p["event_id"] in joined
        and (segment == "" or f"region={p['segment']['region']}" == segment)
    ]
    y = np.array([int(joined[p["event_id"]]) == 1 for p in rows])
    s = np.array([float(p["prediction"]) for p in rows])
    pred = s >= 0.5
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, s),
        "log_loss": skm.log_loss(y, s, labels=[False, True]),
        "brier": skm.brier_score_loss(y, s),
        "labelled_rows": float(len(rows)),
    }


def test_figures_equal_sklearn_on_the_joined_rows(tmp_path: Path, store_target: StoreTarget) -> None:
    preds, labs = scenario()
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, delay="2m"), clock, target=store_target)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, [Rec("labels", part, off, NOW_MS, orjson.dumps(ev)) for ev, part, off in labs], labels=True)
    settle(p, clock)
    joined = expected_join(preds, labs, ttl_ms=3_600_000)
    windows = store.query(
        "SELECT DISTINCT window_id FROM metrics WHERE family = 'performance' ORDER BY window_id"
    )
    ids = [w["window_id"] for w in windows]
    # 6 one-minute windows x (all rows + 3 regions), one version
    assert len(ids) == 24
    compared = 0
    for wid in ids:
        _m, version, segment, start, _end = wid.split("|")
        start_ms = int(np.datetime64(start.replace("Z", "")).astype("datetime64[ms]").astype(np.int64))
        exp = expected_figures(preds, joined, start_ms, segment)
        if exp["labelled_rows"] < 50:  # window.min_rows: counts only, no figures
            assert metric(store, wid, "accuracy") is None
            assert metric(store, wid, "labelled_rows") == exp["labelled_rows"]
            continue
        for name, value in exp.items():
            got = metric(store, wid, name)
            assert got is not None and abs(got - value) <= 1e-12 * max(1.0, abs(value)), (wid, name, got, value)
            compared += 1
        n_preds = sum(1 for q in preds if start_ms <= int(q["ts"]) < start_ms + MIN
                      and (segment == "" or f"region={q['segment']['region']}" == segment))
        assert metric(store, wid, "label_coverage") == pytest.approx(exp["labelled_rows"] / n_preds, rel=1e-15)
        ci = store.query("SELECT ci_low, ci_high, value FROM metrics WHERE window_id = ? AND metric = 'roc_auc'", (wid,))[0]
        assert ci["ci_low"] <= ci["value"] <= ci["ci_high"]
    assert compared >= 12 * 8
    # the drift windows are untouched: their data figures sit beside the performance ones
    assert store.query("SELECT COUNT(*) AS n FROM windows")[0]["n"] == 24
    assert store.query("SELECT COUNT(*) AS n FROM metrics WHERE family = 'data' AND metric = 'row_count'")[0]["n"] == 24
    c = label_counters(store)["churn"]
    n_labels = len(labs)
    assert c["labels"] == n_labels
    assert c["joined"] == len(joined)
    assert c["duplicate_labels"] == n_labels - len(joined)
    assert c["predictions"] == len(preds) and c["duplicate_predictions"] == 0
    # label drift against the reference's labels, with the test named
    d = store.query("SELECT \"column\", test, threshold FROM metrics WHERE metric = 'label_drift' LIMIT 1")[0]
    assert d["column"] == "label" and d["test"] and d["threshold"] is not None


def test_a_late_label_changes_its_performance_window_and_nothing_else(tmp_path: Path, store_target: StoreTarget) -> None:
    preds, labs = scenario(seed=4)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path), clock, target=store_target)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, [Rec("labels", part, off, NOW_MS, orjson.dumps(ev)) for ev, part, off in labs], labels=True)
    settle(p, clock)
    before_perf = perf_rows(store)
    before_data = perf_rows(store, "data")
    windows_before = store.query("SELECT id, rows, status FROM windows ORDER BY id")
    # an unlabelled prediction of window 2 gets its label late
    joined = expected_join(preds, labs, ttl_ms=3_600_000)
    target = next(q for q in preds[400:600] if q["event_id"] not in joined)
    late = {"event_id": target["event_id"], "model": "churn", "label": 1, "ts": int(target["ts"]) + 50 * MIN}
    p.process_label_records([Rec("labels", 0, len(labs), NOW_MS, orjson.dumps(late))])
    p.flush()
    settle(p, clock)
    after_perf = perf_rows(store)
    assert perf_rows(store, "data") == before_data
    assert store.query("SELECT id, rows, status FROM windows ORDER BY id") == windows_before
    changed = {r[0] for r in set(after_perf) ^ set(before_perf)}
    region = f"region={target['segment']['region']}"
    assert changed == {
        "churn|v1||2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z",
        f"churn|v1|{region}|2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z",
    }
    wid = "churn|v1||2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z"
    before = {r[2]: r[3] for r in before_perf if r[0] == wid}
    assert metric(store, wid, "labelled_rows") == before["labelled_rows"] + 1


def test_arrival_order_does_not_change_the_result(tmp_path: Path) -> None:
    """Labels before, after, or interleaved with their predictions: the same tables."""
    preds, labs = scenario(seed=5)
    label_recs = [Rec("labels", part, off, NOW_MS, orjson.dumps(ev)) for ev, part, off in labs]
    pred_recs = records("predictions", preds)
    results = []
    for order in ("labels-last", "labels-first", "interleaved"):
        clock = Clock()
        _cfg, store, p = pipeline(label_config(tmp_path / order, early_ttl="2h"), clock)
        if order == "labels-last":
            feed(p, clock, pred_recs, labels=False)
            feed(p, clock, label_recs, labels=True)
        elif order == "labels-first":
            feed(p, clock, label_recs, labels=True)
            feed(p, clock, pred_recs, labels=False)
        else:
            for i in range(0, max(len(pred_recs), len(label_recs)), 97):
                p.process_label_records(label_recs[i : i + 97])
                p.process_records(pred_recs[i : i + 97])
                p.flush()
                clock.advance(seconds=2)
        settle(p, clock)
        c = label_counters(store)["churn"]
        results.append((perf_rows(store), perf_rows(store, "data"), c["joined"], c["duplicate_labels"]))
        if order == "labels-first":
            assert c["early"] > 0
    assert results[0] == results[1] == results[2]


def test_expired_unmatched_and_unlabelled_are_counted(tmp_path: Path, store_target: StoreTarget) -> None:
    preds = predictions(windows=3, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, ttl="1h", early_ttl="30m"), clock, target=store_target)
    feed(p, clock, records("predictions", preds), labels=False)
    labs = labels_for(preds[:200])
    for ev in labs:
        ev["ts"] = int(ev["ts"]) + 10 * MIN
    late = labs[:20]
    for ev in late:
        ev["ts"] = int(ev["ts"]) + 2 * 60 * MIN  # later than the prediction's ts + ttl
    ghosts = [{"event_id": f"ghost-{i}", "model": "churn", "label": 1, "ts": int(preds[0]["ts"]) + i} for i in range(7)]
    feed(p, clock, records("labels", ghosts + labs[20:]), labels=True)
    settle(p, clock)
    c = label_counters(store)["churn"]
    assert c["joined"] == 180 and c["early"] == 7 and c["expired_labels"] == 0
    assert pending_predictions(store)["churn"] == (300, 180)
    # labels 2 h after their predictions: expired, and they move the stream's clock on,
    # so the predictions leave the join and the ghosts give up waiting
    p.process_label_records(records("labels", late, start=500))
    p.flush()
    c = label_counters(store)["churn"]
    assert c["expired_labels"] == 20 and c["joined"] == 180
    assert c["expired_predictions"] == 120 and c["unmatched_labels"] == 7
    assert pending_predictions(store).get("churn", (0, 0)) == (0, 0)
    # the performance windows were computed before their rows left, and stay
    assert store.query("SELECT COUNT(DISTINCT window_id) AS n FROM metrics WHERE family = 'performance'")[0]["n"] == 12
    assert store.query("SELECT COUNT(*) AS n FROM label_slots")[0]["n"] == 0


def test_bad_labels_are_dead_letters_and_a_poison_label_is_isolated(tmp_path: Path) -> None:
    preds = predictions(windows=2, per_window=100)
    clock = Clock()
    cfg_path = label_config(tmp_path, extra='\n[[models]]\nname = "other"\nreference = "reference.csv"\n'
                            'features.numerical = ["age"]\n')
    _cfg, store, p = pipeline(cfg_path, clock)
    feed(p, clock, records("predictions", preds), labels=False)
    bad = [
        b"not json",
        orjson.dumps({"event_id": "x", "model": "nope", "label": 1}),
        orjson.dumps({"event_id": "x", "model": "other", "label": 1}),
        orjson.dumps({"event_id": "x", "model": "churn"}),
        orjson.dumps({"event_id": "x", "model": "churn", "label": 0.5}),
        orjson.dumps({"event_id": "x", "model": "churn", "label": [1]}),
        orjson.dumps({"event_id": "x", "model": "churn", "label": 1, "ts": "yesterday"}),
    ]
    good = [orjson.dumps(ev) for ev in labels_for(preds)]
    recs = [Rec("labels", 0, i, NOW_MS, v) for i, v in enumerate(bad + good)]
    p.process_label_records(recs)
    p.flush()
    reasons = [r["reason"] for r in store.query("SELECT reason FROM dead_letters WHERE topic = 'labels' ORDER BY \"offset\"")]
    assert [r.split(":", 1)[0] for r in reasons] == [
        "not_json", "unknown_model", "no_join", "missing_field", "bad_type", "bad_type", "bad_type",
    ]
    assert "expected a class" in reasons[4]
    assert label_counters(store)["churn"]["joined"] == 200
    assert p.labels is not None and p.labels.commit_offsets() == {0: len(recs)}


def test_a_score_models_label_of_a_class_its_reference_lacks_is_a_dead_letter(tmp_path: Path) -> None:
    """A score model counts every class but class_of_interest as the negative one: labels
    sent as ``"yes"``, ``"1.0"`` or ``true`` where the reference's are 0/1 were all read as
    negatives, silently, and the window's accuracy, recall and F1 were figures of labels
    nobody sent (accuracy 0.93 for a stream of nothing but such labels)."""
    preds = predictions(windows=2, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    good = labels_for(preds)
    odd = ["yes", "1.0", "true", " 1", "2"]
    for i, ev in enumerate(good[:50]):
        ev["label"] = odd[i % len(odd)]  # all text: the batch would take the fast path
    p.process_label_records(records("labels", good))
    flipped = labels_for(preds)[50:60]
    for ev in flipped:
        ev["label"] = bool(int(ev["label"]))  # booleans: the per-record path
    p.process_label_records(records("labels", flipped, start=len(good)))
    p.flush()
    reasons = [r["reason"] for r in store.query("SELECT reason FROM dead_letters WHERE topic = 'labels'")]
    assert len(reasons) == 60 and all(r.startswith("bad_type: label ") for r in reasons)
    assert "is none of the classes of the reference (0, 1)" in reasons[0]
    assert label_counters(store)["churn"]["joined"] == 150


def test_a_label_record_that_makes_processing_raise_is_dead_lettered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection through the decoder's spec lookup: one event id makes it raise."""
    preds = predictions(windows=2, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    assert p.labels is not None

    real_add = p.labels.add_labels

    def add(batches: Any) -> None:
        real_add(batches)
        if any("poison" in e for b in batches.values() for e in b.event_id):
            raise RuntimeError("injected fault")

    monkeypatch.setattr(p.labels, "add_labels", add)
    labs = labels_for(preds)
    payloads = [orjson.dumps(ev) for ev in labs]
    payloads.insert(50, orjson.dumps({"event_id": "poison-1", "model": "churn", "label": 1}))
    p.process_label_records([Rec("labels", 0, i, NOW_MS, v) for i, v in enumerate(payloads)])
    p.flush()
    dl = store.query("SELECT \"offset\", reason FROM dead_letters WHERE topic = 'labels'")
    assert [(d["offset"], d["reason"].split(":", 1)[0]) for d in dl] == [(50, "internal")]
    assert label_counters(store)["churn"]["joined"] == 200


def test_cli_windows_shows_coverage_and_performance(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli.app import app

    preds, labs = scenario(seed=6)
    clock = Clock()
    cfg, store, p = pipeline(label_config(tmp_path), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, [Rec("labels", part, off, NOW_MS, orjson.dumps(ev)) for ev, part, off in labs], labels=True)
    settle(p, clock)
    runner = CliRunner()
    where = state_cli_args(cfg.daemon.state_dir, tmp_path / "cli")
    out = runner.invoke(app, ["windows", *where, "--segment", "", "--json"])
    assert out.exit_code == 0, out.output
    rows = orjson.loads(out.output)["items"]
    w = next(r for r in rows if r["start"] == "2026-11-23T12:02:00.000Z")
    wid = w["id"]
    assert w["label_coverage"] == metric(store, wid, "label_coverage")
    acc = w["performance"]["accuracy"]
    assert acc["value"] == metric(store, wid, "accuracy") and acc["ci_low"] < acc["value"] < acc["ci_high"]
    table = runner.invoke(app, ["windows", *where, "--segment", ""], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "labelled" in table.output and "92%" in table.output and "accuracy 0." in table.output


def test_cli_status_shows_the_join(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from monitor.cli.app import app

    preds, labs = scenario(seed=7)
    clock = Clock()
    cfg, store, p = pipeline(label_config(tmp_path), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, [Rec("labels", part, off, NOW_MS, orjson.dumps(ev)) for ev, part, off in labs], labels=True)
    settle(p, clock)
    out = CliRunner().invoke(app, ["status", *state_cli_args(cfg.daemon.state_dir, tmp_path / "cli"), "--json"])
    assert out.exit_code == 0, out.output
    status = orjson.loads(out.output)["item"]
    assert status["label_join"]["churn"] == label_counters(store)["churn"]
    assert status["label_join"]["churn"]["joined"] > 1000 and status["performance_windows_waiting"] == 0


def test_absent_segment_values_and_nul_characters_go_through_the_join(tmp_path: Path, store_target: StoreTarget) -> None:
    """A prediction without a segment value is kept in the join with an "absent" marker
    PostgreSQL text can hold (it was U+0000: on PostgreSQL such a prediction failed every
    flush); a NUL in a prediction's or a label's text is stored as U+FFFD, on both stores.
    Absent values count in the window of all rows and in no segment's."""
    preds = predictions(windows=2, per_window=200)
    for ev in preds[:40]:
        del ev["segment"]["region"]
    for ev in preds[40:60]:
        ev["event_id"] += "\u0000"
    for ev in preds[60:70]:
        ev.update(version="v\u00002")
        ev["segment"]["region"] = "e\u0000u"
    labs = labels_for(preds)
    for ev in labs[40:50]:
        ev["label"] = f"{ev['label']}\u0000"
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, delay="2m"), clock, target=store_target)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, [Rec("labels", 0, i, NOW_MS, orjson.dumps(ev)) for i, ev in enumerate(labs)], labels=True)
    settle(p, clock)
    labelled = {r["window_id"]: r["value"] for r in store.query(
        "SELECT window_id, value FROM metrics WHERE family = 'performance' AND metric = 'labelled_rows'"
        " AND window_id LIKE 'churn|v1|%|2026-11-23T12:00:00.000Z|%'")}
    everything = labelled.pop("churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z")
    # the ten labels "0\x00"/"1\x00" read as "0\ufffd"/"1\ufffd": none of the reference's classes
    assert everything == 180 and sum(labelled.values()) == 140
    nul_ids = store.query("SELECT event_id FROM label_predictions WHERE event_id LIKE '%\ufffd' ORDER BY event_id")
    assert [r["event_id"] for r in nul_ids] == sorted(ev["event_id"].replace("\x00", "\ufffd") for ev in preds[40:60])
    refused = store.query("SELECT reason FROM dead_letters WHERE topic = 'labels'")
    assert len(refused) == 10 and all("\ufffd' is none of the classes" in r["reason"] for r in refused)
    versions = store.query("SELECT DISTINCT version, segment FROM windows WHERE version != 'v1' ORDER BY segment")
    assert [(r["version"], r["segment"]) for r in versions] == [("v\ufffd2", ""), ("v\ufffd2", "region=e\ufffdu")]


@pytest.mark.sqlite_only("U+0000 in SQLite text written by an older version; PostgreSQL text cannot hold it")
def test_absent_values_an_older_version_stored_as_nul_still_read_as_absent(tmp_path: Path) -> None:
    """SQLite databases written before the marker changed hold U+0000 for an absent segment
    value, until their predictions expire: they are read as absent, like the new marker."""
    preds = predictions(windows=2, per_window=200)
    for ev in preds[:40]:
        del ev["segment"]["region"]
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, delay="2m"), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    assert store.execute("UPDATE label_predictions SET segments = ? WHERE segments = ?", ("\x00", "\uffff")).rowcount == 40
    feed(p, clock, [Rec("labels", 0, i, NOW_MS, orjson.dumps(ev)) for i, ev in enumerate(labels_for(preds))], labels=True)
    settle(p, clock)
    labelled = {r["window_id"]: r["value"] for r in store.query(
        "SELECT window_id, value FROM metrics WHERE family = 'performance' AND metric = 'labelled_rows'"
        " AND window_id LIKE 'churn|v1|%|2026-11-23T12:00:00.000Z|%'")}
    assert labelled.pop("churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z") == 200
    assert sorted(labelled) == [f"churn|v1|region={r}|2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z"
                                for r in ("apac", "eu", "us")]
    assert sum(labelled.values()) == 160


def test_a_repeated_prediction_id_keeps_the_first_across_flushes_and_restarts(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """The join finds held ids in memory (no index by id in the table): an id seen again,
    in a later flush, twice in one batch, or after a restart (the memory built anew from
    the table), is a counted duplicate, and its label joins the first prediction."""
    preds = predictions(windows=3, per_window=100)
    first, rest = preds[:150], preds[150:]
    again = [{**ev, "ts": int(ev["ts"]) + 90_000, "prediction": 1.0 - float(ev["prediction"])} for ev in first[:40]]
    clock = Clock()
    cfg_path = label_config(tmp_path)
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)
    feed(p, clock, records("predictions", first), labels=False)
    p.process_records(records("predictions", rest[:50] + again[:20] + again[:5], start=150))
    p.flush()
    store.close()
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)  # a restart
    p.process_records(records("predictions", rest[50:] + again[20:], start=225))
    p.flush()
    c = label_counters(store)["churn"]
    assert c["predictions"] == len(preds) and c["duplicate_predictions"] == 20 + 5 + 20
    held = {r["event_id"]: (r["ts"], r["prediction"]) for r in store.query(
        "SELECT event_id, ts, prediction FROM label_predictions")}
    assert held == {ev["event_id"]: (int(ev["ts"]), pytest.approx(float(ev["prediction"]))) for ev in preds}
    feed(p, clock, records("labels", labels_for(first)), labels=True)
    c = label_counters(store)["churn"]
    assert c["joined"] == len(first) and c["early"] == 0
    assert pending_predictions(store)["churn"] == (len(preds), len(first))


def test_a_flush_rolled_back_after_its_prune_finds_the_predictions_it_had_dropped(
    tmp_path: Path, store_target: StoreTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush prunes the predictions past their ttl and its COMMIT fails (rolled back): the
    rows are back, and the retry must find them (the memory of held ids is built anew), so
    it ends as the flush that committed at once."""
    from storage.db import StorageError
    from tests.monitor.service.commit_helpers import cut_next_commit

    preds = predictions(windows=3, per_window=100)
    late = labels_for(preds[:50])
    for ev in late:
        ev["ts"] = int(ev["ts"]) + 3 * 60 * MIN  # past ttl: expired, and the clock moves past every prediction
    results = []
    for cut in (False, True):
        target = store_target.fresh()
        clock = Clock()
        _cfg, store, p = pipeline(label_config(tmp_path / str(cut), ttl="1h", early_ttl="30m"), clock, target=target)
        feed(p, clock, records("predictions", preds), labels=False)
        p.process_label_records(records("labels", late))
        if cut:
            cut_next_commit(store, committed=False)()
            with pytest.raises(StorageError):
                p.flush()
        p.flush()
        c = label_counters(store)["churn"]
        results.append((c, pending_predictions(store), store.query("SELECT COUNT(*) AS n FROM label_early")[0]["n"]))
        store.close()
    assert results[0][0]["expired_labels"] == 50 and results[0][0]["expired_predictions"] == len(preds)
    assert results[1] == results[0]


def test_a_rolled_back_flush_rebuilds_only_the_id_index_it_changed(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """A flush of labels alone that does not commit leaves the id index as it is (it still
    matches the table); one that inserted predictions drops it, built again on the retry."""
    from storage.db import StorageError
    from tests.monitor.service.commit_helpers import cut_next_commit

    preds = predictions(windows=3, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, ttl="2h"), clock, target=store_target)
    assert p.labels is not None
    feed(p, clock, records("predictions", preds[:200]), labels=False)
    index = p.labels._held_ids["churn"]
    p.process_label_records(records("labels", labels_for(preds[:50])))
    cut_next_commit(store, committed=False)()
    with pytest.raises(StorageError):
        p.flush()
    assert p.labels._held_ids["churn"] is index
    p.flush()
    p.process_records(records("predictions", preds[200:], start=200))
    cut_next_commit(store, committed=False)()
    with pytest.raises(StorageError):
        p.flush()
    assert "churn" not in p.labels._held_ids
    p.flush()
    feed(p, clock, records("labels", labels_for(preds[50:]), start=50), labels=True)
    c = label_counters(store)["churn"]
    assert c["predictions"] == len(preds) and c["duplicate_predictions"] == 0
    assert c["joined"] == len(preds) and c["early"] == 0


def test_building_a_large_id_index_reports_progress_chunk_by_chunk(tmp_path: Path) -> None:
    """After a restart the id index is built from the table inside the first flush (0.7 s a
    million): every 50,000-row chunk read counts as progress for the daemon's liveness
    checks (systemd's watchdog, /healthz), so a large table is not taken for a stall."""
    from storage.labels import insert_predictions

    clock = Clock()
    cfg_path = label_config(tmp_path, ttl="7d")
    _cfg, store, p = pipeline(cfg_path, clock)
    base = NOW_MS - 3_600_000
    with store.transaction():
        insert_predictions(store, "churn", [(f"id{i}", "v1", base + i, "", 0.5) for i in range(120_000)])
    assert p.labels is not None
    seen: list[int] = []
    p.labels.progress = lambda: seen.append(len(seen))
    p.process_label_records(records("labels", [{"event_id": "id7", "model": "churn", "label": 1, "ts": base + 60_000}]))
    p.flush()
    assert len(seen) == 3  # 50k + 50k + 20k rows
    assert label_counters(store)["churn"]["joined"] == 1


def test_a_repeated_prediction_leaves_computed_windows_as_they_are(tmp_path: Path) -> None:
    """A repeated id changes nothing in the join (the first prediction stays), so the
    windows its copy falls in are not marked for a recompute."""
    preds = predictions(windows=3, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, delay="1m", coverage=0.5), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, records("labels", labels_for(preds)), labels=True)
    settle(p, clock)
    slots = store.query('SELECT start, computed_at, dirty FROM label_slots ORDER BY start')
    assert slots and all(s["computed_at"] and not s["dirty"] for s in slots)
    p.process_records(records("predictions", [{**preds[5], "prediction": 0.99}], start=len(preds)))
    p.flush()
    assert store.query('SELECT start, computed_at, dirty FROM label_slots ORDER BY start') == slots
    assert label_counters(store)["churn"]["duplicate_predictions"] == 1


@pytest.mark.parametrize("hostile", ["eu\u001fus", "\uffff"])
def test_a_segment_value_holding_the_joins_separator_stays_its_own_segment(tmp_path: Path, hostile: str) -> None:
    """U+001F separates segment values in label_predictions.segments and U+FFFF marks a
    missing one: a value holding either was split (its rows and labels counted in the
    "region=eu" performance window) or taken as no segment. Both become U+FFFD when
    decoded, for the drift windows and the join alike, so each performance window holds
    exactly the rows of the drift window of its id."""
    preds = predictions(windows=4, per_window=200)
    moved = 0
    for i, ev in enumerate(preds):
        if 200 <= i < 400 and ev["segment"]["region"] == "us" and moved < 30:
            ev["segment"] = {"region": hostile}
            moved += 1
    labs = [{**ev, "ts": int(ev["ts"]) + 60_000} for ev in labels_for(preds, seed=3)]
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, delay="2m"), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    for rt in p.models.values():
        p._collect(rt, rt.windows.close_idle(NOW_MS * 10), clock())
    p.flush()
    feed(p, clock, records("labels", labs), labels=True)
    settle(p, clock)
    kept = "region=" + hostile.replace("\u001f", "\ufffd").replace("\uffff", "\ufffd")
    windows = store.query("SELECT id, segment, rows FROM windows WHERE start LIKE '%12:01:00%' AND segment != ''")
    assert kept in {w["segment"] for w in windows}
    for w in windows:
        assert metric(store, w["id"], "labelled_rows") == w["rows"], w


def test_fields_model_names_the_model_in_predictions_and_labels(tmp_path: Path) -> None:
    """``fields.model`` was accepted and never read: every message was read for "model", so
    a stream naming its model in another field was all ``missing_field`` dead letters."""
    cfg_path = label_config(tmp_path, ttl="2h", extra='[models.fields]\nmodel = "served_by"\n')
    def renamed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{("served_by" if k == "model" else k): v for k, v in e.items()} for e in events]

    plain = predictions(windows=2, per_window=100)
    preds, labs = renamed(plain), renamed(labels_for(plain))
    clock = Clock()
    _cfg, store, p = pipeline(cfg_path, clock)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, records("labels", labs), labels=True)
    p.flush()
    assert store.query("SELECT COUNT(*) AS n FROM dead_letters") == [{"n": 0}]
    counters = label_counters(store)["churn"]
    assert (counters["predictions"], counters["joined"]) == (200, len(labs))
    store.close()


@pytest.mark.parametrize("shape", ["tumbling", "sliding"])
def test_a_prediction_later_than_the_ttl_leaves_final_windows_as_they_are(
    tmp_path: Path, shape: str, store_target: StoreTarget
) -> None:
    """A window that ended more than ``ttl`` before the model's clock is final: its
    predictions left the join. A prediction arriving for it (a late or hostile event time)
    made its slot again and had it computed from what was left, replacing the window's
    figures: one record turned 100 labelled rows and an accuracy of 0.83 into
    ``labelled_rows`` 0 and no accuracy. A flood of such records, each in a window of its
    own, made a slot each, owed computations (16 a flush) that held every prediction in
    the join until they were done. Such windows are left as they are now; the prediction
    is counted when it leaves the join."""
    cfg_path = label_config(tmp_path, ttl="1h", n_boot=0)
    if shape == "sliding":
        cfg_path.write_text(cfg_path.read_text().replace('type = "tumbling"', 'type = "sliding"\nslide = "20s"'))
    preds = predictions(windows=3, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, records("labels", labels_for(preds)), labels=True)
    settle(p, clock)
    start = int(preds[0]["ts"])
    # the clock moves to 1 h 2 min 10 s after the first window's start: windows ending by
    # 2 min 10 s are final (with 20 s slides, rows before 1 min 20 s have left the join)
    mover = {**preds[0], "event_id": "mover", "ts": start + 3_600_000 + 130_000}
    # two events: one alone moves no clock, a second must vouch for its time
    p.process_records(records("predictions", [mover, {**mover, "event_id": "mover-2"}], start=1000))
    p.flush()
    settle(p, clock)
    final_end = start + 130_000
    final = [r for r in perf_rows(store) if _ms_of(r[0].split("|")[4]) <= final_end]
    first = "churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z"
    assert metric(store, first, "labelled_rows") == 100 and metric(store, first, "accuracy") is not None
    slots = store.query("SELECT start, \"end\" FROM label_slots ORDER BY start")
    # one late prediction in the first window, one in a final sliding window of a live row,
    # and 300 in windows of their own long before
    late = [{**preds[0], "event_id": "late-1"}, {**preds[0], "event_id": "late-2", "ts": start + 85_000}]
    late += [{**preds[0], "event_id": f"old-{i}", "ts": 1_000_000 + i * 60_000} for i in range(300)]
    p.process_records(records("predictions", late, start=1002))
    p.flush()
    settle(p, clock)
    assert [r for r in perf_rows(store) if _ms_of(r[0].split("|")[4]) <= final_end] == final
    assert metric(store, first, "labelled_rows") == 100
    live = [(s["start"], s["end"]) for s in store.query("SELECT start, \"end\" FROM label_slots ORDER BY start")]
    assert all(e > final_end for _s, e in live), live
    assert len(live) <= len(slots) + 3
    # no window for the old records (the only open one is the mover's, whose drift window is open)
    assert store.query("SELECT COUNT(*) AS n FROM windows WHERE start < '2026-11-23'")[0]["n"] == 0
    assert {w["start"] for w in store.query("SELECT start FROM windows WHERE status = 'open'")} == {
        "2026-11-23T13:02:00.000Z"} | ({"2026-11-23T13:01:20.000Z", "2026-11-23T13:01:40.000Z"} if shape == "sliding" else set())
    c = label_counters(store)["churn"]
    assert c["predictions"] == len(preds) + 2 + len(late)
    # the late ones left the join unlabelled (with 20 s slides late-2 still has a live window)
    still = {r["event_id"] for r in store.query("SELECT event_id FROM label_predictions WHERE event_id LIKE 'late-%'")}
    assert still == ({"late-2"} if shape == "sliding" else set())
    assert c["expired_predictions"] == len(late) - len(still)



def test_a_late_prediction_still_counts_in_a_window_that_owes_its_figures(tmp_path: Path) -> None:
    """The prune keeps the rows of the oldest window still owing its figures (computations
    catch up 16 a flush): such a window is not final, whatever the clock, and a late
    prediction for it is held and counted there, not dropped as expired."""
    cfg_path = label_config(tmp_path, ttl="1h", n_boot=0)
    preds = predictions(windows=20, per_window=20)
    clock = Clock()
    _cfg, store, p = pipeline(cfg_path, clock)
    feed(p, clock, records("predictions", preds), labels=False)
    feed(p, clock, records("labels", labels_for(preds)), labels=True)
    settle(p, clock)
    start = int(preds[0]["ts"])
    with store.transaction():  # all 20 owe their figures again, as after downtime
        store.execute("UPDATE label_slots SET dirty = 1 WHERE model = 'churn'")
    mover = {**preds[0], "event_id": "mover", "ts": start + 3_600_000 + 30 * 60_000}
    # two events: one alone moves no clock, a second must vouch for its time
    p.process_records(records("predictions", [mover, {**mover, "event_id": "mover-2"}], start=1000))
    p.flush()  # computes 16 of them; the last 4 still owe theirs
    last = start + 19 * 60_000
    [owed] = store.query('SELECT rows, dirty FROM label_slots WHERE model = ? AND start = ?', ("churn", last))
    assert (owed["rows"], owed["dirty"]) == (20, 1)
    late = {**preds[0], "event_id": "late-owed", "ts": last + 30_000}
    p.process_records(records("predictions", [late], start=1002))
    p.flush()
    held = {r["event_id"] for r in store.query("SELECT event_id FROM label_predictions WHERE event_id = 'late-owed'")}
    assert held == {"late-owed"}
    [slot] = store.query('SELECT rows FROM label_slots WHERE model = ? AND start = ?', ("churn", last))
    assert slot["rows"] == 21
    assert label_counters(store)["churn"].get("expired_predictions", 0) == 0


def test_windows_turn_final_at_the_last_committed_prune_not_at_the_clock_of_the_flush(tmp_path: Path) -> None:
    """Labels first (all early), then the predictions and labels two hours later in one
    flush: the late labels move the clock past every window, but the predictions join
    their early labels and their windows are computed before they leave, as the broker
    test has it; only windows that a committed prune already dropped are final."""
    preds = predictions(windows=3, per_window=100, seed=21)
    labels = labels_for(preds, delay_ms=30_000)
    too_late = [{**lab, "label": 1 - int(lab["label"]), "ts": int(lab["ts"]) + 7_200_000} for lab in labels[:3]]
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, ttl="1h", n_boot=0), clock)
    feed(p, clock, records("labels", labels), labels=True)
    assert label_counters(store)["churn"]["early"] == len(labels)
    p.process_records(records("predictions", preds))
    p.process_label_records(records("labels", too_late, start=len(labels)))
    p.flush()
    settle(p, clock)
    c = label_counters(store)["churn"]
    assert c["joined"] == len(preds) and c["expired_labels"] == 3 and c["expired_predictions"] == 0
    for w in range(3):
        wid = f"churn|v1||2026-11-23T12:0{w}:00.000Z|2026-11-23T12:0{w + 1}:00.000Z"
        assert metric(store, wid, "labelled_rows") == 100
    assert pending_predictions(store).get("churn", (0, 0)) == (0, 0)  # all left once computed

def _ms_of(text: str) -> int:
    from storage.records import parse_iso

    return int(parse_iso(text).timestamp() * 1000)


def test_an_expired_label_does_not_hide_a_valid_one_read_in_the_same_flush(tmp_path: Path) -> None:
    """Of several labels of one id in one flush only the latest was looked at: when it was
    expired (later than the prediction's ts + ttl), the valid label before it was counted
    as a duplicate and never used. Read in two flushes, the same records labelled the
    prediction, so the figures depended on how polls cut the stream (a backlog read after
    a restart is cut otherwise than a live stream): 100 labelled rows and an accuracy of
    0.83 in one run, 50 and 0.86 in the other."""
    preds = predictions(windows=3, per_window=100)
    labs = [{**ev, "ts": int(ev["ts"]) + MIN} for ev in labels_for(preds)]
    # corrections of the first 50 labels, an hour after them: past their prediction's ttl
    late = [{**ev, "label": 1 - ev["label"], "ts": int(ev["ts"]) + 60 * MIN} for ev in labs[:50]]
    recs = records("labels", labs + late)
    wid = "churn|v1||2026-11-23T12:00:00.000Z|2026-11-23T12:01:00.000Z"
    results = []
    for cuts in ([300], [], [120, 300]):
        clock = Clock()
        _cfg, store, p = pipeline(label_config(tmp_path / f"run{len(results)}", ttl="1h", n_boot=0), clock)
        feed(p, clock, records("predictions", preds), labels=False)
        for a, b in zip([0, *cuts], [*cuts, len(recs)], strict=True):
            p.process_label_records(recs[a:b])
            p.flush()
            clock.advance(seconds=2)
        settle(p, clock)
        c = label_counters(store)["churn"]
        results.append(({k: c[k] for k in ("labels", "joined", "duplicate_labels", "expired_labels")},
                        metric(store, wid, "labelled_rows"), metric(store, wid, "accuracy"),
                        [tuple(r.values()) for r in store.query(
                            "SELECT event_id, label FROM label_predictions ORDER BY event_id")]))
        store.close()
    counts, labelled, accuracy, rows = results[0]
    assert counts == {"labels": 350, "joined": 300, "duplicate_labels": 0, "expired_labels": 50}
    assert labelled == 100 and accuracy == pytest.approx(0.83)
    # the first window's predictions left the join (the corrections moved the clock past it)
    assert rows == sorted((ev["event_id"], str(ev["label"])) for ev in labs[100:])
    assert results[1] == results[0] and results[2] == results[0]


def test_predictions_whose_windows_are_final_do_not_make_the_id_index_compact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prediction whose every window ended more than ttl before the clock was held, and
    left at the same flush's prune; adding it to the id index below the index's prune
    cutoff made the index drop its forgotten entries first, a copy of every array: 28 ms
    a flush at 10 million held ids for one such record (0.04 ms without), and each one
    forces a flush of its own (it is a late row). It is counted as an expired prediction
    without being held now."""
    from monitor.labels import held_ids

    compactions = []
    real = held_ids.HeldIds._compact

    def spy(self: Any) -> None:
        compactions.append(self._cutoff)
        real(self)

    monkeypatch.setattr(held_ids.HeldIds, "_compact", spy)
    preds = predictions(windows=6, per_window=100)
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, ttl="2m", delay="1m", n_boot=0), clock)
    feed(p, clock, records("predictions", preds), labels=False)
    settle(p, clock)
    assert pending_predictions(store)["churn"][0] < len(preds)  # the first windows left
    compactions.clear()
    for k in range(5):
        old = {**preds[0], "event_id": f"old-{k}", "ts": int(preds[0]["ts"]) + k}
        p.process_records(records("predictions", [old], start=1000 + k))
        p.flush()
    assert [c for c in compactions if c is not None] == []
    assert not store.query("SELECT 1 FROM label_predictions WHERE event_id LIKE 'old-%'")
    c = label_counters(store)["churn"]
    assert c["predictions"] == len(preds) + 5 and c["duplicate_predictions"] == 0
    assert c["expired_predictions"] == len(preds) + 5 - pending_predictions(store)["churn"][0]
def test_labels_confidence_is_the_level_of_the_stored_intervals(tmp_path: Path) -> None:
    """``labels.confidence`` from the TOML config: the same joined rows give, in every
    window with figures, a narrower bootstrap interval at 0.5 than at 0.99."""
    preds, labs = scenario()
    widths: dict[float, dict[str, float]] = {}
    for level in (0.5, 0.99):
        clock = Clock()
        _cfg, store, p = pipeline(label_config(tmp_path / str(level), extra=f"confidence = {level}\n"), clock)
        try:
            feed(p, clock, records("predictions", preds), labels=False)
            feed(p, clock, [Rec("labels", part, off, NOW_MS, orjson.dumps(ev)) for ev, part, off in labs],
                 labels=True)
            settle(p, clock)
            rows = store.query("SELECT window_id, ci_low, ci_high FROM metrics WHERE family = 'performance'"
                               " AND metric = 'accuracy' AND ci_low IS NOT NULL")
            widths[level] = {r["window_id"]: r["ci_high"] - r["ci_low"] for r in rows}
        finally:
            store.close()
    assert widths[0.5].keys() == widths[0.99].keys() and len(widths[0.5]) >= 6
    assert all(widths[0.5][w] < widths[0.99][w] for w in widths[0.5]), widths


def _early(store: Any) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in store.query("SELECT event_id, label FROM label_early ORDER BY ts")]


def test_early_labels_past_max_early_drop_the_oldest_and_are_counted(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """Labels waiting for their prediction had no bound but ``early_ttl``: labels for ids
    that never come (a buggy or hostile producer) grew ``label_early`` by every one for a
    whole day. With ``labels.max_early = 5``, 8 early labels (5 in one flush, 3 in the
    next: the count read from the table, then kept) leave the 5 newest waiting, the 3
    oldest counted as dropped; a prediction that comes later still joins a kept label
    (and one whose label was dropped stays unlabelled)."""
    preds = predictions(windows=1, per_window=8)
    labs = [{**ev, "ts": int(preds[0]["ts"]) + MIN + 1000 * i}
            for i, ev in enumerate(labels_for(preds))]  # label i newer than label i - 1
    random.Random(4).shuffle(labs)  # dropped by event time, not by arrival
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, extra="max_early = 5\n"), clock, target=store_target)
    feed(p, clock, records("labels", labs), labels=True, batch=5)
    newest = sorted(labs, key=lambda ev: ev["ts"])[3:]
    assert _early(store) == [(ev["event_id"], str(ev["label"])) for ev in newest]
    c = label_counters(store)["churn"]
    assert c["early"] == 8 and c["dropped_early_labels"] == 3 and c["unmatched_labels"] == 0
    feed(p, clock, records("predictions", preds), labels=False)
    assert _early(store) == []
    c = label_counters(store)["churn"]
    assert c["joined"] == 5 and c["dropped_early_labels"] == 3
    held = {r["event_id"]: r["label"] for r in store.query("SELECT event_id, label FROM label_predictions")}
    assert held == {ev["event_id"]: None for ev in preds} | {ev["event_id"]: str(ev["label"]) for ev in newest}


def test_max_early_counts_the_labels_already_waiting_after_a_restart(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """The count of waiting labels is read from the table (not started at 0) by a new
    process: 4 labels waiting before a restart and 4 after, with ``max_early = 5``, keep 5."""
    preds = predictions(windows=1, per_window=8)
    labs = [{**ev, "ts": int(preds[0]["ts"]) + MIN + 1000 * i} for i, ev in enumerate(labels_for(preds))]
    cfg_path = label_config(tmp_path, extra="max_early = 5\n")
    clock = Clock()
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)
    feed(p, clock, records("labels", labs[:4]), labels=True)
    store.close()
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)  # a restart
    p.process_label_records(records("labels", labs[4:], start=4))
    p.flush()
    assert _early(store) == [(ev["event_id"], str(ev["label"])) for ev in labs[3:]]
    assert label_counters(store)["churn"]["dropped_early_labels"] == 3


@pytest.mark.parametrize("order", ["older_first", "newer_first"])
def test_two_labels_of_one_id_the_later_wins_whether_its_prediction_came_first_or_last(
    tmp_path: Path, store_target: StoreTarget, order: str
) -> None:
    """Two labels of one id, read in two flushes in either order: the one with the later
    ``ts`` labels the prediction and the other counts as a duplicate, the same whether the
    prediction was held when they came or came after both (both waited as early labels: the
    upsert keeps the later one)."""
    preds = predictions(windows=1, per_window=4)
    target = preds[1]
    older = {"event_id": target["event_id"], "model": "churn", "label": 0, "ts": int(target["ts"]) + MIN}
    newer = {**older, "label": 1, "ts": int(target["ts"]) + 2 * MIN}
    two = [older, newer] if order == "older_first" else [newer, older]
    results = []
    for prediction_first in (True, False):
        clock = Clock()
        target_store = store_target.fresh()
        _cfg, store, p = pipeline(label_config(tmp_path / str(prediction_first), n_boot=0), clock, target=target_store)
        if prediction_first:
            feed(p, clock, records("predictions", preds), labels=False)
        for k, ev in enumerate(two):
            p.process_label_records(records("labels", [ev], start=k))
            p.flush()
        if not prediction_first:
            assert [tuple(r.values()) for r in store.query("SELECT label, ts FROM label_early")] == [("1", newer["ts"])]
            feed(p, clock, records("predictions", preds), labels=False)
        c = label_counters(store)["churn"]
        results.append((
            store.query("SELECT label, label_ts FROM label_predictions WHERE event_id = ?", (target["event_id"],)),
            {k: c[k] for k in ("labels", "joined", "duplicate_labels", "expired_labels")},
        ))
        store.close()
        target_store.close()
    assert results[0][0] == [{"label": "1", "label_ts": newer["ts"]}]
    assert results[0][1] == {"labels": 2, "joined": 1, "duplicate_labels": 1, "expired_labels": 0}
    assert results[1] == results[0]


def _window_of(store: Any, start_ms: int) -> str:
    from storage.records import iso_ms

    return f"churn|v1||{iso_ms(start_ms)}|{iso_ms(start_ms + MIN)}"


@pytest.mark.parametrize("probabilities", ["", "probabilities = false"])
def test_one_score_outside_0_1_does_not_blind_log_loss_and_brier(
    tmp_path: Path, store_target: StoreTarget, probabilities: str
) -> None:
    """One message with a score of 1.5 made log loss and Brier score NaN for its whole
    window (they were computed only if every score of the window was in [0, 1]). The
    reference's scores are all in [0, 1], so the model's are probabilities: the 1.5 is a
    dead letter naming the field and value, and the window's figures are scikit-learn's on
    the rest. A model configured ``probabilities = false`` (a margin) keeps the 1.5 and has
    no log loss or Brier score in any window."""
    preds = predictions(windows=1, per_window=120)
    hostile = {**preds[7], "event_id": "hostile", "prediction": 1.5}
    labs = [{**ev, "ts": int(ev["ts"]) + MIN} for ev in labels_for([*preds, hostile])]
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, perf=probabilities, n_boot=0), clock, target=store_target)
    feed(p, clock, records("predictions", [*preds, hostile]), labels=False)
    feed(p, clock, records("labels", labs), labels=True)
    settle(p, clock)
    start = (int(preds[0]["ts"]) // MIN) * MIN
    wid = _window_of(store, start)
    dead = [r["reason"] for r in store.query("SELECT reason FROM dead_letters WHERE topic = 'predictions'")]
    if probabilities:
        assert dead == []
        assert metric(store, wid, "labelled_rows") == 121
        assert math.isnan(metric(store, wid, "log_loss") or math.nan)
        assert math.isnan(metric(store, wid, "brier") or math.nan)
        return
    assert dead == ["out_of_range: prediction 1.5 outside [0, 1] (the model's scores are probabilities)"]
    y = np.array([ev["label"] == 1 for ev in labs[:-1]])
    s = np.array([float(ev["prediction"]) for ev in preds])
    assert metric(store, wid, "labelled_rows") == 120
    assert metric(store, wid, "log_loss") == pytest.approx(skm.log_loss(y, s, labels=[False, True]), rel=1e-12)
    assert metric(store, wid, "brier") == pytest.approx(skm.brier_score_loss(y, s), rel=1e-12)


@pytest.mark.parametrize("probabilities", ["", "probabilities = true"])
def test_a_new_reference_decides_again_whether_scores_are_probabilities(
    tmp_path: Path, store_target: StoreTarget, probabilities: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whether a model's scores are probabilities was decided from the reference at start
    and kept until a restart: a retrained model uploaded with a reference of margins still
    had its scores outside [0, 1] dead-lettered, and log loss computed on them. The new
    reference decides again (logged once), for the decoder and the label join, unless
    ``performance.probabilities`` decides."""
    import pandas as pd  # noqa: PLC0415

    preds = predictions(windows=2, per_window=120)
    first = {**preds[7], "event_id": "first", "prediction": 1.5}
    second = {**preds[127], "event_id": "second", "prediction": 1.5}
    labs = [{**ev, "ts": int(ev["ts"]) + MIN} for ev in labels_for([*preds, first, second])]
    clock = Clock()
    cfg_path = label_config(tmp_path, perf=probabilities, n_boot=0)
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)
    feed(p, clock, records("predictions", [*preds[:120], first]), labels=False)
    ref = pd.read_csv(tmp_path / "reference.csv")
    ref["prediction"] = ref["prediction"] * 6 - 3  # log-odds-like margins
    for version in ("v2", "v3"):  # the second upload changes nothing more
        ref.to_csv(tmp_path / f"{version}.csv", index=False)
        with caplog.at_level("INFO", logger="driftwarden"):
            p.swap_reference("churn", str(tmp_path / f"{version}.csv"), version)
    feed(p, clock, records("predictions", [*preds[120:], second], start=121), labels=False)
    feed(p, clock, records("labels", labs), labels=True)
    settle(p, clock)
    dead = [r["reason"] for r in store.query("SELECT reason FROM dead_letters WHERE topic = 'predictions' ORDER BY \"offset\"")]
    changes = [r.getMessage() for r in caplog.records if "scores are" in r.getMessage()]
    wid = _window_of(store, (int(preds[120]["ts"]) // MIN) * MIN)
    reason = "out_of_range: prediction 1.5 outside [0, 1] (the model's scores are probabilities)"
    if probabilities:
        assert dead == [reason, reason]
        assert changes == []
        assert metric(store, wid, "labelled_rows") == 120
        assert math.isfinite(metric(store, wid, "log_loss") or math.nan)
        return
    assert dead == [reason]
    assert len(changes) == 1 and "scores are not probabilities" in changes[0] and "v2.csv" in changes[0], [
        (r.threadName, r.name, r.getMessage()) for r in caplog.records if "scores are" in r.getMessage()]
    assert metric(store, wid, "labelled_rows") == 121
    assert math.isnan(metric(store, wid, "log_loss") or math.nan)
    assert math.isnan(metric(store, wid, "brier") or math.nan)


def test_early_labels_stamped_ahead_of_the_wall_clock_are_dropped_first(
    tmp_path: Path, store_target: StoreTarget
) -> None:
    """Dropped oldest first, a flood of labels stamped up to ``max_future_skew`` ahead (an
    hour) outlived every real early label, and each real one that came after the flood was
    the oldest again: early joins were off for that hour. Labels from the future go first,
    furthest ahead first; the real ones stay."""
    preds = predictions(windows=1, per_window=8)
    real = [{**ev, "ts": NOW_MS - 10 * MIN + 1000 * i} for i, ev in enumerate(labels_for(preds)[:3])]
    flood = [{**ev, "ts": NOW_MS + 30 * MIN + 1000 * i} for i, ev in enumerate(labels_for(preds)[3:])]
    clock = Clock()
    cfg_path = label_config(tmp_path, early_ttl="1d", extra="max_early = 5\n")
    _cfg, store, p = pipeline(cfg_path, clock, target=store_target)
    feed(p, clock, records("labels", real + flood), labels=True, batch=8)
    kept = {eid for eid, _ in _early(store)}
    assert kept == {ev["event_id"] for ev in real + flood[:2]}
    assert label_counters(store)["churn"]["dropped_early_labels"] == 3


def test_a_window_matured_by_delay_after_a_later_one_reached_coverage_is_still_judged(tmp_path: Path) -> None:
    """Windows 0..5; window 2 has every label wrong but only 90 % of them (coverage 0.95),
    the others all theirs. Windows 3..5 reached coverage first and were judged; window 2,
    matured by ``delay`` later, was then older than the last window judged, so the rule on
    accuracy never saw its 0.0 (its alert, which had fired and resolved before, stayed
    resolved). Now coverage matures windows in time order only, and window 2 fires."""
    from datetime import timedelta

    from monitor.config import load_config
    from monitor.service.alerting import Alerting
    from monitor.service.pipeline import Pipeline
    from tests.monitor.daemon_helpers import START
    from tests.store_targets import open_state_store

    rule = '\n[[rules]]\nname = "bad-accuracy"\nmetric = "accuracy"\nop = "<"\nthreshold = 0.5\n'
    cfg = load_config(label_config(tmp_path, delay="30m", coverage=0.95, extra=rule, n_boot=0))
    store = open_state_store(cfg.daemon.state_dir)
    clock = Clock(START + timedelta(minutes=7))  # the wall clock near the events: no idle maturity
    fired: list[str] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        t = data["transition"]
        if kind == "transition" and t.to_state == "firing":
            fired.append(t.window_id.split("|")[3][11:16])

    alerting = Alerting(cfg, store, clock=clock, on_event=on_event)
    p = Pipeline(cfg, store, clock=clock, on_window=alerting.on_window, on_performance=alerting.on_performance)
    preds = predictions(6, 100)
    labels = []
    for i, ev in enumerate(preds):
        w, right = i // 100, int(float(ev["prediction"]) >= 0.5)
        if w == 2 and i % 100 >= 90:
            continue
        lab = 1 - right if w in (0, 2) else right  # windows 0 and 2: every label wrong
        labels.append({"event_id": ev["event_id"], "model": "churn", "label": lab, "ts": int(ev["ts"]) + 5 * MIN})
    p.process_records(records("predictions", preds))
    p.flush()
    p.process_label_records(records("labels", labels))
    p.flush()
    settle(p, clock)
    assert fired == ["12:00"]
    later = [{**ev, "event_id": f"later-{i}", "ts": int(ev["ts"]) + 40 * MIN} for i, ev in enumerate(preds[-5:])]
    clock.advance(minutes=40)  # the wall clock there too: events ahead of it do not move the join's clock
    p.process_records(records("predictions", later, start=len(preds)))
    p.flush()
    settle(p, clock)
    assert metric(store, "churn|v1||2026-11-23T12:02:00.000Z|2026-11-23T12:03:00.000Z", "accuracy") == 0.0
    assert fired == ["12:00", "12:02"]


def test_labels_of_a_class_the_new_reference_lacks_count_in_no_figure(tmp_path: Path) -> None:
    """A retrained model's reference whose label classes changed (0/1 -> 2/1) replaces the
    old one while labels joined under the old one wait for their windows to mature. New
    labels of class 0 were dead letters, but the held ones were read as negatives (not
    class_of_interest) in the next figures. Decided at compute time by the reference in
    use: they count in no figure, only in ``labels_unknown_class``; new ones stay dead
    letters; nothing is lost silently."""
    import pandas as pd  # noqa: PLC0415

    from storage.records import WindowKey, iso_ms  # noqa: PLC0415

    preds = predictions(windows=6, per_window=300)
    t0 = min(int(x["ts"]) for x in preds)
    t0 -= t0 % MIN
    first = [x for x in preds if int(x["ts"]) < t0 + 2 * MIN]
    later = [x for x in preds if int(x["ts"]) >= t0 + 2 * MIN]
    clock = Clock()
    cfg_path = label_config(tmp_path, n_boot=0)
    _cfg, store, p = pipeline(cfg_path, clock)
    try:
        p.register_initial_references()
        feed(p, clock, records("predictions", first), labels=False)
        labs = labels_for(first)
        held = [ev for i, ev in enumerate(labs) if i % 10]  # coverage below 1: windows wait for the delay
        after = labs[::10]
        p.process_label_records(records("labels", held))
        p.flush()
        assert not store.query("SELECT 1 FROM metrics WHERE family = 'performance'")
        ref = pd.read_csv(tmp_path / "reference.csv")
        ref["label"] = ref["label"].map({0: 2, 1: 1})
        ref.to_csv(tmp_path / "v2.csv", index=False)
        p.swap_reference("churn", str(tmp_path / "v2.csv"), "v2")
        p.process_label_records(records("labels", after, start=len(held)))
        p.flush()
        feed(p, clock, records("predictions", later, start=len(first)), labels=False)
        settle(p, clock)
        dead = store.query("SELECT reason FROM dead_letters WHERE topic = 'labels'")
        assert len(dead) == sum(int(ev["label"]) == 0 for ev in after) > 0
        assert all("is none of the classes of the reference (1, 2)" in r["reason"] for r in dead)
        score = {x["event_id"]: float(x["prediction"]) for x in first}
        joined = [ev for ev in held + after if int(ev["label"]) == 1 or ev in held]
        for w in (0, 1):
            start, end = t0 + w * MIN, t0 + (w + 1) * MIN
            rows = [ev for ev in joined if start <= int(ev["ts"]) < end]
            known = [ev for ev in rows if int(ev["label"]) == 1]
            wid = WindowKey("churn", "v1", "", iso_ms(start), iso_ms(end)).id
            hits = sum(score[ev["event_id"]] >= 0.5 for ev in known)
            assert metric(store, wid, "accuracy") == pytest.approx(hits / len(known), abs=1e-12)
            assert metric(store, wid, "labels_unknown_class") == len(rows) - len(known) > 0
            assert metric(store, wid, "labelled_rows") == len(rows)
    finally:
        store.close()


def test_labels_ahead_of_the_predictions_do_not_mature_a_window_still_taking_them(tmp_path: Path) -> None:
    """Labels come back within a minute (label time: the prediction's + 90 s) while the
    predictions stream is read behind them: the labels move the join's clock past the end
    of a window whose predictions are still arriving (not late: the model's own clock is
    mid-window). Coverage matured it on the first half, all labelled, and a rule judged
    that half window; it waits until the predictions' clock passes its end."""
    preds = sorted(predictions(windows=2, per_window=200), key=lambda e: int(e["ts"]))
    start_ms = int(START.timestamp() * 1000)
    first = [e for e in preds if int(e["ts"]) < start_ms + MIN]
    rest = [e for e in preds if int(e["ts"]) >= start_ms + MIN]
    half, later = first[:100], first[100:]
    clock = Clock()
    _cfg, store, p = pipeline(label_config(tmp_path, delay="10m", coverage=0.95), clock)
    feed(p, clock, records("predictions", half), labels=False)
    labs = [{**ev, "ts": int(ev["ts"]) + 90_000} for ev in labels_for(half)]
    feed(p, clock, [Rec("labels", 0, i, NOW_MS, orjson.dumps(ev)) for i, ev in enumerate(labs)], labels=True)
    p.flush()
    assert perf_rows(store) == []  # 100 of its 200 predictions read: not judged yet
    feed(p, clock, records("predictions", later + rest, start=len(half)), labels=False)
    labs = [{**ev, "ts": int(ev["ts"]) + 90_000} for ev in labels_for(later)]
    feed(p, clock, [Rec("labels", 0, len(half) + i, NOW_MS, orjson.dumps(ev)) for i, ev in enumerate(labs)], labels=True)
    ids = sorted({r[0] for r in perf_rows(store) if r[0].split("|")[2] == ""})
    assert ids, "the window matured once its predictions' clock passed its end"
    assert metric(store, ids[0], "labelled_rows") == 200.0
