"""A window's figures as stored, on both stores: one set-based statement on PostgreSQL, one
statement per row on SQLite, and the same rows read back from either."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage.db import Store
from storage.dialect import POSTGRES_DIALECT, SQLITE_DIALECT
from storage.labels import write_performance
from storage.records import MetricRow, WindowKey, WindowRecord
from storage.windows import metric_rows, window_metrics, windows_with_verdicts, write_window
from tests.storage.migration_helpers import migrate_before
from tests.store_targets import StoreTarget

KEY = WindowKey("churn", "v1", "", "2026-11-23T00:00:00.000Z", "2026-11-23T00:01:00.000Z")
NOW = datetime(2026, 11, 23, 0, 2, tzinfo=UTC)


def _stored(store) -> dict[tuple[str, str], dict]:
    return {(r["column"], r["metric"]): r for r in window_metrics(store, KEY.id)}


def test_figures_keep_their_values_on_both_stores(store_target: StoreTarget) -> None:
    """NaN is stored as NULL (SQLite has none); ±inf, 0/1 verdicts and None come back as they
    went in; a (column, metric) given twice keeps the last, as a row-by-row upsert would."""
    store = store_target.open()
    rows = [
        MetricRow("", "row_count", 120.0),
        MetricRow("age", "drift_score", 0.25, threshold=0.1, drifted=True, p_value=None, test="wasserstein"),
        MetricRow("age", "missing_share", math.nan),
        MetricRow("plan", "drift_score", math.inf, threshold=0.1, drifted=False, test="psi"),
        MetricRow("plan", "missing_share", -math.inf),
        MetricRow("plan", "missing_share", 0.5),  # the same figure again: the last wins
        MetricRow("score", "drift_score", 1e-300, threshold=0.05, drifted=True, p_value=1e-300, test="ks"),
    ]
    with store.transaction():
        write_window(store, WindowRecord(key=KEY, rows=120, status="ok", computed_at=NOW, reference="r"), rows)
    got = _stored(store)
    assert len(got) == 6
    assert got[("", "row_count")]["value"] == 120.0 and got[("", "row_count")]["drifted"] is None
    age = got[("age", "drift_score")]
    assert (age["value"], age["threshold"], age["drifted"], age["p_value"], age["test"]) == (
        0.25, 0.1, 1, None, "wasserstein")
    assert got[("age", "missing_share")]["value"] is None
    assert got[("plan", "drift_score")]["value"] == math.inf and got[("plan", "drift_score")]["drifted"] == 0
    assert got[("plan", "missing_share")]["value"] == 0.5
    score = got[("score", "drift_score")]
    assert score["value"] == 1e-300 and score["p_value"] == 1e-300  # no digit lost on the way
    assert {r["family"] for r in got.values()} == {"data"}

    # the window written again: its old data figures go, performance figures stay
    with store.transaction():
        write_performance(store, KEY, [
            MetricRow("", "accuracy", 0.75, ci_low=0.7, ci_high=-math.inf),
            MetricRow("", "f1", math.nan, ci_low=None, ci_high=math.inf),
        ], computed_at=NOW)
        write_window(store, WindowRecord(key=KEY, rows=130, status="ok", computed_at=NOW, reference="r"),
                     [MetricRow("", "row_count", 130.0)])
    got = _stored(store)
    assert set(got) == {("", "row_count"), ("", "accuracy"), ("", "f1")}
    acc, f1 = got[("", "accuracy")], got[("", "f1")]
    assert (acc["family"], acc["value"], acc["ci_low"], acc["ci_high"]) == ("performance", 0.75, 0.7, -math.inf)
    assert (f1["value"], f1["ci_low"], f1["ci_high"]) == (None, None, math.inf)
    assert got[("", "row_count")]["value"] == 130.0


@pytest.mark.sqlite_only("SQLite's statements with NULL literals")
def test_sqlite_stores_exactly_the_rows_of_metric_rows(tmp_path: Path) -> None:
    """On SQLite runs of rows with None in the same fields share a statement with NULL
    literals there: the rows stored are still exactly metric_rows' (read in key order: the
    table is clustered by its key since migration 12)."""
    store = Store(tmp_path / "d.db")
    rows = [
        MetricRow("", "row_count", 120.0),
        MetricRow("a", "missing_share", 0.0),
        MetricRow("a", "out_of_range_share", math.nan),
        MetricRow("a", "drift_score", 0.2, threshold=0.1, drifted=True, test="wasserstein"),
        MetricRow("b", "drift_score", 0.5, threshold=0.05, drifted=False, p_value=0.5, test="ks"),
        MetricRow("a", "missing_share", 0.25),  # again: the last value, in the first place
        MetricRow("", "drift_share", 0.5, threshold=0.5, drifted=True),
        MetricRow("c", "drift_score", math.nan, threshold=math.inf, drifted=False, p_value=math.nan, test="z"),
        MetricRow("", "drifted_columns", 1.0),
        MetricRow("d", "missing_share", 2, threshold=-math.inf, drifted=False),  # an int value, an infinity
    ]
    with store.transaction():
        write_window(store, WindowRecord(key=KEY, rows=120, status="ok", computed_at=NOW, reference="r"), rows)
    stored = store.conn.execute(
        'SELECT window_id, model, "column", metric, value, p_value, threshold, drifted, test FROM metrics'
        ' ORDER BY "column", metric'
    ).fetchall()
    expected = metric_rows(store, KEY.id, KEY.model, rows)
    assert len(expected) == 9  # the repeated ("a", "missing_share") once, with its last value
    assert stored == sorted(expected, key=lambda r: (r[2], r[3]))
    assert ("a", "missing_share", 0.25) in [r[2:5] for r in stored]



@pytest.mark.sqlite_only("SQLite's multi-row runs of the metric upsert")
def test_sqlite_writes_many_windows_figures_in_runs_of_rows_per_statement(tmp_path: Path) -> None:
    """Windows whose figures outnumber ROWS_PER_STATEMENT per pattern of absent fields are
    written ROWS_PER_STATEMENT rows a run (the rest a row a run), and the rows stored are
    exactly metric_rows' of each window."""
    from storage.windows import ROWS_PER_STATEMENT, write_windows  # noqa: PLC0415

    store = Store(tmp_path / "d.db")
    windows = []
    for i in range(3):
        key = WindowKey(f"m{i}", "v1", "", KEY.start, KEY.end)
        rows = [MetricRow("", "row_count", 100.0 + i)]
        rows += [MetricRow(f"c{j}", "missing_share", j / 100) for j in range(50)]  # one pattern: 150 rows
        rows += [MetricRow(f"c{j}", "drift_score", j / 7, threshold=0.1, drifted=j % 2 == 0, test="wasserstein")
                 for j in range(30)]
        windows.append((WindowRecord(key=key, rows=100, status="ok", computed_at=NOW, reference="r"), rows))
    runs: list[str] = []
    store.conn.set_trace_callback(runs.append)
    with store.transaction():
        write_windows(store, windows)
    store.conn.set_trace_callback(None)
    inserts = [sql for sql in runs if sql.startswith("INSERT INTO metrics")]
    # 153 rows without p-value/threshold/verdict/test, 90 with all but a p-value
    per_pattern = [(153, 0), (90, 0)]
    assert len(inserts) == sum(n // ROWS_PER_STATEMENT + n % ROWS_PER_STATEMENT for n, _ in per_pattern)
    stored = store.conn.execute(
        'SELECT window_id, model, "column", metric, value, p_value, threshold, drifted, test FROM metrics'
    ).fetchall()
    expected = [r for w, rows in windows for r in metric_rows(store, w.id, w.key.model, rows)]
    assert len(stored) == 243
    assert sorted(stored) == sorted(expected)


def test_real_fields_of_a_batch() -> None:
    for d in (SQLITE_DIALECT, POSTGRES_DIALECT):
        assert d.real(None) is None and d.real(math.nan) is None and d.real(0.5) == 0.5
    assert SQLITE_DIALECT.real(math.inf) == math.inf
    # JSON has no infinity: PostgreSQL gets the text its cast reads back
    assert (POSTGRES_DIALECT.real(math.inf), POSTGRES_DIALECT.real(-math.inf)) == ("Infinity", "-Infinity")
    assert "DOUBLE PRECISION" in POSTGRES_DIALECT.json_field(4, "real")


def test_headline_performance_comes_in_the_documented_order_on_both_stores(store_target: StoreTarget) -> None:
    """The CLI and the API show a window's first headline figure: ``HEADLINE_PERFORMANCE``'s
    order (mae before rmse before r2), whatever order the store returns rows in (SQLite by
    its index: alphabetical; PostgreSQL: as stored)."""
    store = store_target.open()
    with store.transaction():
        write_window(store, WindowRecord(key=KEY, rows=120, status="ok", computed_at=NOW, reference="r"), [])
        write_performance(store, KEY, [
            MetricRow("", "r2", 0.5), MetricRow("", "rmse", 2.0), MetricRow("", "mae", 1.5),
        ], computed_at=NOW)
    [w] = windows_with_verdicts(store)
    assert list(w["performance"]) == ["mae", "rmse", "r2"]


def test_migration_12_clusters_sqlite_metrics_and_keeps_every_figure(tmp_path: Path) -> None:
    """A database of version 11 (metrics a rowid table with a separate key index) becomes
    version 12: the same columns in the same order, every figure kept, no rowid left, and
    writes and reads by window id work as before."""
    from storage.schema import MIGRATIONS  # noqa: PLC0415

    path = tmp_path / "older.db"
    older = Store(path, migrate=False)
    migrate_before(older, 12)
    with older.transaction():
        write_window(older, WindowRecord(key=KEY, rows=100, status="ok", computed_at=NOW, reference="r"),
                     [MetricRow("age", "drift_score", 0.25, p_value=0.01, threshold=0.1, drifted=True, test="ks"),
                      MetricRow("__dataset__", "row_count", 100.0)])
        older.execute(
            "INSERT INTO metrics (window_id, model, \"column\", metric, value, family, ci_low, ci_high)"
            " VALUES (?, 'churn', '__dataset__', 'accuracy', 0.9, 'performance', 0.85, 0.95)", (KEY.id,)
        )
    before = older.conn.execute("SELECT * FROM metrics ORDER BY window_id, \"column\", metric").fetchall()
    cols_before = [r[1] for r in older.conn.execute("PRAGMA table_info(metrics)")]
    assert older.conn.execute("SELECT count(rowid) FROM metrics").fetchone()[0] == 3
    older.close()

    store = Store(path)
    assert store.schema_version() == MIGRATIONS[-1][0] >= 12
    assert [r[1] for r in store.conn.execute("PRAGMA table_info(metrics)")] == cols_before
    assert store.conn.execute("SELECT * FROM metrics ORDER BY window_id, \"column\", metric").fetchall() == before
    with pytest.raises(Exception, match="rowid"):
        store.conn.execute("SELECT rowid FROM metrics")
    fresh = Store(tmp_path / "fresh.db")
    assert [r[1:] for r in store.conn.execute("PRAGMA table_info(metrics)")] == [
        r[1:] for r in fresh.conn.execute("PRAGMA table_info(metrics)")
    ]
    with store.transaction():
        write_window(store, WindowRecord(key=KEY, rows=100, status="ok", computed_at=NOW, reference="r"),
                     [MetricRow("age", "drift_score", 0.5, p_value=0.001, threshold=0.1, drifted=True, test="ks")])
    assert _stored(store)[("age", "drift_score")]["value"] == 0.5
    assert _stored(store)[("__dataset__", "accuracy")]["ci_low"] == 0.85


def test_window_ids_escape_bars_and_percents_in_their_fields() -> None:
    from storage.records import WindowKey, window_id_from_url

    plain = WindowKey("m", "v1", "region=eu", "s", "e")
    assert plain.id == "m|v1|region=eu|s|e"
    a = WindowKey("m", "a|region=x", "", "s", "e")
    b = WindowKey("m", "a", "region=x|", "s", "e")
    assert (a.id, b.id) == ("m|a%7Cregion=x||s|e", "m|a|region=x%7C|s|e")
    assert WindowKey("m", "50%|", "", "s", "e").id == "m|50%25%7C||s|e"
    assert window_id_from_url(b.url_id) == b.id
