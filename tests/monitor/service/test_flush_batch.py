"""A flush writes the windows it closed together (storage.windows.write_windows): a fixed
number of statements whatever their number, leaving what writing them one by one leaves,
also when one window's rules raise. Through the real Pipeline and store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.service.pipeline import Pipeline
from storage.db import Store
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.service.test_pipeline_isolation import dump, records
from tests.store_targets import TEST_STORE, state_target

SAMPLES = "[reports]\nsample_rows = 20\nsample_windows = 50\n"


def pipeline(tmp: Path, *, on_window: Any = None, before_window: Any = None) -> Pipeline:
    cfg = load_config(write_config(tmp, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, extra=SAMPLES))
    return Pipeline(cfg, state_target(tmp).open(), clock=lambda: START.replace(day=24),
                    on_window=on_window, before_window=before_window)


def counting(store: Store) -> Callable[[], list[str]]:
    """Record the statements ``store`` runs from now on (an ``executemany`` counts once);
    returns the reader of their SQL, in order."""
    seen: list[str] = []

    def wrap(name: str) -> None:
        run = getattr(store, name)

        def counted(sql: str, *a: Any, **kw: Any) -> Any:
            seen.append(sql)
            return run(sql, *a, **kw)

        setattr(store, name, counted)

    wrap("execute")
    wrap("executemany")
    return lambda: list(seen)


def flush_statements(tmp: Path, windows: int) -> tuple[list[str], int]:
    """Statements of the flush that writes the ``windows - 1`` windows a stream of
    ``windows`` closes (its last stays open), and how many windows it wrote."""
    p = pipeline(tmp)
    try:
        p.process_records(records(stream(windows, 40, 99)))
        statements = counting(p.store)
        p.flush()
        return statements(), p.store.query("SELECT COUNT(*) AS n FROM windows")[0]["n"]
    finally:
        p.store.close()


@pytest.mark.skipif(TEST_STORE != "sqlite", reason="counts the statements of the SQLite store")
def test_a_flush_writes_its_windows_in_statements_that_do_not_grow_with_them(tmp_path: Path) -> None:
    few, few_windows = flush_statements(tmp_path / "few", 3)
    many, many_windows = flush_statements(tmp_path / "many", 9)
    assert (few_windows, many_windows) == (2 * 4, 8 * 4)  # the whole stream and 3 regions

    def metrics(sql: str) -> bool:
        return sql.startswith("INSERT INTO metrics")

    # the figures: each statement form run once at most (per pattern of absent fields, the
    # 64-row upsert for its whole runs, then the one-row upsert for the rest), so a flush
    # runs one more statement only when a pattern first reaches 64 rows
    for calls in (few, many):
        upserts = [sql for sql in calls if metrics(sql)]
        assert upserts and len(upserts) == len(set(upserts))
    assert any(sql.count("), (") for sql in many if metrics(sql))  # 32 windows: some runs of 64 rows
    # everything else: the same statements
    assert [sql for sql in many if not metrics(sql)] == [sql for sql in few if not metrics(sql)]


def samples(store: Store) -> list[tuple[Any, ...]]:
    return [tuple(r.values()) for r in store.query(
        "SELECT window_id, rows, sample_rows, payload, created_at FROM window_samples ORDER BY window_id")]


@pytest.mark.parametrize("raising", [None, 2])
def test_a_flush_of_windows_leaves_what_writing_them_one_by_one_leaves(tmp_path: Path, raising: int | None) -> None:
    """The batched flush against the window-by-window one (taken when a ``before_window``
    hook runs): the same windows, figures and samples; with ``raising``, the rules of that
    ``ok`` window (in the order judged) raise: it alone is stored as ``error``, its row
    count its only figure, without a sample."""

    def run(tmp: Path, one_by_one: bool) -> tuple[Any, ...]:
        judged: list[str] = []

        def on_window(figs: Any, model: Any) -> None:
            if figs.record.status == "ok":
                judged.append(figs.record.id)
                if len(judged) == raising:
                    raise RuntimeError("rules failed")

        p = pipeline(tmp, on_window=on_window, before_window=(lambda f, m: None) if one_by_one else None)
        try:
            p.process_records(records(stream(6, 200, 3)))
            p.flush()
            return dump(p.store), samples(p.store), judged, p.stats.window_errors
        finally:
            p.store.close()

    batched = run(tmp_path / "batched", False)
    assert batched == run(tmp_path / "single", True)
    stored, kept, judged, errors = batched
    assert len(judged) >= 3 and errors == (0 if raising is None else 1)
    status = {w[0]: w[2] for w in stored["windows"]}
    figures = {w: [m[2] for m in stored["metrics"] if m[0] == w] for w in status}
    for i, wid in enumerate(judged, 1):
        failed = i == raising
        assert status[wid] == ("error" if failed else "ok")
        assert (figures[wid] == ["row_count"]) == failed
        assert (wid in {s[0] for s in kept}) != failed
