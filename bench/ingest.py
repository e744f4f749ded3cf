"""Throughput: the bare kafka-python consumer (orjson decode) vs driftwarden's whole path.

Both consume the same topic on the embedded broker in one run. "ours" is the real
Daemon: decode into numpy columns, windows, drift + quality figures per closed
window, one SQLite transaction per flush, offset commits. Events are ~430-byte
JSON with 20 numerical and 5 categorical features; 10k events per 1-minute window.

    python bench/ingest.py              # 300k events
    python bench/ingest.py --quick      # 60k events, well under a minute
    python bench/ingest.py --repeat 3   # 3 rounds of bare then ours, best of each

Each side's rate is a wall-clock rate, so other load on the machine moves it: with
``--repeat K`` the two run alternately K times (each round a new consumer group and
a new state directory) and the ratio is best against best, the round least disturbed
on each side; every round's own ratio is printed too. ``cpu_ratio`` compares events
per CPU-second of this process (the broker runs in its own): the client's work
alone, steadier than wall time on a busy machine, blind to waiting.

Then the alert latency: a real Daemon (not consuming) whose pipeline closes windows that
alternately breach and clear a drift rule; each breach's time from the window's close to
a webhook receiver on 127.0.0.1 holding the signed request (the outbox is woken by the
commit that created the delivery).

Ends with: RESULT bare_eps=… ours_eps=… ratio=… cpu_ratio=… alert_latency_p50_s=… alert_latency_p99_s=…
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, not an installed copy

from monitor.config import load_config  # noqa: E402
from monitor.demo.broker import EmbeddedBroker, free_port  # noqa: E402
from monitor.service.daemon import Daemon  # noqa: E402
from monitor.service.heap import settle_heap  # noqa: E402

NUM = [f"n{i}" for i in range(20)]
CAT = [f"c{i}" for i in range(5)]
CATS = np.array(["alpha", "beta", "gamma", "delta", "epsilon"], dtype=object)
PER_WINDOW = 10_000


def make_events(n: int, seed: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    nums = rng.normal(50, 10, (n, len(NUM))).round(3)
    cats = rng.choice(CATS, (n, len(CAT)))
    base = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)
    out = []
    for i in range(n):
        feats: dict[str, object] = {k: float(nums[i, j]) for j, k in enumerate(NUM)}
        feats.update({k: str(cats[i, j]) for j, k in enumerate(CAT)})
        out.append(
            orjson.dumps(
                {
                    "event_id": f"e{i:09d}",
                    "model": "bench",
                    "version": "v1",
                    "ts": base + (i * 60_000) // PER_WINDOW,
                    "features": feats,
                    "prediction": float(nums[i, 0] / 100),
                }
            )
        )
    return out


def write_reference(path: Path, n: int = 5000) -> None:
    rng = np.random.default_rng(2)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*NUM, *CAT, "prediction"])
        nums = rng.normal(50, 10, (n, len(NUM))).round(3)
        cats = rng.choice(CATS, (n, len(CAT)))
        for i in range(n):
            w.writerow([*nums[i].tolist(), *cats[i].tolist(), nums[i, 0] / 100])


def bare(bootstrap: str, topic: str, n: int, group: str = "bare") -> tuple[float, float]:
    """(events per second, events per CPU-second) of the bare consumer."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    got, t0, c0 = 0, None, 0.0
    while got < n:
        for recs in c.poll(timeout_ms=500, max_records=10_000).values():
            if t0 is None:
                t0, c0 = time.perf_counter(), time.process_time()
            for r in recs:
                orjson.loads(r.value)
            got += len(recs)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    cpu = time.process_time() - c0
    c.close()
    return n / dt, n / cpu


def write_config(folder: Path, *, kafka: str, extra: str = "") -> Path:
    """The bench model's config (and its reference) in ``folder``: ``kafka`` lines under
    [kafka], ``extra`` tables after the model."""
    folder.mkdir(parents=True, exist_ok=True)
    write_reference(folder / "reference.csv")
    path = folder / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "state"
http_listen = "127.0.0.1:{free_port()}"
log_level = "warning"
[kafka]
{kafka}
[[models]]
name = "bench"
reference = "reference.csv"
features.numerical = {NUM!r}
features.categorical = {CAT!r}
window = {{ type = "tumbling", size = "1m", lateness = "0s", min_rows = 100 }}
{extra}""".replace("'", '"')
    )
    return path


def ours(bootstrap: str, topic: str, n: int, folder: Path, group: str = "ours") -> tuple[float, float]:
    """(events per second, events per CPU-second) of the whole daemon."""
    write_config(folder, kafka=f'bootstrap_servers = ["{bootstrap}"]\ngroup_id = "{group}"\n'
                 f'predictions_topic = "{topic}"\nsession_timeout = "6s"\nheartbeat_interval = "1s"')
    cfg = load_config(folder / "config.toml")
    d = Daemon(cfg, http=False)
    first: list[float] = []
    orig = d.pipeline.process_records

    def timed(records: list[object]) -> None:
        if not first:
            first.extend((time.perf_counter(), time.process_time()))
        orig(records)

    d.pipeline.process_records = timed  # type: ignore[method-assign]
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    while d.pipeline.stats.rows < n:
        time.sleep(0.005)
    # all rows are in; wait for the windows they closed to be durable
    while d.pipeline.has_pending:
        time.sleep(0.005)
    dt = time.perf_counter() - first[0]
    cpu = time.process_time() - first[1]
    d.stop()
    t.join(timeout=30)
    return n / dt, n / cpu


def alert_latency(folder: Path, windows: int = 60, per_window: int = 500) -> list[float]:
    """Seconds from each breaching window's close to the webhook receiver holding it."""
    import os
    from collections import namedtuple

    from monitor.demo.sinks import WebhookSink

    Rec = namedtuple("Rec", "topic partition offset timestamp value")
    secret = "whsec_" + "YmVuY2gtYWxlcnQtbGF0ZW5jeS1zZWNyZXQ="
    os.environ["DRIFTWARDEN_BENCH_HOOK"] = secret
    hook = WebhookSink(secret).start()
    write_config(folder, kafka='bootstrap_servers = ["127.0.0.1:9"]\npredictions_topic = "predictions"', extra=f"""
[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = 0.5
notifiers = ["hook"]
[notifiers.hook]
type = "webhook"
url = "{hook.url}"
secret_env = "DRIFTWARDEN_BENCH_HOOK"
""")
    d = Daemon(load_config(folder / "config.toml"), http=False)
    settle_heap()  # as `driftwarden run` does once the daemon has started
    p = d.pipeline
    p.adopt([0], generation=None)
    rng = np.random.default_rng(7)
    base = int(datetime(2026, 11, 23, tzinfo=UTC).timestamp() * 1000)
    offset, out = 0, []
    try:
        for w in range(windows):
            shift = 30.0 if w % 2 else 0.0  # odd windows drift: fire, even ones resolve
            recs = []
            for i in range(per_window):
                feats: dict[str, object] = {k: float(rng.normal(50 + shift, 10)) for k in NUM}
                feats.update({k: str(rng.choice(CATS)) for k in CAT})
                ev = {"event_id": f"l{offset}", "model": "bench", "version": "v1",
                      "ts": base + w * 60_000 + (i * 60_000) // per_window, "features": feats,
                      "prediction": 0.5}
                recs.append(Rec("predictions", 0, offset, base + 86_400_000, orjson.dumps(ev)))
                offset += 1
            p.process_records(recs)
            p.flush()
            d.alerting.deliver_after_commit()
            before = len(hook.requests)
            t0 = time.time()
            for rt in p.models.values():  # the window closes as the idle tick would close it
                p._collect(rt, rt.windows.close_idle(base + (w + 1) * 60_000), datetime.now(UTC))
            p.flush()
            d.alerting.deliver_after_commit()
            if shift:
                if not hook.wait_arrived(before + 1, timeout=10):
                    raise RuntimeError(f"window {w}: no webhook within 10 s")
                out.append(hook.requests[before].received_at - t0)
            else:
                time.sleep(0.05)  # the resolved notification, if any, is not timed
    finally:
        d.alerting.worker.close(timeout=5)
        d.close()
        hook.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of bare then ours; best of each")
    a = ap.parse_args()
    n = a.events or (60_000 if a.quick else 300_000)
    payloads = make_events(n)
    print(f"{n} events, mean {sum(map(len, payloads)) / n:.0f} bytes")
    with EmbeddedBroker() as b, tempfile.TemporaryDirectory() as tmp:
        topic = "bench"
        b.create_topic(topic)
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=b.bootstrap, linger_ms=20, batch_size=1 << 20)
        for v in payloads:
            p.send(topic, v)
        p.flush()
        p.close()
        bares, ourses = [], []
        for k in range(max(a.repeat, 1)):
            bares.append(bare(b.bootstrap, topic, n, group=f"bare{k}"))
            ourses.append(ours(b.bootstrap, topic, n, Path(tmp) / f"ours{k}", group=f"ours{k}"))
            (bw, bc), (ow, oc) = bares[-1], ourses[-1]
            print(f"round {k + 1}: bare {bw:,.0f}, ours {ow:,.0f} events/s ({ow / bw:.2f}×);"
                  f" per CPU-second {bc:,.0f} vs {oc:,.0f} ({oc / bc:.2f}×)")
        be, oe = max(x[0] for x in bares), max(x[0] for x in ourses)
        bce, oce = max(x[1] for x in bares), max(x[1] for x in ourses)
        print(f"bare kafka-python + orjson: {be:,.0f} events/s ({bce:,.0f} per CPU-second)")
        print(f"driftwarden end to end:     {oe:,.0f} events/s  ({oe / be:.2f}× bare;"
              f" {oce:,.0f} per CPU-second, {oce / bce:.2f}×)")
        lat = sorted(alert_latency(Path(tmp) / "latency", windows=20 if a.quick else 60))
    p50, p99 = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    print(f"alert latency, window close -> webhook received ({len(lat)} alerts): p50 {p50 * 1000:.1f} ms,"
          f" p99 {p99 * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms")
    print(f"RESULT bare_eps={be:.0f} ours_eps={oe:.0f} ratio={oe / be:.3f} cpu_ratio={oce / bce:.3f}"
          f" alert_latency_p50_s={p50:.4f} alert_latency_p99_s={p99:.4f}")


if __name__ == "__main__":
    main()
