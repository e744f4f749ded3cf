"""The on-call command line against a real store: tables readable at 80 columns, the
versioned JSON, filters, windows show, dead letters (by reason, export), deliveries,
silences; read commands never write or migrate; every error says what to fix.

The commands on one seeded store run against a SQLite state dir (``--state-dir``) and
against the shared PostgreSQL of a config (``-c FILE``): ``where`` gives the arguments."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage.alerts import AlertRecord, DeliveryRecord, insert_delivery, upsert_alert
from storage.db import Store
from storage.dead_letters import DeadLetter, write_dead_letters
from storage.labels import add_counters, write_performance
from storage.oncall import window_ref
from storage.records import MetricRow, WindowKey, WindowRecord
from storage.windows import write_window
from tests.store_targets import StoreTarget, open_state_store, state_cli_args

NOW = datetime.now(UTC).replace(microsecond=0)
# the seeded windows span 1.5 h from DAY, all on one calendar day whenever the suite runs
# (windows across midnight make the table show dates, and the layout checks differ)
DAY = (NOW - timedelta(hours=3)).replace(minute=0, second=0)
DAY = DAY.replace(hour=min(DAY.hour, 21))
LONG_SEGMENT = "region=eu-west-1-frankfurt"


def _window(store: Store, start: datetime, segment: str, drifted: bool, status: str = "ok") -> str:
    key = WindowKey("churn", "v12", segment, _iso(start), _iso(start + timedelta(minutes=15)))
    metrics = [
        MetricRow("", "row_count", 600.0),
        MetricRow("age", "missing_share", 0.01),
        MetricRow("plan", "new_category_share", 0.0),
    ]
    if status == "ok":
        metrics += [
            MetricRow("", "drift_share", 0.6 if drifted else 0.2, threshold=0.5, drifted=drifted),
            MetricRow("age", "drift_score", 0.83 if drifted else 0.02, threshold=0.1, drifted=drifted, test="wasserstein"),
            MetricRow("monthly_charges", "drift_score", 1.09 if drifted else 0.03, threshold=0.1, drifted=drifted,
                      test="wasserstein"),
            MetricRow("plan", "drift_score", 0.04, threshold=0.05, drifted=False, p_value=0.04, test="chisquare"),
        ]
    write_window(store, WindowRecord(key, 600 if status == "ok" else 12, status, NOW), metrics)
    return key.id


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture
def state(tmp_path: Path) -> tuple[str, str]:
    """A seeded state dir, as the CLI is pointed at it: ``--state-dir DIR`` (or, when the
    suite runs on PostgreSQL, ``-c FILE`` naming the dir's database)."""
    folder = tmp_path / "state"
    store = open_state_store(folder)
    _seed(store)
    store.close()
    return state_cli_args(folder, tmp_path / "cli")


@pytest.fixture
def where(store_target: StoreTarget, tmp_path: Path) -> tuple[str, str]:
    """The seeded store as the CLI is pointed at it: ``--state-dir DIR`` (SQLite) or
    ``-c FILE`` (a config whose ``[storage] url`` is the test PostgreSQL)."""
    store = store_target.open()
    _seed(store)
    store.close()
    return store_target.cli_args(tmp_path)


def _seed(store: Store) -> None:
    with store.transaction():
        for i in range(6):
            start = DAY + timedelta(minutes=15 * i)
            _window(store, start, "", drifted=i >= 4)
            _window(store, start, LONG_SEGMENT, drifted=i >= 5)
        _window(store, DAY - timedelta(days=2), "", drifted=False, status="insufficient")
        write_dead_letters(store, [
            DeadLetter("predictions", 0, 10, "not_json: invalid literal", b"not json", NOW - timedelta(hours=1)),
            DeadLetter("predictions", 0, 11, "not_json: invalid literal", b"\x1b[31mred\x1b[0m [bold]x[/bold]",
                       NOW - timedelta(minutes=30)),
            DeadLetter("predictions", 0, 12, "unknown_model: fraud", b'{"model": "fraud"}', NOW - timedelta(days=3)),
            DeadLetter("predictions", 1, 7, "bad_type: features.age expected number, got string", b"\xff\xfe",
                       NOW - timedelta(minutes=5)),
        ])
        upsert_alert(store, AlertRecord(id="a1", rule="dataset-drift", model="churn", state="firing", severity="critical",
                                        value=0.6, threshold=0.5, started_at=NOW - timedelta(minutes=40),
                                        fired_at=NOW - timedelta(minutes=30), updated_at=NOW - timedelta(minutes=30)))
        upsert_alert(store, AlertRecord(id="a2", rule="dataset-drift", model="fraud", state="resolved",
                                        value=0.1, threshold=0.5, started_at=NOW - timedelta(days=2),
                                        resolved_at=NOW - timedelta(days=1), updated_at=NOW - timedelta(days=1)))
        insert_delivery(store, DeliveryRecord(id="d1", notifier="slack", kind="firing", created_at=NOW - timedelta(minutes=30),
                                              alert_id="a1", model="churn", status="sent", attempts=1,
                                              delivered_at=NOW - timedelta(minutes=29)))
        insert_delivery(store, DeliveryRecord(id="d2", notifier="retrain", kind="retrain", created_at=NOW - timedelta(minutes=30),
                                              alert_id="a1", model="churn", status="pending", attempts=3,
                                              last_error="HTTP 503 from https://retrain.example.com/hook: service unavailable",
                                              next_attempt_at=NOW + timedelta(minutes=2)))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, columns: int = 80) -> Result:
    """The real command line, in this process (typer's runner) at a terminal ``columns`` wide."""
    from typer.testing import CliRunner

    from monitor.cli.app import app

    runner = CliRunner(env={"COLUMNS": str(columns), "LINES": "50", "DRIFTWARDEN_CONFIG": None})
    res = runner.invoke(app, list(args))
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


def ok(*args: str) -> str:
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


def doc(*args: str) -> dict[str, object]:
    """The ``--json`` document, read as strict JSON (``NaN``/``Infinity`` refused)."""

    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    out = json.loads(ok(*args, "--json"), parse_constant=refuse)
    assert out["version"] == 1
    return out


def _fits(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, line
    assert "…" not in text  # nothing cut


def test_windows_table_fits_80_columns_and_shows_what_matters(where: tuple[str, str]) -> None:
    out = ok("windows", *where, "--limit", "6")
    _fits(out)
    assert "model churn" in out  # one model: said once, in the title
    assert LONG_SEGMENT in out  # the segment whole, on one line
    drifted = [line for line in out.splitlines() if "DRIFT 0.60" in line]
    # the whole segment leaves no room for both drifted columns: the first, and how many more
    assert len(drifted) >= 1 and drifted[0].rstrip().endswith("DRIFT 0.60  age +1")
    wide = [line for line in cli("windows", *where, "--limit", "6", columns=140).stdout.splitlines()
            if "DRIFT 0.60" in line]
    assert wide[0].rstrip().endswith("DRIFT 0.60  age (wasserstein 0.83), monthly_charges (wasserstein 1.09)")
    # times are short: hours and minutes, no year, no ISO "T"
    assert str(NOW.year) not in out and ":00.000Z" not in out
    first = [line for line in out.splitlines() if "DRIFT 0.60" in line][0]
    assert re.search(r" \d\d:\d\d–\d\d:\d\d ", first), first


MODELS = [("churn", "v12"), ("fraud-detector-eu", "2026.11.2"), ("ltv-forecast", "v3")]
DRIFTED = {"monthly_charges": 1.09, "tenure_days": 0.41, "age": 0.83, "contract_type": 0.2, "payment_method": 0.35}


def _seed_models(store: Store) -> None:
    """Windows of three models with versions of their own, each with five drifted columns
    and, once labels matured, a coverage and an accuracy with its interval."""
    from storage.labels import write_performance

    with store.transaction():
        for i in range(3):
            start = DAY + timedelta(minutes=15 * i)
            for model, version in MODELS:
                key = WindowKey(model, version, "", _iso(start), _iso(start + timedelta(minutes=15)))
                metrics = [MetricRow("", "drift_share", 1.0, threshold=0.5, drifted=True)] + [
                    MetricRow(c, "drift_score", v, threshold=0.1, drifted=True, test="wasserstein")
                    for c, v in DRIFTED.items()
                ]
                write_window(store, WindowRecord(key, 12345, "ok", NOW), metrics)
                write_performance(store, key, [MetricRow("", "label_coverage", 0.93),
                                               MetricRow("", "accuracy", 0.831, ci_low=0.8, ci_high=0.86)],
                                  computed_at=NOW)
    store.close()


def _table_rows(out: str) -> list[str]:
    """The lines under a table's header rule; each must be one window (its ref first)."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip() and set(line.strip()) == {"─"})
    end = next((i for i, line in enumerate(lines) if line.startswith("hidden at ")), len(lines))
    body = [line.strip() for line in lines[rule + 1:end] if line.strip()]
    for line in body:  # a cell wrapped onto a line of its own would not start with a ref
        assert re.match(r"[0-9a-f]{8}  ", line), (line, out)
    return body


def test_windows_table_at_80_columns_keeps_what_tells_windows_apart(
    store_target: StoreTarget, tmp_path: Path
) -> None:
    """Several models (not a terminal, or 80 columns): every window on one line with its
    model, version, time, rows and verdict whole; the drifted columns shrink to the first
    and a count; what does not fit is named under the table, never squeezed."""
    _seed_models(store_target.open())
    where = store_target.cli_args(tmp_path / "cli")
    known = {w["ref"]: w for w in doc("windows", *where)["items"]}  # type: ignore[union-attr]
    assert len(known) == 9
    out = ok("windows", *where)
    _fits(out)
    rows = _table_rows(out)
    assert len(rows) == 9
    for line in rows:
        w = known[line[:8]]
        assert re.search(rf"  {re.escape(w['model'])} +{re.escape(w['version'])} +\d\d:\d\d–\d\d:\d\d"
                         r" +12345  DRIFT 1\.00  age \+4$", line), line
    assert out.splitlines()[-1] == "hidden at 80 columns: labelled, performance (see --json)"
    # one model: it goes to the title, and the labels' columns fit beside the drifted ones
    one = ok("windows", *where, "--model", "fraud-detector-eu")
    _fits(one)
    assert "model fraud-detector-eu, version 2026.11.2" in one.splitlines()[0]
    rows = _table_rows(one)
    assert len(rows) == 3
    assert all(re.search(r"  12345  DRIFT 1\.00  age \+4 +93%  accuracy 0\.831$", line) for line in rows), one
    # narrower than what tells windows apart: values are cut in their middle, still one line each
    # (the ref, which `windows show` takes, never)
    narrow = cli("windows", *where, columns=50).stdout
    assert max(len(line) for line in narrow.splitlines()) <= 50, narrow
    assert {line[:8] for line in _table_rows(narrow)} == set(known), narrow
    assert "fra…-eu" in narrow
    # a wide terminal shows everything whole
    wide = cli("windows", *where, "--model", "fraud-detector-eu", columns=260).stdout
    rows = _table_rows(wide)
    assert all(line.endswith(
        "DRIFT 1.00  age (wasserstein 0.83), contract_type (wasserstein 0.2), monthly_charges (wasserstein 1.09),"
        " payment_method (wasserstein 0.35), tenure_days (wasserstein 0.41)"
        "       93%  accuracy 0.831 [0.8, 0.86]") for line in rows), wide


def test_drifted_columns_name_their_statistic_a_p_value_is_no_distance(
    store_target: StoreTarget, tmp_path: Path
) -> None:
    # "amount 1.14e-19, income 0.31": the KS p-value read like a (tiny) distance
    store = store_target.open()
    with store.transaction():
        key = WindowKey("churn", "v1", "", _iso(DAY), _iso(DAY + timedelta(minutes=15)))
        write_window(store, WindowRecord(key, 600, "ok", NOW), [
            MetricRow("", "drift_share", 1.0, threshold=0.5, drifted=True),
            MetricRow("amount", "drift_score", 1.14e-19, threshold=0.05, drifted=True, p_value=1.14e-19, test="ks"),
            MetricRow("income", "drift_score", 0.3123, threshold=0.1, drifted=True, test="wasserstein"),
        ])
    store.close()
    where = store_target.cli_args(tmp_path / "cli")
    [row] = _table_rows(cli("windows", *where, columns=140).stdout)
    assert row.endswith("  amount (ks p=1.1e-19), income (wasserstein 0.312)"), row
    # the JSON keeps the stored figures as they are
    [item] = doc("windows", *where)["items"]  # type: ignore[misc]
    assert item["drifted_columns"] == [  # type: ignore[index]
        {"column": "amount", "test": "ks", "score": 1.14e-19},
        {"column": "income", "test": "wasserstein", "score": 0.3123},
    ]


def test_windows_filters_and_json(where: tuple[str, str]) -> None:
    everything = doc("windows", *where, "--limit", "100")
    assert everything["kind"] == "windows" and len(everything["items"]) == 13  # type: ignore[arg-type]
    recent = doc("windows", *where, "--since", "1d", "--limit", "100")["items"]
    assert len(recent) == 12  # type: ignore[arg-type]
    drifted = doc("windows", *where, "--state", "drifted", "--limit", "100")["items"]
    assert {(w["segment"], w["dataset_drift"]) for w in drifted} == {("", True), (LONG_SEGMENT, True)}  # type: ignore[index, union-attr]
    assert len(drifted) == 3  # type: ignore[arg-type]
    first = drifted[0]  # type: ignore[index]
    assert first["drifted_columns"] == [
        {"column": "age", "test": "wasserstein", "score": 0.83},
        {"column": "monthly_charges", "test": "wasserstein", "score": 1.09},
    ]
    assert first["ref"] == window_ref(first["id"])
    insufficient = doc("windows", *where, "--state", "insufficient")["items"]
    assert [w["status"] for w in insufficient] == ["insufficient"]  # type: ignore[index]
    segment = doc("windows", *where, "--segment", "", "--model", "churn", "--limit", "100")["items"]
    assert {w["segment"] for w in segment} == {""}  # type: ignore[index]
    assert doc("windows", *where, "--model", "fraud")["items"] == []


def test_a_model_the_store_does_not_have_is_named_on_stderr(where: tuple[str, str]) -> None:
    # an empty table for a typo read as "all quiet"; stdout stays a table (or JSON)
    for command in ("windows", "alerts"):
        typo = cli(command, *where, "--model", "chrun")
        assert typo.returncode == 0, typo.stderr
        assert "--model 'chrun': no window or alert of that model in this store; its models: churn" in typo.stderr
        as_json = cli(command, *where, "--model", "chrun", "--json")
        assert json.loads(as_json.stdout)["items"] == [] and "its models: churn" in as_json.stderr
    quiet = cli("alerts", *where, "--model", "churn", "--state", "resolved")
    assert "no window or alert" not in quiet.stderr  # a known model with nothing to list: no hint


def test_an_infinite_figure_is_null_in_the_json_and_inf_in_the_table(store_target: StoreTarget, tmp_path: Path) -> None:
    # a feature value of 1e308 makes a Wasserstein distance infinite; json.dumps wrote a bare
    # ``Infinity``, which no strict JSON reader accepts
    store = store_target.open()
    key = WindowKey("churn", "v12", "", _iso(DAY), _iso(DAY + timedelta(minutes=15)))
    write_window(store, WindowRecord(key, 600, "ok", NOW), [
        MetricRow("", "row_count", 600.0),
        MetricRow("age", "drift_score", math.inf, threshold=0.1, drifted=True, test="wasserstein"),
    ])
    store.close()
    where = store_target.cli_args(tmp_path)
    figures = doc("windows", "show", key.id, *where)["item"]["figures"]  # type: ignore[index]
    assert [f["value"] for f in figures if f["metric"] == "drift_score"] == [None]  # type: ignore[index]
    assert doc("windows", *where)["items"][0]["drifted_columns"] == [  # type: ignore[index]
        {"column": "age", "test": "wasserstein", "score": None}]
    assert "inf" in ok("windows", "show", key.id, *where)


def test_windows_show_prints_stream_text_as_it_is(store_target: StoreTarget, tmp_path: Path) -> None:
    """A version or segment value from the stream is shown as sent, never as markup: one
    ending in a backslash was shown with a second one (rich's ``escape`` adds it so that
    it cannot escape the markup after it), and one holding ``[link=...]`` stays text."""
    store = store_target.open()
    key = WindowKey("churn", "[link=http://evil.example]v", "region=eu\\", _iso(DAY), _iso(DAY + timedelta(minutes=15)))
    write_window(store, WindowRecord(key, 600, "ok", NOW), [MetricRow("", "row_count", 600.0)])
    store.close()
    out = ok("windows", "show", key.id, *store_target.cli_args(tmp_path))
    shown = {ln.split()[0]: ln.split(None, 1)[1] for ln in out.splitlines()[1:12] if len(ln.split()) > 1}
    assert shown["segment"] == "region=eu\\", out  # one backslash, as stored
    assert shown["version"] == "[link=http://evil.example]v"


def test_huge_numbers_are_refused_not_a_traceback(where: tuple[str, str]) -> None:
    # each overflowed a date or SQLite's 64-bit integer: a traceback
    since = cli("windows", *where, "--since", "100000000d")
    assert since.returncode == 2 and "--since: expected a duration" in since.stderr, since.stderr
    limit = cli("windows", *where, "--limit", "9" * 23)
    assert limit.returncode == 2 and "Invalid value for '--limit'" in limit.stderr, limit.stderr
    silence = cli("silence", "add", *where, "--model", "churn", "--for", "9999999d")
    assert silence.returncode == 2 and "--for: expected a duration" in silence.stderr, silence.stderr


def test_windows_show_every_figure(where: tuple[str, str]) -> None:
    items = doc("windows", *where, "--state", "drifted")["items"]
    wid = items[0]["id"]  # type: ignore[index]
    ref = window_ref(wid)
    out = ok("windows", "show", ref[:6], *where)
    _fits(out)
    assert wid in out and "drift_share" in out and "(threshold 0.5) DRIFT" in out
    for expected in ("wasserstein", "chisquare", "0.83", "1.09", "0.04", "0.05"):
        assert expected in out, expected
    full = doc("windows", "show", wid, *where)
    assert full["kind"] == "window"
    item = full["item"]
    figures = {(f["column"], f["metric"]): f for f in item["figures"]}  # type: ignore[index]
    assert len(figures) == 7
    assert figures[("plan", "drift_score")] == {"column": "plan", "metric": "drift_score", "value": 0.04,
                                                "p_value": 0.04, "threshold": 0.05, "drifted": False, "test": "chisquare",
                                                "ci_low": None, "ci_high": None}
    assert figures[("", "drift_share")]["drifted"] is True
    missing = cli("windows", "show", "ffffffff", *where)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        'driftwarden: no window "ffffffff": give its ref (first column of `driftwarden windows`) or its full id'
    )


def test_alerts_and_deliveries(where: tuple[str, str]) -> None:
    out = ok("alerts", *where)
    _fits(out)
    assert "firing" in out and "critical" in out and "resolved" in out
    firing = doc("alerts", *where, "--state", "firing")["items"]
    assert [a["id"] for a in firing] == ["a1"]  # type: ignore[index]
    assert [a["id"] for a in doc("alerts", *where, "--since", "2h")["items"]] == ["a1"]  # type: ignore[index]
    assert [a["id"] for a in doc("alerts", *where, "--model", "fraud")["items"]] == ["a2"]  # type: ignore[index]
    _fits(ok("deliveries", *where))
    wide = cli("deliveries", *where, columns=160).stdout
    assert "HTTP 503 from https://retrain.example.com/hook: service unavailable" in wide
    pending = doc("deliveries", *where, "--state", "pending")["items"]
    assert [(d["id"], d["attempts"]) for d in pending] == [("d2", 3)]  # type: ignore[index]
    assert [d["id"] for d in doc("deliveries", *where, "--notifier", "slack")["items"]] == ["d1"]  # type: ignore[index]


def test_alerts_say_which_column_and_window_and_how_long_without_data(tmp_path: Path) -> None:
    """On call, two alerts of one ``column = "*"`` rule differ only by their column, the
    window an alert judged last is what ``windows show`` takes, and a no-data alert's
    figures are seconds: the table shows the column, the window's ref and durations."""
    folder = tmp_path / "state"
    store = open_state_store(folder)
    wid = _window(store, DAY, "", drifted=True)
    with store.transaction():
        for i, column in enumerate(("age", "monthly_charges")):
            upsert_alert(store, AlertRecord(
                id=f"c{i}", rule="column-drift", model="churn", state="firing", severity="critical",
                metric="drift_score", column=column, version="v12", value=0.83 + i, threshold=0.3,
                started_at=NOW - timedelta(minutes=20), fired_at=NOW - timedelta(minutes=20),
                last_window_id=wid, updated_at=NOW - timedelta(minutes=20)))
        upsert_alert(store, AlertRecord(
            id="nd", rule="no-predictions", model="churn", state="firing", severity="critical",
            metric="no_data", value=64.3, threshold=3600.0, started_at=NOW - timedelta(minutes=1),
            fired_at=NOW - timedelta(minutes=1), updated_at=NOW - timedelta(minutes=1)))
    store.close()
    where = state_cli_args(folder, tmp_path / "cli")
    out = ok("alerts", *where)
    _fits(out)
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith(("column-drift", "no-"))}
    lines = [line for line in out.splitlines() if line.startswith("column-drift")]
    assert sorted(line.split()[1] for line in lines) == ["age", "monthly_charges"], out
    assert all(line.rstrip().endswith(window_ref(wid)) for line in lines), out
    assert "1m 04s / 1h 00m" in rows["no-predictions"], out
    items = {a["id"]: a for a in doc("alerts", *where)["items"]}  # type: ignore[union-attr]
    assert items["c0"]["ref"] == window_ref(wid) and items["nd"]["ref"] is None
    assert ok("windows", "show", window_ref(wid), *where).count(wid) == 1
    assert all(a["silenced"] is None for a in items.values())


def test_alerts_say_which_are_silenced(tmp_path: Path) -> None:
    """After ``silence add`` the alert kept reading plain ``firing``: nothing said that
    nobody would be told of it any more."""
    folder = tmp_path / "state"
    store = open_state_store(folder)
    with store.transaction():
        for rule in ("charges-missing", "age-drift"):
            upsert_alert(store, AlertRecord(id=rule, rule=rule, model="churn", state="firing", severity="warning",
                                            metric="missing_share", column="plan", value=0.3, threshold=0.1,
                                            fired_at=NOW - timedelta(minutes=5), updated_at=NOW - timedelta(minutes=5)))
    store.close()
    where = state_cli_args(folder, tmp_path / "cli")
    added = doc("silence", "add", *where, "--rule", "charges-missing", "--for", "1h")
    out = ok("alerts", *where)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith(("charges", "age"))}
    assert "firing (silenced)" in lines["charges-missing"], out
    assert "silenced" not in lines["age-drift"], out
    items = {a["id"]: a for a in doc("alerts", *where)["items"]}  # type: ignore[union-attr]
    assert items["charges-missing"]["silenced"] == added["item"]["id"]  # type: ignore[index]
    assert items["age-drift"]["silenced"] is None


def test_windows_show_gives_a_performance_figure_its_interval(tmp_path: Path) -> None:
    """``windows`` showed ``accuracy 0.608 [0.56, 0.655]``, ``windows show`` the same window's
    accuracy as a bare ``0.6075``: the interval says whether a drop is more than noise."""
    folder = tmp_path / "state"
    store = open_state_store(folder)
    key = WindowKey("churn", "v12", "", _iso(DAY), _iso(DAY + timedelta(minutes=15)))
    with store.transaction():
        write_window(store, WindowRecord(key, 400, "ok", NOW), [MetricRow("", "row_count", 400.0)])
        write_performance(store, key, [MetricRow("", "accuracy", 0.6075, ci_low=0.56, ci_high=0.655)],
                          computed_at=NOW)
    store.close()
    where = state_cli_args(folder, tmp_path / "cli")
    out = ok("windows", "show", window_ref(key.id), *where)
    assert re.search(r"accuracy +0\.6075 \[0\.56, 0\.655\]", out), out
    figures = {f["metric"]: f for f in doc("windows", "show", key.id, *where)["item"]["figures"]}  # type: ignore[index]
    assert (figures["accuracy"]["ci_low"], figures["accuracy"]["ci_high"]) == (0.56, 0.655)


def test_dead_letters_list_by_reason_and_export(where: tuple[str, str], tmp_path: Path) -> None:
    out = ok("dead-letters", *where)
    _fits(out)
    assert "\x1b" not in out  # a payload cannot drive the terminal
    assert "\\x1b[31mred" in out and "[bold]x[/bold]" in out  # shown, not interpreted
    wide = cli("dead-letters", *where, columns=160).stdout
    assert "bad_type: features.age expected number, got string" in wide
    reasons = doc("dead-letters", "--by-reason", *where)
    assert reasons["kind"] == "dead_letter_reasons"
    assert [(r["code"], r["n"]) for r in reasons["items"]] == [("not_json", 2), ("bad_type", 1), ("unknown_model", 1)]  # type: ignore[index]
    recent = doc("dead-letters", "--by-reason", "--since", "2h", *where)["items"]
    assert [(r["code"], r["n"]) for r in recent] == [("not_json", 2), ("bad_type", 1)]  # type: ignore[index]
    only = doc("dead-letters", "--reason", "not_json", *where)["items"]
    assert [d["offset"] for d in only] == [11, 10]  # type: ignore[index]
    # a code is matched whole, the same on both stores (SQLite's LIKE ignores case, PostgreSQL's
    # does not); codes are lower case, so one typed in capitals finds the same letters
    for code, offsets in (("NOT_JSON", [11, 10]), ("Unknown_Model", [12]), ("not", []), ("not_%", []), ("_", [])):
        assert [d["offset"] for d in doc("dead-letters", "--reason", code, *where)["items"]] == offsets, code  # type: ignore[index]
    # a typo in --reason or --state answered like "none of those"
    assert ok("dead-letters", "--reason", "not-json", *where).strip() == (
        'no dead letters with reason "not-json"; stored reason codes: not_json, bad_type, unknown_model')
    bogus = cli("deliveries", "--state", "skipped", *where)
    assert bogus.returncode == 2 and 'expected one of pending, sent, dead, got "skipped"' in bogus.stderr, bogus.stderr
    target = tmp_path / "letters.jsonl"
    assert ok("dead-letters", "--export", str(target), *where).strip() == (
        f"exported 4 dead letter(s) to {target}"
    )
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [d["offset"] for d in lines] == [10, 11, 12, 7]  # oldest first
    assert lines[0]["payload"] == "not json" and lines[0]["payload_encoding"] == "utf-8"
    assert lines[3]["payload_encoding"] == "base64" and lines[3]["payload"] == "//4="
    again = cli("dead-letters", "--export", str(target), *where)
    assert again.returncode == 2
    assert again.stderr.strip() == f"driftwarden: --export: {target} exists; give a new file name (or - for stdout)"


def test_silence_add_list_expire(where: tuple[str, str]) -> None:
    out = ok("silence", "add", *where, "--model", "churn", "--for", "2h",
             "--comment", "deploying v13", "--by", "alice")
    sid = out.split()[1]
    assert sid.startswith("sil_") and "churn / any rule until" in out
    listed = doc("silence", "list", *where)["items"]
    assert [(s["id"], s["model"], s["created_by"], s["active"]) for s in listed] == [(sid, "churn", "alice", True)]  # type: ignore[index]
    table = ok("silence", "list", *where)
    _fits(table)
    assert sid in table and "deploying v13" in table
    assert ok("silence", "expire", sid, *where).strip() == f"silence {sid} expired"
    assert doc("silence", "list", *where)["items"] == []
    assert len(doc("silence", "list", "--all", *where)["items"]) == 1  # type: ignore[arg-type]
    gone = cli("silence", "expire", sid, *where)
    assert gone.returncode == 1 and f'no active silence "{sid}"' in gone.stderr
    bad = cli("silence", "add", *where, "--model", "churn")
    assert bad.returncode == 2
    assert 'give either --for (like "2h") or --until' in bad.stderr


def _older_database(folder: Path) -> tuple[Path, int]:
    """A database at the schema before the latest (every migration but the last applied)."""
    from storage.schema import MIGRATIONS, PostgresOnly

    folder.mkdir()
    db = folder / "driftwarden.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT, applied_at TEXT)")
    for version, description, statements in MIGRATIONS[:-1]:
        for sql in statements:
            if not isinstance(sql, PostgresOnly):  # as Store.migrate does on SQLite
                conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, '2026-01-01T00:00:00.000Z')", (version, description))
    conn.commit()
    conn.close()
    return db, MIGRATIONS[-1][0]


@pytest.mark.sqlite_only("an older SQLite file, read-only by its mode, under --state-dir")
def test_read_commands_never_write_or_migrate(tmp_path: Path) -> None:
    # an older schema: reads are refused with the fix, and the file is untouched
    db, top = _older_database(tmp_path / "old")
    state = db.parent
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    res = cli("windows", "--state-dir", str(state))
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"driftwarden: {db} has schema version {top - 1}, this driftwarden expects {top}: start the upgraded"
        " daemon once or run `driftwarden migrate` (back up the state dir first)"
    )
    for args in (("status",), ("alerts",), ("dead-letters",), ("deliveries",), ("silence", "list")):
        assert cli(*args, "--state-dir", str(state)).returncode == 1
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    # migrate upgrades it; reads work again
    assert ok("migrate", "--state-dir", str(state)).strip() == f"{db}: schema version {top - 1} -> {top}"
    assert ok("status", "--state-dir", str(state), "--json")
    # a read-only database file can still be read
    db.chmod(0o444)
    wal = state / "driftwarden.db-wal"
    assert ok("windows", "--state-dir", str(state)) and (not wal.exists() or wal.stat().st_size == 0)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("windows",), 2, "driftwarden: give --config FILE (or DRIFTWARDEN_CONFIG) or --state-dir DIR"),
        (("windows", "--state-dir", "{empty}"), 1,
         "driftwarden: no database at {empty}/driftwarden.db: the daemon has not run with this state dir yet,"
         " or --state-dir points elsewhere (give the folder that holds driftwarden.db)"),
        (("windows", "--since", "yesterday", "{state}"), 2,
         'driftwarden: --since: expected a duration like "2h" or a time like 2026-11-23T14:00Z, got "yesterday"'),
        (("dead-letters", "--since", "99999999d", "{state}"), 2,
         'driftwarden: --since: expected a duration of at most 100 years ("36500d"), got "99999999d"'),
        (("windows", "--state", "red", "{state}"), 2,
         'driftwarden: --state: expected one of ok, insufficient, error, drifted, stable, got "red"'),
        (("alerts", "--state", "on", "{state}"), 2,
         'driftwarden: --state: expected one of pending, firing, resolved, inactive, got "on"'),
    ],
)
def test_errors_say_what_to_fix(
    state: tuple[str, str], tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli(*[b for a in args for b in (state if a == "{state}" else (a.format(empty=empty),))])
    assert res.returncode == code
    assert res.stderr.strip() == message.format(empty=empty)
    assert "Traceback" not in res.stderr


def test_version() -> None:
    from importlib.metadata import version

    assert ok("--version").strip() == f"driftwarden {version('driftwarden')}"


@pytest.mark.sqlite_only("the demo's own SQLite state dir")
def test_demo_refuses_a_folder_it_did_not_create(tmp_path: Path) -> None:
    from monitor.demo.run import MARKER, demo_state_refusal

    mine = tmp_path / "data"
    mine.mkdir()
    (mine / "driftwarden.db").write_text("precious")
    res = cli("demo", "--state-dir", str(mine))
    assert res.returncode == 2
    assert "holds files the demo did not create (no .driftwarden-demo marker)" in res.stdout
    assert (mine / "driftwarden.db").read_text() == "precious"
    assert demo_state_refusal(tmp_path / "new") is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert demo_state_refusal(empty) is None
    (mine / MARKER).write_text("")
    assert demo_state_refusal(mine) is None


def test_export_pages_through_the_letters_oldest_first(store_target: StoreTarget) -> None:
    """The export read every letter in one query (a table of ~2 GB of payloads, several GB in
    memory); it now reads a page at a time, and pages join without gap or repeat."""
    from datetime import UTC, datetime

    from monitor.cli.oncall import EXPORT_PAGE, export_dead_letters
    from storage.dead_letters import DeadLetter, write_dead_letters
    from storage.limits import DeadLetterCap

    store = store_target.open()
    n = 2 * EXPORT_PAGE + 17
    now = datetime.now(UTC)
    letters = [DeadLetter("p", 0, i, "not_json: x" if i % 3 else "empty: y", b"%d" % i, now) for i in range(n)]
    assert write_dead_letters(store, letters, cap=DeadLetterCap(per_minute=10_000, payloads_per_minute=10_000)).stored == n
    lines: list[str] = []
    assert export_dead_letters(store, Path("-"), since=None, reason=None, echo=lines.append) == n
    assert [json.loads(x)["offset"] for x in lines] == list(range(n))
    some: list[str] = []
    assert export_dead_letters(store, Path("-"), since=None, reason="empty", echo=some.append) == len(range(0, n, 3))
    assert [json.loads(x)["payload"] for x in some] == [str(i) for i in range(0, n, 3)]
    store.close()


def test_windows_show_takes_the_options_given_before_it(where: tuple[str, str]) -> None:
    # `windows --state-dir D show REF` (or `-c FILE`): the store named before `show` is read,
    # as is --json; it used to say "give --config FILE ... or --state-dir DIR"
    wid = doc("windows", *where, "--state", "drifted")["items"][0]["id"]  # type: ignore[index]
    ref = window_ref(wid)
    out = ok("windows", *where, "show", ref)
    assert wid in out and "drift_share" in out
    item = json.loads(ok("windows", *where, "--json", "show", ref))["item"]
    assert item["id"] == wid and len(item["figures"]) == 7
    # the listing's filters do not apply to one window: refused, not silently ignored
    res = cli("windows", *where, "--model", "churn", "show", ref)
    assert res.returncode == 2
    assert res.stderr.strip() == (
        "driftwarden: --model: filter(s) of the `windows` listing, not of `windows show` (one window);"
        " leave them out"
    )


@pytest.mark.sqlite_only("a config naming a SQLite state dir")
def test_silence_add_refuses_a_model_the_config_does_not_have(tmp_path: Path) -> None:
    # as POST /api/v1/silences does: a typo in --model would mute nothing while the
    # operator believes the model muted; it used to be stored without a word
    (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n'
        '[[models]]\nname = "churn"\nreference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n'
    )
    open_state_store(tmp_path / "state").close()
    res = cli("silence", "add", "-c", str(cfg), "--model", "chrun", "--for", "2h")
    assert res.returncode == 2
    assert res.stderr.strip() == 'driftwarden: silence add: unknown model "chrun"; the config\'s models: churn'
    assert doc("silence", "list", "-c", str(cfg))["items"] == []
    out = ok("silence", "add", "-c", str(cfg), "--model", "churn", "--for", "2h")
    assert "churn / any rule until" in out


def test_status_titles_give_the_totals_their_counts_add_up_to(where: tuple[str, str]) -> None:
    # 13 windows (12 ok, 1 insufficient) made "windows by model (2)": the number of rows of
    # a table of counts, read as the number of windows
    out = ok("status", *where)
    assert "windows by model (13)\n" in out, out
    assert "alerts (2)\n" in out and "deliveries (2)\n" in out, out
    counts = doc("status", *where)["item"]
    assert sum(r["n"] for r in counts["windows"]) == 13  # type: ignore[index]


def test_status_shows_the_early_labels_dropped_past_max_early(where: tuple[str, str], store_target: StoreTarget) -> None:
    # dropped_early_labels was exported to /metrics but missing from the status table, so an
    # on-call reading `status` saw no sign of labels thrown away past labels.max_early
    store = store_target.open()
    with store.transaction():
        add_counters(store, "churn", {"predictions": 40, "early": 9, "unmatched_labels": 2, "dropped_early_labels": 3})
    store.close()
    out = ok("status", *where)
    table = out[out.index("label join (1)"):].splitlines()
    # every header whole on 80 columns: "predictions" was cut into "predictio" / "ns"
    assert table[1].split() == ["expired", "expired", "dropped"], out
    assert table[2].split() == ["model", "preds", "joined", "dup", "labels", "early", "labels", "preds", "unmatched", "early"], out
    assert table[4].split() == ["churn", "40", "0", "0", "9", "0", "0", "2", "3"], out
    assert doc("status", *where)["item"]["label_join"]["churn"]["dropped_early_labels"] == 3  # type: ignore[index]


def test_silence_list_json_gives_times_as_every_other_json_does(where: tuple[str, str]) -> None:
    # they were Python's isoformat ("2026-11-29T15:26:04.524000+00:00"), unlike the alerts'
    # and windows' "…T15:26:04.524Z"
    ok("silence", "add", *where, "--model", "churn", "--until", "2099-11-24T09:00:00.250+02:00")
    (item,) = doc("silence", "list", *where)["items"]  # type: ignore[misc]
    assert item["ends_at"] == "2099-11-24T07:00:00.250Z"  # type: ignore[index]
    for key in ("starts_at", "created_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item[key]), item  # type: ignore[index]
    assert "11-24 07:00" in ok("silence", "list", *where)


def test_a_window_whose_figures_failed_is_found_and_says_why(where: tuple[str, str], store_target: StoreTarget) -> None:
    # `windows --state error` was refused, `windows --json` left `error` out and `windows show`
    # printed "status error" without the reason stored beside it
    key = WindowKey("churn", "v12", "", _iso(DAY + timedelta(hours=2)), _iso(DAY + timedelta(hours=2, minutes=15)))
    store = store_target.open()
    with store.transaction():
        write_window(store, WindowRecord(key, 600, "error", NOW, error="ValueError: boom in wasserstein"),
                     [MetricRow("", "row_count", 600.0)])
    store.close()
    items = doc("windows", *where, "--state", "error")["items"]
    assert [(w["id"], w["status"], w["error"]) for w in items] == [  # type: ignore[index]
        (key.id, "error", "ValueError: boom in wasserstein")]
    assert all(w["error"] == "" for w in doc("windows", *where, "--state", "ok")["items"])  # type: ignore[index]
    shown = ok("windows", "show", window_ref(key.id), *where)
    assert re.search(r"^  error +ValueError: boom in wasserstein$", shown, re.M), shown


def test_windows_show_refuses_a_limit_given_before_it(where: tuple[str, str]) -> None:
    # --limit of the listing has a default, so it escaped the check of the other filters:
    # `windows --limit 5 show REF` was accepted and the limit ignored
    wid = doc("windows", *where, "--state", "drifted")["items"][0]["id"]  # type: ignore[index]
    res = cli("windows", *where, "--limit", "5", "show", window_ref(wid))
    assert res.returncode == 2, res.stdout
    assert "--limit" in res.stderr and "leave them out" in res.stderr


@pytest.mark.sqlite_only("a --state-dir beside a config naming another SQLite state dir")
def test_windows_show_keeps_a_state_dir_given_before_it_beside_a_config_after_it(
    state: tuple[str, str], tmp_path: Path,
) -> None:
    # `windows --state-dir D show REF -c FILE` read FILE's state dir: the --state-dir given
    # before `show` was dropped without a word as soon as `show` had an option of its own;
    # given both after `show`, --state-dir wins, and so it does given before
    (tmp_path / "ref.csv").write_text("age,prediction\n1,0.5\n")
    other = tmp_path / "other.toml"
    other.write_text(f'[daemon]\nstate_dir = "{tmp_path / "elsewhere"}"\n[[models]]\nname = "churn"\n'
                     'reference = "ref.csv"\n[models.features]\nnumerical = ["age"]\n')
    wid = doc("windows", *state, "--state", "drifted")["items"][0]["id"]  # type: ignore[index]
    res = cli("windows", *state, "show", window_ref(wid), "-c", str(other))
    assert res.returncode == 0, res.stderr
    assert wid in res.stdout
