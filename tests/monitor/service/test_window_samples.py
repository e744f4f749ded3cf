"""[reports] sample_rows / sample_windows through the real Pipeline and store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storage.samples import EVENT_ID, read_window_sample
from tests.monitor.daemon_helpers import stream
from tests.monitor.service.test_pipeline_isolation import run as run_on
from tests.store_targets import state_target


def run(tmp: Path, payloads: list[bytes], **kw: Any) -> Any:
    """The pipeline fed ``payloads`` on the default store in ``tmp`` (SQLite, or PostgreSQL when the suite runs on it)."""
    return run_on(tmp, state_target(tmp), payloads, **kw)


def test_each_closed_window_keeps_a_bounded_sample_and_only_the_newest_keep_theirs(tmp_path: Path) -> None:
    store = run(tmp_path, stream(6, 200, 3), extra="[reports]\nsample_rows = 50\nsample_windows = 5\n")
    try:
        windows = store.query('SELECT id, rows FROM windows ORDER BY "end" DESC, id DESC')
        kept = {r["window_id"] for r in store.query("SELECT window_id FROM window_samples")}
        assert kept == {w["id"] for w in windows[:5]}
        for w in windows[:5]:
            meta, cols = read_window_sample(store, w["id"])  # type: ignore[misc]
            assert meta["rows"] == w["rows"] and meta["sample_rows"] == min(50, w["rows"])
            assert sorted(cols) == sorted(["age", "tenure_days", "monthly_charges", "plan", "region", "prediction",
                                           EVENT_ID])
            assert all(len(v) == meta["sample_rows"] for v in cols.values())
    finally:
        store.close()


@pytest.mark.parametrize("reports", ["sample_rows = 0", "sample_windows = 0"])
def test_no_samples_when_either_is_zero(tmp_path: Path, reports: str) -> None:
    store = run(tmp_path, stream(3, 100, 99), extra=f"[reports]\n{reports}\n")
    try:
        assert store.query("SELECT COUNT(*) AS n FROM windows")[0]["n"] > 0
        assert store.query("SELECT COUNT(*) AS n FROM window_samples")[0]["n"] == 0
    finally:
        store.close()


def test_a_flush_of_many_windows_keeps_the_samples_a_flush_per_window_keeps(tmp_path: Path) -> None:
    """Samples are trimmed once per model per flush, after its windows: the newest
    ``sample_windows`` stay, with the same contents, as when each window is trimmed alone."""
    extra = "[reports]\nsample_rows = 30\nsample_windows = 3\n"

    def kept(store: Any) -> dict[str, Any]:
        try:
            out = {}
            for r in store.query("SELECT window_id FROM window_samples"):
                meta, cols = read_window_sample(store, r["window_id"])  # type: ignore[misc]
                out[r["window_id"]] = (meta["rows"], meta["sample_rows"], {c: list(v) for c, v in cols.items()})
            return out
        finally:
            store.close()

    payloads = stream(8, 60, 4)
    per_window = kept(run(tmp_path / "small", payloads, batch=20, extra=extra))  # about a window a flush
    at_once = kept(run(tmp_path / "large", payloads, batch=len(payloads), extra=extra))  # all in one flush
    assert len(per_window) == 3
    assert repr(at_once) == repr(per_window)  # NaN-safe: the same values, bit for bit as text


@pytest.mark.parametrize("rules_raise", [False, True])
def test_a_model_whose_samples_all_rolled_back_is_not_trimmed_in_that_flush(tmp_path: Path, rules_raise: bool) -> None:
    """Samples are trimmed once per model per flush, for the models whose samples the flush
    stored: a window whose rules raise rolls its sample back, and its model is then left
    as trimming after each stored sample left it (here: 5 samples kept under an older,
    larger ``sample_windows``, untouched until a sample of the model is stored again)."""
    from monitor.config import load_config
    from monitor.service.pipeline import Pipeline
    from tests.monitor.daemon_helpers import START, write_config
    from tests.monitor.service.test_pipeline_isolation import records

    target = state_target(tmp_path / "s")
    payloads = stream(8, 60, 4)
    first = run_on(tmp_path / "a", target, payloads[:6 * 60], extra="[reports]\nsample_rows = 30\nsample_windows = 5\n")
    first.close()
    cfg = load_config(write_config(tmp_path / "b", bootstrap="127.0.0.1:9", topic="predictions", http_port=1,
                                   extra="[reports]\nsample_rows = 30\nsample_windows = 2\n"))
    store = target.open()
    try:
        p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))

        def on_window(figs: Any, model: Any) -> None:
            raise RuntimeError("rules failed")

        if rules_raise:
            p.on_window = on_window
        p.process_records(records(payloads)[6 * 60:])
        p.flush()
        stored = store.query("SELECT COUNT(*) AS n FROM window_samples")[0]["n"]
        assert stored == (5 if rules_raise else 2)
        if rules_raise:
            assert store.query("SELECT COUNT(*) AS n FROM windows WHERE status = 'error'")[0]["n"] >= 1
    finally:
        store.close()
