"""storage.retention on a real SQLite file: what is pruned, what is kept, batches, file size."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import alerts as adb
from storage.alerts import AlertRecord, DeliveryRecord, SilenceRecord
from storage.db import Store
from storage.dead_letters import DeadLetter, write_dead_letters
from storage.limits import DeadLetterCap
from storage.records import MetricRow, WindowKey, WindowRecord, iso
from storage.references import register_reference
from storage.retention import ORPHAN_FILE_GRACE, Pruner, RetentionPolicy
from storage.windows import write_window
from tests.store_targets import StoreTarget

NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
OLD = NOW - 40 * DAY  # older than every retention of POLICY
NEW = NOW - DAY  # younger than every retention of POLICY
POLICY = RetentionPolicy(
    windows=timedelta(days=30), metrics=timedelta(days=30), alerts=timedelta(days=30),
    deliveries=timedelta(days=30), dead_letters=timedelta(days=30),
)  # fmt: skip


@pytest.fixture
def store(store_target: StoreTarget):
    s = store_target.open(synchronous="NORMAL")
    yield s
    s.close()


def pruner(store: Store, policy: RetentionPolicy = POLICY, **kw) -> Pruner:
    # most tests here store only rows older than NOW, as a daemon stopped for weeks finds
    # them; the guard against clock steps (tested at the end) would prune them as of a day
    # after the newest row, so it is widened here
    kw.setdefault("max_clock_lead", 1000 * DAY)
    return Pruner(store, policy, clock=lambda: NOW, **kw)


def window(name: str, computed_at: datetime, *, reference: str = "", model: str = "churn") -> WindowRecord:
    key = WindowKey(model, "v1", "", f"2026-01-01T00:{name}", f"2026-01-01T01:{name}")
    return WindowRecord(key=key, rows=100, status="ok", computed_at=computed_at, reference=reference)


METRICS = [MetricRow("", "row_count", 100.0), MetricRow("age", "drift_score", 0.1, 0.05, True)]


def count(store: Store, table: str, where: str = "1 = 1") -> int:
    return int(store.query(f'SELECT COUNT(*) AS n FROM "{table}" WHERE {where}')[0]["n"])


def letter(offset: int, received: datetime, *, reason: str = "not_json: x", size: int = 10) -> DeadLetter:
    return DeadLetter("predictions", 0, offset, reason, b"x" * size, received)


BIG_CAP = DeadLetterCap(per_minute=1_000_000, payloads_per_minute=1_000_000)


# -- the policy --------------------------------------------------------------------------


def test_policy_refuses_zero_and_metrics_longer_than_windows() -> None:
    with pytest.raises(ValueError, match="positive"):
        RetentionPolicy(windows=timedelta(0))
    with pytest.raises(ValueError, match="metrics"):
        RetentionPolicy(windows=DAY, metrics=2 * DAY)
    with pytest.raises(ValueError, match="metrics"):
        RetentionPolicy(windows=DAY, metrics=None)
    assert RetentionPolicy(windows=None, metrics=None).windows is None


# -- each table by age, live rows kept -------------------------------------------------


def test_windows_and_their_metrics_by_age_except_what_a_live_alert_points_at(store: Store) -> None:
    with store.transaction():
        for name, at in (("old", OLD), ("new", NEW), ("firing", OLD), ("pending", OLD), ("resolved", OLD)):
            write_window(store, window(name, at), METRICS)
        for state in ("firing", "pending", "resolved"):
            adb.upsert_alert(
                store,
                AlertRecord(id=state, rule="r", model="churn", state=state, updated_at=NEW,
                            last_window_id=window(state, OLD).id),
            )  # fmt: skip
    report = pruner(store).run_once()
    kept = sorted(r["id"].split("|")[3] for r in store.query("SELECT id FROM windows"))
    assert kept == ["2026-01-01T00:firing", "2026-01-01T00:new", "2026-01-01T00:pending"]
    assert count(store, "metrics") == 3 * len(METRICS)
    assert count(store, "metrics", f"window_id = '{window('old', OLD).id}'") == 0
    assert report.rows["windows"] == 2 and report.rows["metrics"] == 2 * len(METRICS)


def test_metrics_shorter_than_windows_keep_the_window_rows(store: Store) -> None:
    with store.transaction():
        for i in range(5):
            write_window(store, window(f"m{i}", NOW - (10 + i) * DAY - HOUR), METRICS)  # 10..14 days old
        write_window(store, window("fresh", NEW), METRICS)
    policy = RetentionPolicy(windows=timedelta(days=13), metrics=timedelta(days=11))
    report = pruner(store, policy, first_batch=1).run_once()
    # 13 and 14 days old: gone with their figures; 11 and 12: windows kept, figures gone
    assert count(store, "windows") == 4
    with_figures = {r["window_id"] for r in store.query("SELECT DISTINCT window_id FROM metrics")}
    assert with_figures == {window("m0", NOW).id, window("fresh", NOW).id}
    assert report.rows == {"windows": 2, "metrics": 4 * len(METRICS)}
    assert pruner(store, policy).run_once().rows == {}  # nothing left to do


def test_alerts_by_last_change_never_pending_or_firing(store: Store) -> None:
    with store.transaction():
        for aid, state, at in (
            ("old-resolved", "resolved", OLD), ("old-inactive", "inactive", OLD),
            ("old-firing", "firing", OLD), ("old-pending", "pending", OLD),
            ("new-resolved", "resolved", NEW),
        ):  # fmt: skip
            adb.upsert_alert(store, AlertRecord(id=aid, rule="r", model="m", state=state, updated_at=at))
    report = pruner(store).run_once()
    assert sorted(r["id"] for r in store.query("SELECT id FROM alerts")) == [
        "new-resolved",
        "old-firing",
        "old-pending",
    ]
    assert report.rows["alerts"] == 2


def test_change_detector_states_not_updated_for_the_alerts_retention(store: Store) -> None:
    """rule_detectors was never pruned: a state per rule x model x segment x column, kept
    for ever after its rule, model or segment was gone. A running detector is updated at
    each window of its rule, so only the stale ones go."""
    from storage.detectors import save_detector

    with store.transaction():
        for aid, at in (("gone", OLD), ("running", NEW)):
            save_detector(store, alert_id=aid, rule="r", model="m", state={"n": 1}, last_window_id="w",
                          window_end="2026-11-01T00:00:00.000Z", now=at)
    report = pruner(store).run_once()
    assert [r["alert_id"] for r in store.query("SELECT alert_id FROM rule_detectors")] == ["running"]
    assert report.rows["rule_detectors"] == 1


def delivery(did: str, created: datetime, **kw) -> DeliveryRecord:
    return DeliveryRecord(
        id=did, notifier=kw.pop("notifier", "slack"), kind=kw.pop("kind", "firing"),
        created_at=created, **kw,
    )  # fmt: skip


def test_deliveries_finished_and_old_except_those_still_needed(store: Store) -> None:
    with store.transaction():
        adb.upsert_alert(store, AlertRecord(id="live", rule="r", model="m", state="firing", updated_at=OLD))
        adb.upsert_alert(store, AlertRecord(id="done", rule="r", model="m", state="resolved", updated_at=NEW))
        for d in (
            delivery("old-sent", OLD, status="sent", alert_ids=("done",)),
            delivery("old-dead", OLD, status="dead", alert_ids=("done",)),
            delivery("old-pending", OLD, alert_ids=("done",)),
            delivery("new-sent", NEW, status="sent", alert_ids=("done",)),
            # a firing alert's notification: its resolution will be threaded under it
            delivery("of-live-alert", OLD, status="sent", alert_ids=("done", "live")),
            # the parent of a resolution still being retried
            delivery("parent", OLD - DAY, status="sent", alert_ids=("done",)),
            delivery("child", OLD, kind="resolved", alert_ids=("done",), parent_id="parent"),
            # retraining requests: the newest per notifier and model holds the cooldown
            delivery("retrain-1", OLD - DAY, notifier="hook", kind="retrain", model="m", status="sent"),
            delivery("retrain-2", OLD, notifier="hook", kind="retrain", model="m", status="sent"),
            delivery("retrain-other", OLD, notifier="hook", kind="retrain", model="x", status="dead"),
        ):
            adb.insert_delivery(store, d)
    report = pruner(store).run_once()
    kept = sorted(d.id for d in adb.list_deliveries(store))
    assert kept == [
        "child", "new-sent", "of-live-alert", "old-pending", "parent", "retrain-2", "retrain-other",
    ]  # fmt: skip
    assert report.rows["deliveries"] == 3
    # the cooldown still reads the newest request
    assert adb.last_delivery_created(store, notifier="hook", kind="retrain", model="m") == OLD


def test_silences_after_they_ended(store: Store) -> None:
    with store.transaction():
        for sid, ends in (("ended-long-ago", OLD), ("ended-yesterday", NEW), ("active", NOW + DAY)):
            adb.insert_silence(
                store, SilenceRecord(id=sid, starts_at=OLD - DAY, ends_at=ends, created_at=OLD - DAY)
            )
    pruner(store).run_once()
    assert sorted(s.id for s in adb.list_silences(store)) == ["active", "ended-yesterday"]


def test_dead_letters_and_their_counts_by_age_totals_stay(store: Store) -> None:
    cap = DeadLetterCap(per_minute=2, payloads_per_minute=1)
    with store.transaction():
        write_dead_letters(store, [letter(i, OLD) for i in range(5)], cap=cap)
        write_dead_letters(store, [letter(10 + i, NEW) for i in range(3)], cap=cap)
    totals_before = store.query("SELECT * FROM dead_letter_totals")
    report = pruner(store).run_once()
    assert [r["offset"] for r in store.query('SELECT "offset" FROM dead_letters ORDER BY 1')] == [10, 11]
    assert count(store, "dead_letter_volume") == 1
    assert report.rows["dead_letters"] == 2 and report.rows["dead_letter_volume"] == 1
    assert store.query("SELECT * FROM dead_letter_totals") == totals_before


def test_the_newest_dead_letter_stays_so_that_its_id_is_not_given_again(store: Store) -> None:
    """Every letter is old: all go but the newest (the highest id). SQLite numbers a new row
    after the highest id left: had it gone too, the next letter would get id 1, behind the
    dead-letter topic's cursor, and never be produced."""
    with store.transaction():
        write_dead_letters(store, [letter(i, OLD) for i in range(3)], cap=BIG_CAP)
    ids = [r["id"] for r in store.query("SELECT id FROM dead_letters ORDER BY id")]
    assert pruner(store).run_once().rows["dead_letters"] == 2
    assert [r["id"] for r in store.query("SELECT id FROM dead_letters")] == [ids[-1]]
    with store.transaction():
        write_dead_letters(store, [letter(3, NOW)], cap=BIG_CAP)
    assert store.query("SELECT id FROM dead_letters WHERE \"offset\" = 3")[0]["id"] > ids[-1]


def test_forever_keeps_everything(store: Store) -> None:
    with store.transaction():
        write_window(store, window("old", OLD - 9000 * DAY), METRICS)
        adb.upsert_alert(store, AlertRecord(id="a", rule="r", model="m", state="resolved", updated_at=OLD))
        write_dead_letters(store, [letter(1, OLD)], cap=BIG_CAP)
    policy = RetentionPolicy(windows=None, metrics=None, alerts=None, deliveries=None, dead_letters=None)
    assert pruner(store, policy).run_once().rows == {}
    assert (count(store, "windows"), count(store, "alerts"), count(store, "dead_letters")) == (1, 1, 1)


def test_references_not_in_force_and_unused_go_with_their_files(store: Store, tmp_path: Path) -> None:
    refs = tmp_path / "references"
    (refs / "churn").mkdir(parents=True)

    def upload(version: str, sha: str, at: datetime) -> Path:
        path = refs / "churn" / f"{version}-{sha[:12]}.csv"
        path.write_text("age\n1\n")
        register_reference(store, model="churn", version=version, source="callback", sha256=sha,
                           rows=1, path=str(path), registered_at=at)  # fmt: skip
        return path

    old_time = time.time() - 2 * ORPHAN_FILE_GRACE.total_seconds()
    with store.transaction():
        unused = upload("v1", "a" * 64, OLD)
        judged = upload("v2", "b" * 64, OLD + DAY)
        current = upload("v3", "c" * 64, NEW)
        # a window judged against v2 keeps v2's row and file
        write_window(store, window("w", NEW, reference="b" * 12), METRICS)
    replaced = refs / "churn" / f"v3-{'d' * 12}.csv"  # v3 uploaded twice: the first file is orphaned
    replaced.write_text("age\n1\n")
    crashed = refs / "churn" / f"v4-{'e' * 12}.csv.tmp"
    crashed.write_text("age\n")
    just_written = refs / "churn" / f"v5-{'f' * 12}.csv"  # an upload not yet registered
    just_written.write_text("age\n1\n")
    foreign = refs / "churn" / "notes.txt"
    foreign.write_text("mine")
    for p in (unused, judged, current, replaced, crashed, foreign):
        os.utime(p, (old_time, old_time))
    report = pruner(store, dataclass_replace(POLICY, references_dir=refs)).run_once()
    assert sorted(r["version"] for r in store.query('SELECT version FROM "references"')) == ["v2", "v3"]
    assert sorted(p.name for p in (refs / "churn").iterdir()) == sorted(
        [judged.name, current.name, just_written.name, foreign.name]
    )
    assert report.rows["references"] == 1 and report.files == 3


def dataclass_replace(policy: RetentionPolicy, **kw) -> RetentionPolicy:
    from dataclasses import replace

    return replace(policy, **kw)


# -- batches do not hold the store lock ------------------------------------------------


def test_a_writer_gets_in_between_batches_of_a_big_prune(store: Store) -> None:
    with store.transaction():
        for i in range(3000):
            write_window(store, window(f"{i:05d}", OLD), METRICS)
    events: list[str] = []
    stop = threading.Event()
    started = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            with store.transaction():
                write_window(store, window(f"live{i:05d}", NOW), METRICS)
            events.append("write")
            i += 1
            started.set()
            time.sleep(0.001)

    t = threading.Thread(target=writer)
    t.start()
    started.wait(5)
    try:
        report = pruner(store, first_batch=50, max_batch=100, on_batch=lambda name, n: events.append(name)).run_once()
    finally:
        stop.set()
        t.join(10)
    assert report.rows["windows"] == 3000
    batches = [i for i, e in enumerate(events) if e == "windows"]
    assert len(batches) >= 30
    # the writer committed transactions between the prune's first and last batch, again and again
    between = events[batches[0] : batches[-1]].count("write")
    assert between >= 10, events[batches[0] : batches[-1]]
    assert count(store, "windows") == events.count("write")  # every write survived


# -- the file stays bounded ---------------------------------------------------------------


@pytest.mark.sqlite_only("the SQLite file's incremental vacuum and size")
def test_new_database_is_incremental_and_prune_gives_space_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "driftwarden.db", synchronous="NORMAL")  # a file: SQLite only
    assert store.auto_vacuum_mode() == "incremental"
    blob = os.urandom(60_000)
    for batch in range(10):
        with store.transaction():
            write_dead_letters(
                store,
                [DeadLetter("t", 0, batch * 100 + i, "not_json: x", blob, OLD) for i in range(100)],
                cap=BIG_CAP,
            )
    store.checkpoint()
    full = store.size_on_disk()["db"]
    assert full > 50_000_000
    report = pruner(store).run_once()
    assert report.rows["dead_letters"] == 999  # the newest stays
    assert report.vacuumed_pages > 10_000 and report.checkpointed
    assert store.freelist_count() == 0
    size = store.size_on_disk()
    assert size["db"] < 1_000_000 and size["wal"] == 0, size
    store.close()


@pytest.mark.sqlite_only("a SQLite file made before incremental vacuum")
def test_an_old_database_switches_to_incremental_vacuum_once(tmp_path: Path) -> None:
    path = tmp_path / "driftwarden.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode = WAL")
    raw.execute("CREATE TABLE keep_me (x BLOB)")
    raw.executemany("INSERT INTO keep_me VALUES (?)", [(os.urandom(10_000),) for _ in range(200)])
    raw.execute("DELETE FROM keep_me WHERE rowid > 20")
    raw.close()
    store = Store(path)
    try:
        assert store.auto_vacuum_mode() == "none"
        assert store.freelist_count() > 0
        assert store.ensure_incremental_vacuum() is True
        assert store.auto_vacuum_mode() == "incremental"
        assert store.freelist_count() == 0
        assert count(store, "keep_me") == 20
        assert store.ensure_incremental_vacuum() is False  # once
    finally:
        store.close()
    reopened = Store(path)
    try:
        assert reopened.auto_vacuum_mode() == "incremental"
        assert reopened.schema_version() >= 3
    finally:
        reopened.close()


def test_stop_ends_a_prune_between_batches(store: Store) -> None:
    with store.transaction():
        for i in range(500):
            write_window(store, window(f"{i:05d}", OLD), METRICS)
    p = pruner(store, first_batch=10, max_batch=10)
    p.on_batch = lambda name, n: p._stop.set()  # the first batch asks to stop
    report = p.run_once()
    assert report.stopped and report.rows["windows"] == 10
    assert count(store, "windows") == 490


# -- wall-clock steps -------------------------------------------------------------------


def timed_window(name: str, end: datetime, computed_at: datetime) -> WindowRecord:
    """A window of event time ``[end - 1h, end)`` stored at ``computed_at``."""
    key = WindowKey("churn", "v1", name, iso(end - HOUR), iso(end))
    return WindowRecord(key=key, rows=100, status="ok", computed_at=computed_at)


class Clocks:
    """A wall clock and a monotonic clock the test moves apart, as a clock step does."""

    def __init__(self, wall: datetime) -> None:
        self.now, self.mono = wall, 1000.0

    def pass_(self, d: timedelta) -> None:
        self.now += d
        self.mono += d.total_seconds()

    def step(self, d: timedelta) -> None:
        self.now += d


def stepped_pruner(store: Store, clocks: Clocks) -> Pruner:
    return Pruner(store, POLICY, clock=lambda: clocks.now, monotonic=lambda: clocks.mono)


def seed_old_and_new(store: Store) -> None:
    with store.transaction():
        for name, at in (("old", OLD), ("new", NEW)):
            write_window(store, timed_window(name, at, at), METRICS)
            adb.upsert_alert(store, AlertRecord(id=name, rule="r", model="churn", state="resolved", updated_at=at))
        write_dead_letters(store, [letter(1, OLD), letter(2, NEW), letter(3, NEW)], cap=BIG_CAP)


def kept(store: Store) -> tuple[list[str], list[str], list[int]]:
    return (
        sorted(r["segment"] for r in store.query("SELECT segment FROM windows")),
        sorted(r["id"] for r in store.query("SELECT id FROM alerts")),
        sorted(r["offset"] for r in store.query('SELECT "offset" FROM dead_letters')),
    )


def test_a_clock_a_year_ahead_at_start_up_deletes_only_what_was_due(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """A VM that boots with its clock a year ahead: the first prune would delete every row
    (all are older than 30 days by that clock). It prunes as of a day after the newest row
    stored instead, and says so."""
    seed_old_and_new(store)
    clocks = Clocks(NOW + 365 * DAY)
    with caplog.at_level("WARNING", logger="driftwarden.retention"):
        stepped_pruner(store, clocks).run_once()
    assert kept(store) == (["new"], ["new"], [2, 3])
    assert "365 days, 0:00:00 ahead of what the newest row stored (plus 1 day, 0:00:00) vouches for" in caplog.text


def test_a_clock_stepped_ahead_while_running_moves_the_prune_only_by_the_monotonic_clock(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Forward a year, then back: rows stamped meanwhile carry the year-ahead time, yet the
    prune goes on by the monotonic clock; after the step back it runs as before, silently."""
    seed_old_and_new(store)
    clocks = Clocks(NOW)
    p = stepped_pruner(store, clocks)
    p.run_once()
    assert kept(store) == (["new"], ["new"], [2, 3])
    clocks.pass_(HOUR)
    clocks.step(365 * DAY)
    with store.transaction():  # the daemon goes on storing windows, stamped by the stepped clock
        write_window(store, timed_window("during", NOW + HOUR, clocks.now), METRICS)
    with caplog.at_level("WARNING", logger="driftwarden.retention"):
        p.run_once()
        assert kept(store) == (["during", "new"], ["new"], [2, 3])
        assert "365 days, 0:00:00 ahead of what the last prune (plus the monotonic time since)" in caplog.text
        caplog.clear()
        clocks.pass_(HOUR)
        clocks.step(-365 * DAY)
        p.run_once()
    assert kept(store) == (["during", "new"], ["new"], [2, 3])
    assert caplog.text == ""


def test_after_a_long_stop_the_prune_catches_up_once_fresh_windows_vouch_for_the_clock(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped 40 days (not a clock step): the first prune keeps what it cannot vouch for;
    once a window of fresh event time is stored, the wall clock is trusted again."""
    with store.transaction():
        write_window(store, timed_window("old", OLD, OLD), METRICS)
        write_window(store, timed_window("older", OLD - 40 * DAY, OLD - 40 * DAY), METRICS)
    clocks = Clocks(NOW)
    p = stepped_pruner(store, clocks)
    with caplog.at_level("WARNING", logger="driftwarden.retention"):
        p.run_once()  # as of OLD + 1 day: "older" (80 days old) goes, "old" (40) stays
    assert kept(store)[0] == ["old"]
    assert "39 days, 0:00:00 ahead" in caplog.text
    clocks.pass_(HOUR)
    with store.transaction():
        write_window(store, timed_window("fresh", NOW, clocks.now), METRICS)
    p.run_once()
    assert kept(store)[0] == ["fresh"]
