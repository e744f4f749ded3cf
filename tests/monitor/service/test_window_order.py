"""A window's rows are read in consumption order whatever the batch cuts: the real Pipeline
over a real store, events out of event-time order.

A sliding window is assembled from panes, one chunk per pane and batch; a batch holding
rows of several of its panes out of event-time order used to give the window its rows
pane by pane, so a window's order (its report sample, and every figure that reads rows
in order, here the t-test's sums) depended on where batches were cut, and a restart,
which re-reads the records from Kafka in other batches, changed them. Every window shape
must give the same tables however the records are cut, and after a restart mid-stream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.config import Config, load_config
from monitor.service.pipeline import Pipeline
from storage.db import Store
from tests.monitor.daemon_helpers import START, disordered, stream, write_config
from tests.monitor.fault_helpers import shaped
from tests.monitor.service.test_pipeline_isolation import NOW_MS, Rec, records
from tests.store_targets import StoreTarget, state_target


def config(tmp: Path, shape: str) -> Config:
    path = write_config(
        tmp, bootstrap="127.0.0.1:9", topic="predictions", http_port=1,
        extra="[reports]\nsample_rows = 40\nsample_windows = 1000\n",
    )
    text = shaped(path.read_text(), shape)
    # the t-test reads the values in row order (its sums), where the default tests sort them
    path.write_text(text + '\n[models.drift.columns.age]\nmethod = "t_test"\n')
    return load_config(path)


def tables(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for r in store.query(sql)]

    return {
        "windows": rows('SELECT id, rows, status, late_rows FROM windows ORDER BY id'),
        "metrics": rows('SELECT window_id, "column", metric, value, p_value, threshold, drifted, test'
                        ' FROM metrics ORDER BY window_id, "column", metric'),
        "samples": rows("SELECT window_id, rows, sample_rows, payload FROM window_samples ORDER BY window_id"),
    }


def feed(p: Pipeline, recs: list[Rec], batch: int, *, flush: bool = True) -> None:
    for i in range(0, len(recs), batch):
        p.process_records(recs[i:i + batch])
        if flush:
            p.flush()


def run(tmp: Path, target: StoreTarget, shape: str, recs: list[Rec], batch: int,
        crash_at: int | None = None, batch_after: int = 0) -> dict[str, list[tuple[Any, ...]]]:
    """The tables after feeding ``recs`` in batches of ``batch``. ``crash_at``: the process
    stops there (what it read since its last flush lost), a new one restores the stored
    state and re-reads from the offset it gives, in batches of ``batch_after``."""
    cfg = config(tmp, shape)
    store = target.open()
    p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
    if crash_at is not None:
        feed(p, recs[:crash_at], batch)
        feed(p, recs[crash_at:crash_at + batch], batch, flush=False)  # never made durable
        store.close()
        store = target.open()
        p = Pipeline(cfg, store, clock=lambda: START.replace(day=24))
        resume = p.restore()[0]
        assert p.replay_before == {0: crash_at} and resume < crash_at  # open windows re-read
        recs, batch = recs[resume:], batch_after
    feed(p, recs, batch)
    for rt in p.models.values():
        p._collect(rt, rt.windows.close_idle(NOW_MS * 10), START)
    p.flush()
    try:
        return tables(store)
    finally:
        store.close()


@pytest.mark.parametrize("shape", ["sliding", "tumbling", "count"])
def test_windows_do_not_depend_on_batch_cuts_or_a_restart(tmp_path: Path, shape: str) -> None:
    # event times out of order by up to ~12 s, across the sliding shape's 30 s panes
    recs = records(disordered(stream(8, 200, shift_from=4, seed=5), seed=3))
    ts = [orjson.loads(r.value)["ts"] for r in recs]
    assert ts != sorted(ts)

    def target(name: str) -> StoreTarget:
        return state_target(tmp_path / name)

    whole = run(tmp_path / "whole", target("whole"), shape, recs, len(recs))
    assert len(whole["windows"]) > 15 and len(whole["samples"]) == len(whole["windows"])
    if shape == "tumbling":  # the shuffle crosses window boundaries: some rows are late
        assert any(w[3] for w in whole["windows"])
    small = run(tmp_path / "small", target("small"), shape, recs, 37)
    restarted = run(tmp_path / "restarted", target("restarted"), shape, recs, 500, crash_at=1000, batch_after=123)
    differ = [(name, t) for name, got in (("batches of 37", small), ("restart", restarted))
              for t in whole if got[t] != whole[t]]
    assert differ == []
