"""A model's window shape changes between the run that saved its stream state and the
run that resumes it: the real Pipeline, the stream played by hand (as in test_handover).

Run 1 (old shape) consumes part of the stream and stores what it closed; run 2 (new
shape, same store) resumes from the stored state and reads the rest. Proof each time:
- what run 1 stored is left as it is;
- every window of the new shape holds exactly the rows the stream has in it from the
  first row run 1 left in an open window on (the rows before are in run 1's windows),
  none is empty, nothing is counted late;
- windows of the new shape that start at or after that row equal, figures included,
  those of one run that had the new shape from the start;
- one WARNING names the model and both shapes.

Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from monitor.config import Config, load_config
from monitor.service.pipeline import Pipeline
from storage.db import Store
from storage.stream import partition_rows
from tests.monitor.daemon_helpers import START, stream, write_config
from tests.monitor.fault_helpers import TUMBLING
from tests.store_targets import StoreTarget

Rec = namedtuple("Rec", "topic partition offset timestamp value")
WALL = START + timedelta(days=1)
T0 = int(START.timestamp() * 1000)
MIN = 60_000

SHAPES = {
    "tumbling 1m": 'type = "tumbling"\nsize = "1m"',
    "tumbling 5m": 'type = "tumbling"\nsize = "5m"',
    "sliding 2m/30s": 'type = "sliding"\nsize = "2m"\nslide = "30s"',
    "tumbling 2m": 'type = "tumbling"\nsize = "2m"',
    "tumbling 1m late 2m": 'type = "tumbling"\nsize = "1m"\nlateness = "2m"',
}
DESCRIBED = {
    "tumbling 1m": "tumbling 1m, lateness 0s",
    "tumbling 5m": "tumbling 5m, lateness 0s",
    "sliding 2m/30s": "sliding 2m every 30s, lateness 0s",
    "tumbling 2m": "tumbling 2m, lateness 0s",
    "tumbling 1m late 2m": "tumbling 1m, lateness 2m",
}


class Clock:
    def __init__(self) -> None:
        self.now = WALL

    def __call__(self) -> datetime:
        return self.now


def config(tmp: Path, shape: str, extra: str = "") -> Config:
    path = write_config(tmp, bootstrap="127.0.0.1:9", topic="predictions", http_port=1, extra=extra)
    text = path.read_text()
    if "lateness" in SHAPES[shape]:
        text = text.replace('lateness = "0s"\n', "")
    path.write_text(text.replace(TUMBLING, SHAPES[shape]))
    return load_config(path)


def records(payloads: list[bytes]) -> list[Rec]:
    ts = int(WALL.timestamp() * 1000)
    return [Rec("predictions", 0, i, ts, p) for i, p in enumerate(payloads)]


def run(cfg: Config, store: Store, recs: list[Rec], clock: Clock, owner: str = "solo", idle: bool = True) -> Pipeline:
    """Claim partition 0, resume it, read ``recs`` from where ``adopt`` seeks (in batches
    of 100, a flush after each), then let the stream go idle (every window closes)."""
    p = Pipeline(cfg, store, clock=clock, owner=owner)
    p.auto_claim = False
    seek, _ = p.adopt([0], generation=1)
    for i in range(seek.get(0, 0), len(recs), 100):
        p.process_records(recs[i : i + 100])
        p.flush()
    if idle:
        clock.now += timedelta(seconds=5)
        p.tick()
        p.flush()
    return p


def windows(store: Store) -> dict[str, dict[str, Any]]:
    out = {}
    for r in store.query('SELECT id, segment, start, "end", rows, status, late_rows FROM windows'):
        r["metrics"] = [tuple(m.values()) for m in store.query(
            'SELECT "column", metric, value, threshold, drifted FROM metrics WHERE window_id = ?'
            ' ORDER BY "column", metric', (r["id"],))]
        out[r["id"]] = r
    return out


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp() * 1000)


def ms_of(shape: str) -> int:
    """The size of a tumbling shape of :data:`SHAPES` in ms."""
    return {"tumbling 1m": MIN, "tumbling 5m": 5 * MIN}[shape]


def rows_between(events: list[dict[str, Any]], segment: str, lo: int, hi: int) -> int:
    """Events of ``segment`` ("" all, "region=eu") with event time in [lo, hi)."""
    region = segment.split("=", 1)[1] if segment else None
    return sum(1 for e in events if lo <= e["ts"] < hi and (region is None or e["segment"]["region"] == region))


def shape_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "was saved with window" in r.getMessage()]


def check_re_windowed(
    got: dict[str, dict[str, Any]], before: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]],
    events: list[dict[str, Any]], boundary: int,
) -> int:
    """The proofs of the module docstring; returns how many new-shape windows were checked."""
    for wid, w in before.items():
        assert got[wid] == w, f"window {wid} stored before the change was rewritten"
    assert sum(w["late_rows"] for w in got.values()) == 0
    new = {wid: w for wid, w in got.items() if wid not in before}
    for wid, w in new.items():
        lo, hi = ms(w["start"]), ms(w["end"])
        assert w["rows"] > 0, f"empty window {wid}"
        assert w["rows"] == rows_between(events, w["segment"], max(lo, boundary), hi), wid
        if lo >= boundary:
            assert w == want[wid], f"window {wid} differs from a run with the new shape from the start"
    return len(new)


CHANGES = [
    # (old, new, rows consumed by run 1, first event time run 1 left in an open window)
    ("tumbling 1m", "tumbling 5m", 670, T0 + 4 * MIN),
    ("tumbling 5m", "tumbling 1m", 1000, T0 + 5 * MIN),
    ("tumbling 1m", "sliding 2m/30s", 670, T0 + 4 * MIN),
    ("sliding 2m/30s", "tumbling 1m", 670, T0 + 2 * MIN + 30_000),
    # same size: the new windows 12:02-12:04 is one run 1 stored already; it stays as it was
    ("sliding 2m/30s", "tumbling 2m", 670, T0 + 2 * MIN + 30_000),
    # lateness only: run 1's open windows end before the new watermark
    ("tumbling 1m late 2m", "tumbling 1m", 670, T0 + 2 * MIN),
]


@pytest.mark.parametrize(("old", "new", "cut", "boundary"), CHANGES, ids=[f"{o}->{n}" for o, n, _, _ in CHANGES])
def test_a_restart_with_another_window_shape_re_windows_the_open_rows(
    tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture,
    old: str, new: str, cut: int, boundary: int,
) -> None:
    payloads = stream(windows=12, per_window=150, shift_from=6, seed=4)
    events = [orjson.loads(p) for p in payloads]
    recs = records(payloads)
    cfg_old, cfg_new = config(tmp_path / "old", old), config(tmp_path / "new", new)
    want_store = store_target.fresh().open()
    run(cfg_new, want_store, recs, Clock())
    want = windows(want_store)

    clock = Clock()
    store = store_target.open()
    run(cfg_old, store, recs[:cut], clock, idle=False)
    before = windows(store)
    assert before and not shape_warnings(caplog)
    run(cfg_new, store_target.open(), recs, clock)
    got = windows(store)

    assert check_re_windowed(got, before, want, events, boundary) >= 4
    if old.startswith("tumbling") and new.startswith("tumbling"):
        # every event in exactly one stored window, none counted late
        assert sum(w["rows"] for w in got.values() if w["segment"] == "") == len(events)
    (line,) = shape_warnings(caplog)
    assert f"model churn: its stream state (partition 0) was saved with window {DESCRIBED[old]};" in line
    assert f"the config says {DESCRIBED[new]}:" in line


@pytest.mark.parametrize("new", ["tumbling 1m", "tumbling 5m"])
def test_state_saved_without_a_shape_still_resumes(
    tmp_path: Path, store_target: StoreTarget, caplog: pytest.LogCaptureFixture, new: str
) -> None:
    """State saved by an older driftwarden (no shape recorded): resumed exactly when its
    open windows fit the configured shape, re-windowed (shape called unknown) when not."""
    payloads = stream(windows=8, per_window=150, shift_from=4, seed=5)
    events = [orjson.loads(p) for p in payloads]
    recs = records(payloads)
    cfg_old, cfg_new = config(tmp_path / "old", "tumbling 1m"), config(tmp_path / "new", new)
    want_store = store_target.fresh().open()
    run(cfg_new, want_store, recs, Clock())
    want = windows(want_store)

    clock = Clock()
    store = store_target.open()
    run(cfg_old, store, recs[:670], clock, idle=False)
    (row,) = partition_rows(store, "predictions")
    state = row["state"]
    state["models"]["churn"].pop("shape", None)
    with store.transaction():
        store.execute("UPDATE stream_partitions SET state = ? WHERE partition = 0", (orjson.dumps(state).decode(),))
    before = windows(store)
    run(cfg_new, store_target.open(), recs, clock)
    got = windows(store)

    if new == "tumbling 1m":
        assert got == want  # exactly as an uninterrupted run
        assert not shape_warnings(caplog)
    else:
        check_re_windowed(got, before, want, events, T0 + 4 * MIN)
        (line,) = shape_warnings(caplog)
        assert "saved with window unknown (state saved by an older driftwarden); the config says tumbling 5m" in line
    # recorded from now on
    assert partition_rows(store, "predictions")[0]["state"]["models"]["churn"].get("shape") == {
        "by": "time", "type": "tumbling", "size": ms_of(new), "step": ms_of(new), "lateness": 0}


def test_a_crash_while_re_windowing_resumes_it(tmp_path: Path, store_target: StoreTarget) -> None:
    """Run 2 stops (kill -9) after storing state while the old windows' rows are still
    being re-read; run 3 (same new shape) finishes the re-windowing: the stored windows
    equal those of a run 2 that did not stop."""
    payloads = stream(windows=10, per_window=150, shift_from=4, seed=6)
    recs = records(payloads)
    cfg_old, cfg_new = config(tmp_path / "old", "tumbling 5m"), config(tmp_path / "new", "tumbling 1m")

    def first_run(target: StoreTarget) -> Store:
        store = target.open()
        run(cfg_old, store, recs[:1000], Clock(), idle=False)
        return store

    want_target = store_target.fresh()
    want_store = first_run(want_target)
    run(cfg_new, want_target.open(), recs, Clock())
    want = windows(want_store)

    store = first_run(store_target)
    p = Pipeline(cfg_new, store_target.open(), clock=Clock(), owner="crashes")
    p.auto_claim = False
    seek, _ = p.adopt([0], generation=1)
    assert seek == {0: 750}  # the 5m window 12:05-12:10 held rows 750..999
    p.process_records(recs[750:850])
    p.flush()
    p.process_records(recs[850:900])  # not flushed: lost with the process
    carry = partition_rows(store, "predictions")[0]["state"]["models"]["churn"].get("carry") or {}
    assert carry.get("after") == {"0": 1000} and carry["source"]["size"] == 5 * MIN
    run(cfg_new, store_target.open(), recs, Clock())
    assert windows(store) == want


def test_two_instances_with_different_shapes_on_one_store_are_told(
    tmp_path: Path, pg_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    """A (tumbling 1m) holds the partition; B's config says 5m. `check`, `status` and B's
    /metrics say so before anything moves; when the partition moves to B, B warns and
    re-windows, and from then on it is A's config that differs."""
    from monitor.cli.check import check_window_shapes
    from monitor.cli.oncall import status
    from monitor.web.metrics import DaemonMetrics

    storage = pg_target.storage_toml()
    cfg_a, cfg_b = config(tmp_path / "a", "tumbling 1m", storage), config(tmp_path / "b", "tumbling 5m", storage)
    recs = records(stream(windows=8, per_window=150, shift_from=4, seed=7))
    clock = Clock()
    a = run(cfg_a, pg_target.open(), recs[:670], clock, owner="a", idle=False)
    store_b = pg_target.open()
    b = Pipeline(cfg_b, store_b, clock=clock, owner="b")

    def gauge() -> float:
        view = SimpleNamespace(pipeline=b, store=store_b, reads=store_b)
        (fam,) = list(DaemonMetrics._window_shapes(view))  # type: ignore[arg-type]
        return {s.labels["model"]: s.value for s in fam.samples}["churn"]

    assert check_window_shapes(cfg_a) == []
    (line,) = check_window_shapes(cfg_b)
    assert line.startswith("model churn: its stream state in the store (partition 0, held by a) was built with"
                           " window tumbling 1m, lateness 0s; this config says tumbling 5m, lateness 0s")
    assert gauge() == 1.0
    out: list[str] = []
    status(store_b, as_json=True, echo=out.append, models=cfg_b.models)
    (model,) = orjson.loads(out[0])["item"]["stream_models"]
    assert (model["model"], model["partition"], model["window"], model["config_window"], model["differs"]) == (
        "churn", 0, "tumbling 1m, lateness 0s", "tumbling 5m, lateness 0s", True)

    a.release_partitions(set())
    b.auto_claim = False
    seek, _ = b.adopt([0], generation=2)
    assert "was saved with window tumbling 1m" in shape_warnings(caplog)[0]
    b.process_records(recs[seek[0] :])
    b.flush()
    assert gauge() == 0.0
    assert check_window_shapes(cfg_b) == []
    assert "held by b" in check_window_shapes(cfg_a)[0]
