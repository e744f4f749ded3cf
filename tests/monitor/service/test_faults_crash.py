"""Crash equivalence: SIGKILL the daemon at seeded random points of one stream, restart it
each time; the final ``windows``, ``metrics`` and report samples (``window_samples``)
equal those of an uninterrupted run. On both stores: SQLite, and PostgreSQL (``[storage] url``).

The stream (12k events) arrives in chunks cut at seeded random points, one chunk per
life of the crashed daemon, which is killed a random moment after it made durable
progress: so kills land inside the stream (mid-chunk or with windows open) rather than
after the whole backlog was swallowed in one second. Two final
events far later in event time close every window by watermark, so no wall-clock idle
close makes the runs differ. Each restart re-joins the consumer group: with Tansu a
join takes about half the session timeout, and a killed member blocks the next join
until its session expires (measured: ~12.7 s per restart at ``session_timeout = "6s"``,
~2.9 s at ``"2s"``), so these configs use a 2 s session.

Sliding windows get a test of their own (SQLite only: what it tests is in the windows, not
the store): events out of event-time order across the panes, a shorter stream, fewer lives.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from monitor.demo.broker import EmbeddedBroker
from tests.monitor.daemon_helpers import (
    disordered,
    produce,
    sample_dump,
    stream,
    table_dump,
    wait_for,
)
from tests.monitor.fault_helpers import (
    durable_offset,
    elapsed,
    fault_config,
    finished,
    run_to_completion,
    start_daemon,
    terminate,
    wait_ready,
    with_sentinel,
)
from tests.store_targets import PostgresTarget, StoreTarget

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FAST_SESSION = (
    'session_timeout = "6s"\nheartbeat_interval = "1s"',
    'session_timeout = "2s"\nheartbeat_interval = "500ms"',
)


def crash_config(
    folder: Path, broker: EmbeddedBroker, topic: str, shape: str, target: StoreTarget | None = None,
    max_poll_records: int = 200,
) -> Path:
    cfg = fault_config(
        folder,
        bootstrap=broker.bootstrap,
        topic=topic,
        shape=shape,
        max_poll_records=max_poll_records,
        group=f"{folder.name}-{topic}",
        idle_timeout="1h",
        extra=target.storage_toml() if target is not None else "",
    )
    cfg.write_text(cfg.read_text().replace(*FAST_SESSION))
    return cfg


def crash_run(
    broker: EmbeddedBroker, tmp: Path, shape: str, kills: int, seed: int,
    targets: tuple[StoreTarget, StoreTarget] | None = None, *, minutes: int = 24, disorder: bool = False,
    clean_poll: int = 200,
) -> dict[str, Any]:
    """``targets``: the stores of the crashed and the clean run (default: SQLite files).
    ``minutes`` of events, 500 a minute; ``disorder``: out of event-time order (by up to
    40 events, ~5 s); ``clean_poll``: ``max_poll_records`` of the clean run (the crashed
    one polls 200 at most)."""
    topic = f"crash-{shape}-{seed}-{time.time_ns() % 10**6}"
    broker.create_topic(topic)
    msgs = stream(windows=minutes, per_window=500, shift_from=minutes // 2, seed=seed)
    msgs = with_sentinel(disordered(msgs, seed) if disorder else msgs)
    n = len(msgs)
    rng = random.Random(seed)
    cfg = crash_config(tmp / "crashed", broker, topic, shape, targets[0] if targets else None)
    db: Path | StoreTarget = targets[0] if targets else cfg.parent / "state" / "driftwarden.db"
    log = cfg.parent / "daemon.log"
    kill_offsets: list[int] = []
    t1 = time.monotonic()
    # the stream arrives in chunks cut at seeded random points, one chunk per life
    cuts = [0, *sorted(rng.sample(range(1, n), kills)), n]
    for i in range(kills):
        produce(broker.bootstrap, topic, msgs[cuts[i] : cuts[i + 1]])
        before = durable_offset(db)
        proc = start_daemon(cfg, log=log)
        try:
            # kill once this life has made durable progress (or all is done), after a random delay
            wait_for(
                lambda b=before: durable_offset(db) > b or finished(db, n),
                timeout=30,
                interval=0.02,
            )
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            proc.kill()
            proc.wait()
        kill_offsets.append(durable_offset(db))
    produce(broker.bootstrap, topic, msgs[cuts[kills] :])
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_ready(cfg), "daemon not ready"
        assert wait_for(lambda: finished(db, n), timeout=60), f"offset {durable_offset(db)}/{n}"
    finally:
        assert terminate(proc) == 0
    crashed = {**table_dump(db), "samples": sample_dump(db)}
    t_crashed = elapsed(t1)
    t0 = time.monotonic()
    clean_target = targets[1] if targets else None
    clean_cfg = crash_config(tmp / "clean", broker, topic, shape, clean_target, clean_poll)
    clean = run_to_completion(clean_cfg, n, target=clean_target)
    clean["samples"] = sample_dump(clean_target or clean_cfg.parent / "state" / "driftwarden.db")
    return {
        "shape": shape,
        "n": n,
        "clean": clean,
        "crashed": crashed,
        "kill_offsets": kill_offsets,
        "t_clean": elapsed(t0),
        "t_crashed": t_crashed,
    }


# three shapes with several lives each: ~3.5 min on a quiet 2-core machine, so pytest's 300 s
# default would stop it under load before its own bounded waits decide
@pytest.mark.timeout(600)
def test_sigkill_at_random_points_equals_clean_run(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget
) -> None:
    pg = isinstance(store_target, PostgresTarget)
    # on PostgreSQL fewer lives (CI time): the same code path, the store is what differs
    plan = [("tumbling", 6, 101), ("count", 6, 202)] if pg else [("tumbling", 12, 101), ("count", 10, 202)]

    def run(p: tuple[str, int, int]) -> dict[str, Any]:
        targets = (store_target.fresh(), store_target.fresh()) if pg else None
        return crash_run(broker, tmp_path / p[0], *p, targets=targets)

    with ThreadPoolExecutor(len(plan)) as ex:
        results = list(ex.map(run, plan))
    for r in results:
        print(
            f"\n{r['shape']}: {r['n']} msgs, {len(r['kill_offsets'])} kills at durable offsets {r['kill_offsets']}, "
            f"{len(r['clean']['windows'])} windows / {len(r['clean']['metrics'])} metrics / "
            f"{len(r['clean']['samples'])} samples compared; "
            f"crashed {r['t_crashed']}s, clean {r['t_clean']}s"
        )
    for r in results:
        assert len(r["clean"]["windows"]) > 20
        # most kills landed inside the stream, not before or after it
        assert sum(0 < o < r["n"] for o in r["kill_offsets"]) >= len(r["kill_offsets"]) // 2, r[
            "kill_offsets"
        ]
        assert r["crashed"]["windows"] == r["clean"]["windows"], r["shape"]
        assert r["crashed"]["metrics"] == r["clean"]["metrics"], r["shape"]
        assert len(r["clean"]["samples"]) > 20
        assert r["crashed"]["samples"] == r["clean"]["samples"], r["shape"]


def test_sigkill_with_sliding_windows_and_events_out_of_order_equals_clean_run(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """A sliding window takes a batch's rows pane by pane; with events out of event-time
    order across its panes, its rows' order (its report sample, any figure that reads rows
    in order) once depended on where batches were cut, and a restart re-reads open windows
    in other batches. The clean run polls up to 10,000 records at a time, the crashed one
    200: the cuts differ wherever the kills land."""
    r = crash_run(broker, tmp_path, "sliding", 2, 303, minutes=8, disorder=True, clean_poll=10_000)
    print(
        f"\nsliding, out of order: {r['n']} msgs, kills at durable offsets {r['kill_offsets']}, "
        f"{len(r['clean']['windows'])} windows / {len(r['clean']['samples'])} samples compared; "
        f"crashed {r['t_crashed']}s, clean {r['t_clean']}s"
    )
    assert len(r["clean"]["windows"]) > 50 and len(r["clean"]["samples"]) > 50
    assert any(0 < o < r["n"] for o in r["kill_offsets"]), r["kill_offsets"]
    for table in ("windows", "metrics", "samples"):
        got, want = r["crashed"][table], r["clean"][table]
        assert len(got) == len(want), table
        differ = [w[0] for w, g in zip(want, got, strict=True) if w != g]
        assert differ == [], f"{table}: {len(differ)} of {len(want)} differ"
