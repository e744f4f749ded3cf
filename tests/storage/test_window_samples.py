"""Window samples and URL-safe window ids on the default store (SQLite, or PostgreSQL when the suite runs on it)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.db import Store
from storage.records import MetricRow, WindowKey, WindowRecord, window_id_from_url, window_url_id
from storage.reference_members import encode_columns
from storage.retention import Pruner, RetentionPolicy, trim_window_samples
from storage.samples import (
    EVENT_ID,
    WindowSample,
    read_window_sample,
    sample_counts,
    write_window_sample,
)
from storage.windows import write_window
from tests.store_targets import open_state_store

NOW = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)


def _keep(store: Store, sample: WindowSample, keep: int) -> None:
    """Store a sample and trim its model's to the newest ``keep``, as a flush does."""
    write_window_sample(store, sample, now=NOW)
    trim_window_samples(store, sample.model, keep)


@pytest.fixture
def store(tmp_path: Path):
    s = open_state_store(tmp_path, synchronous="NORMAL")
    yield s
    s.close()


# -- URL-safe ids ---------------------------------------------------------------------------


@given(st.text(min_size=0, max_size=40), st.text(max_size=40), st.text(max_size=40))
def test_url_ids_round_trip_and_use_only_the_url_safe_alphabet(model: str, version: str, segment: str) -> None:
    wid = WindowKey(model, version, segment, "2026-11-23T14:00:00.000Z", "2026-11-23T14:15:00.000Z").id
    url = window_url_id(wid)
    assert set(url) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert window_id_from_url(url) == wid
    # the documented encoding: base64url of the UTF-8 id, padding dropped
    assert base64.urlsafe_b64decode(url + "=" * (-len(url) % 4)).decode() == wid


def test_a_segment_with_slashes_pipes_and_spaces_stays_one_path_segment() -> None:
    wid = WindowKey("churn", "v|12", "region=eu/west 1%", "#000000000000", "#000000001000").id
    url = window_url_id(wid)
    assert "/" not in url and "|" not in url and "%" not in url and " " not in url
    assert WindowKey("churn", "v|12", "region=eu/west 1%", "#000000000000", "#000000001000").url_id == url


@pytest.mark.parametrize("text", ["", "a", "abc|def", "abc/def", "abc=", "x" * 3000, "Y2h1cm4", "@@@@",
                                  window_url_id("a|b|c|d|ef")[:-1] + "B"])
def test_what_is_not_a_url_id_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a window id"):
        window_id_from_url(text)


# -- samples --------------------------------------------------------------------------------


def _window(store: Store, minute: int, model: str = "churn", computed_at: datetime = NOW) -> WindowRecord:
    key = WindowKey(model, "v1", "", f"2026-11-23T14:{minute:02d}:00.000Z", f"2026-11-23T14:{minute + 1:02d}:00.000Z")
    rec = WindowRecord(key=key, rows=10, status="ok", computed_at=computed_at)
    with store.transaction():
        write_window(store, rec, [MetricRow("", "row_count", 10.0)])
    return rec


def _sample(rec: WindowRecord, value: float = 1.0) -> WindowSample:
    cols = {"age": np.array([value, np.nan]), "plan": np.array(["a", None], dtype=object),
            EVENT_ID: np.array(["e1", "e2"], dtype=object)}
    return WindowSample(rec.id, rec.key.model, rec.key.end, rows=10, sample_rows=2, payload=encode_columns(cols))


def test_a_sample_round_trips_and_a_rewrite_replaces_it(store: Store) -> None:
    rec = _window(store, 0)
    with store.transaction():
        _keep(store, _sample(rec, 1.0), 5)
        _keep(store, _sample(rec, 2.0), 5)
    meta, cols = read_window_sample(store, rec.id)  # type: ignore[misc]
    assert (meta["rows"], meta["sample_rows"], meta["model"]) == (10, 2, "churn")
    assert cols["age"][0] == 2.0 and np.isnan(cols["age"][1])
    assert cols["plan"].tolist() == ["a", None] and cols[EVENT_ID].tolist() == ["e1", "e2"]
    assert read_window_sample(store, "churn|v1||x|y") is None


def test_only_the_newest_windows_of_each_model_keep_a_sample(store: Store) -> None:
    for m in range(6):
        for model in ("churn", "fraud"):
            rec = _window(store, m, model)
            with store.transaction():
                _keep(store, _sample(rec), 3)
    assert sample_counts(store) == {"churn": 3, "fraud": 3}
    kept = [r["end"][11:16] for r in store.query("SELECT \"end\" FROM window_samples WHERE model = 'churn' ORDER BY \"end\"")]
    assert kept == ["14:04", "14:05", "14:06"]
    with store.transaction():
        assert trim_window_samples(store, "churn", 1) == 2
    assert sample_counts(store) == {"churn": 1, "fraud": 3}


def test_the_prune_deletes_samples_with_their_window_orphans_and_beyond_the_count(store: Store) -> None:
    old = NOW - timedelta(days=40)
    for m in range(6):
        rec = _window(store, m, computed_at=old if m < 2 else NOW)
        with store.transaction():
            _keep(store, _sample(rec), 10)
    with store.transaction():  # a sample whose window is gone (deleted by another program, say)
        store.execute("DELETE FROM windows WHERE id = ?", (_window(store, 5).id,))
    policy = RetentionPolicy(windows=timedelta(days=30), metrics=timedelta(days=30), window_samples=2)
    report = Pruner(store, policy, clock=lambda: NOW).run_once()
    # 2 with their old windows, 1 orphan, 1 beyond the newest 2 of the model
    assert report.rows["window_samples"] == 2 + 1 + 1
    assert report.rows["windows"] == 2
    left = store.query("SELECT window_id FROM window_samples ORDER BY window_id")
    assert [r["window_id"][21:26] for r in left] == ["14:03", "14:04"]
    assert store.query("SELECT COUNT(*) AS n FROM window_samples WHERE window_id NOT IN (SELECT id FROM windows)")[0]["n"] == 0
