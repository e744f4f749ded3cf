"""Three daemons on one PostgreSQL and one topic with 6 partitions: nothing lost, nothing twice.

Producers key events by model (one model per partition). The stream comes in two
phases with an idle spell between them (short idle timeouts: windows are closed
by the wall clock while partitions move). The stream lies in the past (an event
stamped ahead of the wall clock moves no watermark past it): a ``lateness`` of 50
minutes keeps the idle close of the spell (to the wall clock minus lateness) short
of the second phase's windows, which the idle close after it (to the newest event)
closes. After the first phase one instance is
killed with SIGKILL and another leaves and joins again, so every partition may
change owner; the second phase starts with stragglers for windows already closed
by idle (late rows: the case where an owner that did not know the previous
owner's watermark stored a window twice).

Proof, against one instance reading the same stream in the same phases (on
SQLite): the same windows with the same figures and late-row counts; each window
written once (a trigger counts the writes); each model's alert fired once and
resolved once; each notification received once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.demo.broker import EmbeddedBroker
from monitor.demo.data import events
from monitor.demo.sinks import WebhookSink
from storage.db import Store
from storage.stream import merged_state
from tests.monitor.daemon_helpers import MODEL_BLOCK, produce, wait_for
from tests.monitor.fault_helpers import fault_config, start_daemon, terminate, wait_ready
from tests.store_targets import PostgresTarget, StoreTarget, state_target

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.postgres]

MODELS = ["churn", "m1", "m2", "m3", "m4", "m5"]
PER_WINDOW = 400
#: the models' lateness: see the module documentation
LATENESS = "50m"
FAST_SESSION = (
    'session_timeout = "6s"\nheartbeat_interval = "1s"',
    'session_timeout = "3s"\nheartbeat_interval = "500ms"',
)
WRITES_TRIGGER = [
    "CREATE TABLE window_writes (id TEXT NOT NULL)",
    """CREATE FUNCTION count_window_write() RETURNS trigger AS $$
       BEGIN INSERT INTO window_writes (id) VALUES (NEW.id); RETURN NEW; END $$ LANGUAGE plpgsql""",
    "CREATE TRIGGER window_written AFTER INSERT OR UPDATE OF computed_at ON windows"
    " FOR EACH ROW EXECUTE FUNCTION count_window_write()",
]


def model_events(model: str, seed: int, t0: datetime) -> tuple[list[bytes], list[bytes]]:
    """(phase 1, phase 2) of one model: 3 drifting windows, then stragglers for them
    (late after the idle close), 3 clean windows, and one event 10 minutes later: the
    idle close after it moves the watermark there, closing them."""
    def dump(evs: Any) -> list[bytes]:
        return [orjson.dumps(e) for e in evs]

    drift = dump(events(model=model, start=t0, windows=3, per_window=PER_WINDOW, window_seconds=60, shift_from=0, seed=seed))
    clean = dump(events(model=model, start=t0 + timedelta(minutes=30), windows=3, per_window=PER_WINDOW,
                        window_seconds=60, shift_from=99, seed=seed + 1))  # fmt: skip
    stragglers = []
    for i, raw in enumerate(drift[5 : 2 * PER_WINDOW : PER_WINDOW // 2]):
        e = orjson.loads(raw)
        e["event_id"] = f"{model}-late-{i}"
        stragglers.append(orjson.dumps(e))
    last = orjson.loads(clean[-1])
    last["ts"] = int(last["ts"]) + 600_000
    last["event_id"] = f"{model}-sentinel"
    return drift, [*stragglers, *clean, orjson.dumps(last)]


def config(folder: Path, broker: EmbeddedBroker, topic: str, group: str, target: StoreTarget, sink: str) -> Path:
    extra = "".join(MODEL_BLOCK.format(name=m, idle_timeout="2s") for m in MODELS[1:])
    extra += f"""
[[rules]]
name = "drift"
metric = "drift_share"
op = ">"
threshold = 0.5
resolve_after = 1
notifiers = ["hook"]

[notifiers.hook]
type = "webhook"
url = "{sink}"
backoff = "1s"
{target.storage_toml()}"""
    cfg = fault_config(folder, bootstrap=broker.bootstrap, topic=topic, group=group, max_poll_records=200,
                       idle_timeout="2s", extra=extra)  # fmt: skip
    text = cfg.read_text().replace(*FAST_SESSION)
    assert text.count('lateness = "0s"') == len(MODELS)
    cfg.write_text(text.replace('lateness = "0s"', f'lateness = "{LATENESS}"'))
    return cfg


class View:
    """What the tests read from a store while the daemons run."""

    def __init__(self, store: Store, topic: str) -> None:
        self.store, self.topic = store, topic

    def consumed(self) -> int:
        return sum(merged_state(self.store, self.topic)["offsets"].values())

    def open_windows(self) -> int:
        models = merged_state(self.store, self.topic)["models"]
        return sum(len(m.get("open", [])) for m in models.values())

    def deliveries(self) -> dict[str, int]:
        rows = self.store.query("SELECT status, COUNT(*) AS n FROM deliveries GROUP BY status")
        return {r["status"]: r["n"] for r in rows}

    def resolved(self) -> int:
        return self.store.query("SELECT COUNT(*) AS n FROM alerts WHERE state = 'resolved'")[0]["n"]


def run_phases(
    cfgs: list[Path], target: StoreTarget, broker: EmbeddedBroker, topic: str, phases: list[dict[int, list[bytes]]],
    *, moves: bool,
) -> None:
    """Phase 1; (kill one, another leaves and comes back); phase 2; stop all."""
    reader = target.open()
    view = View(reader, topic)
    n1 = sum(len(m) for m in phases[0].values())
    n2 = n1 + sum(len(m) for m in phases[1].values())
    for p, msgs in phases[0].items():
        produce(broker.bootstrap, topic, msgs, partition=p)
    procs = {c: start_daemon(c, log=c.parent / "daemon.log") for c in cfgs}
    try:
        assert all(wait_ready(c, timeout=60) for c in cfgs)
        assert wait_for(lambda: view.consumed() >= n1, timeout=90), view.consumed()
        if moves:
            killed = cfgs[2]
            procs[killed].kill()  # SIGKILL: its partitions move with whatever it had not stored
            procs[killed].wait()
            del procs[killed]
        assert wait_for(lambda: view.open_windows() == 0 and view.deliveries().get("sent") == len(MODELS),
                        timeout=90), (view.open_windows(), view.deliveries())  # fmt: skip
        if moves:
            leaver = cfgs[1]
            assert terminate(procs[leaver]) == 0
            procs[leaver] = start_daemon(leaver, log=leaver.parent / "daemon.log")
            assert wait_ready(leaver, timeout=60)
        for p, msgs in phases[1].items():
            produce(broker.bootstrap, topic, msgs, partition=p)
        assert wait_for(
            lambda: view.consumed() >= n2 and view.resolved() == len(MODELS)
            and view.deliveries().get("sent") == 2 * len(MODELS),
            timeout=120,
        ), (view.consumed(), n2, view.resolved(), view.deliveries())
    finally:
        codes = [terminate(p) for p in procs.values()]
        reader.close()
    assert codes == [0] * len(codes)


def dump(target: StoreTarget) -> dict[str, Any]:
    s = target.open()
    try:
        w = [tuple(r.values()) for r in s.query(
            'SELECT id, model, version, segment, start, "end", rows, status, late_rows FROM windows ORDER BY id')]
        m = [tuple(r.values()) for r in s.query(
            'SELECT window_id, "column", metric, value, p_value, threshold, drifted, test FROM metrics '
            'ORDER BY window_id, "column", metric')]
        a = [tuple(r.values()) for r in s.query(
            "SELECT id, state, episode, fired_at IS NOT NULL AS fired, resolved_at IS NOT NULL AS resolved"
            " FROM alerts ORDER BY id")]
        d = [tuple(r.values()) for r in s.query(
            "SELECT kind, model, status, attempts FROM deliveries ORDER BY model, kind")]
        return {"windows": w, "metrics": m, "alerts": a, "deliveries": d}
    finally:
        s.close()


def test_three_instances_with_kills_and_rejoins_equal_one_instance(
    broker: EmbeddedBroker, pg_target: PostgresTarget, tmp_path: Path
) -> None:
    # the stream: t0..t0+3m, t0+30m..t0+33m and t0+43m, all before now; the idle close of
    # the spell (now - LATENESS = t0 + 10m and the minutes the test has run) stops short of t0+30m
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=60)
    per_model = [model_events(m, 100 + i, t0) for i, m in enumerate(MODELS)]
    phases = [{p: per_model[p][0] for p in range(6)}, {p: per_model[p][1] for p in range(6)}]
    setup = pg_target.open()
    with setup.transaction():
        for sql in WRITES_TRIGGER:
            setup.execute(sql)
    setup.close()

    t_start = time.monotonic()
    with WebhookSink() as sink:
        topic = f"scale-{time.time_ns() % 10**8}"
        broker.create_topic(topic, partitions=6)
        cfgs = [config(tmp_path / name, broker, topic, f"g-{topic}", pg_target, sink.url) for name in "abc"]
        run_phases(cfgs, pg_target, broker, topic, phases, moves=True)
        t_shared = time.monotonic() - t_start
        received = [r.header("webhook-id") for r in sink.accepted()]

    with WebhookSink() as clean_sink:
        solo_topic = f"solo-{time.time_ns() % 10**8}"
        broker.create_topic(solo_topic, partitions=6)
        solo = state_target(tmp_path / "solo" / "state")  # SQLite (PostgreSQL when the suite runs on it)
        cfg = config(tmp_path / "solo", broker, solo_topic, f"g-{solo_topic}", solo, clean_sink.url)
        run_phases([cfg], solo, broker, solo_topic, phases, moves=False)

    shared, clean = dump(pg_target), dump(solo)
    reader = pg_target.open()
    writes = reader.query("SELECT id, COUNT(*) AS n FROM window_writes GROUP BY id")
    reader.close()
    twice = sorted(r["id"] for r in writes if r["n"] != 1)
    late = sum(w[-1] for w in clean["windows"])
    print(f"\nscale-out: {len(shared['windows'])} windows, {late} late rows, {len(received)} notifications;"
          f" 3 instances with a kill and a rejoin took {t_shared:.0f}s")
    assert late >= 4 * len(MODELS)  # the stragglers were late in both runs
    assert twice == []
    assert len(writes) == len(clean["windows"])
    assert shared["windows"] == clean["windows"]
    assert shared["metrics"] == clean["metrics"]
    assert shared["alerts"] == clean["alerts"]
    assert [a[1:] for a in shared["alerts"]] == [("resolved", 1, True, True)] * len(MODELS)
    assert shared["deliveries"] == clean["deliveries"]
    assert len(received) == len(set(received)) == 2 * len(MODELS)
