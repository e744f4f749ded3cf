"""Soak: the daemon under a steady stream plus a flood of bad messages, with tiny retention.

The real daemon runs as a subprocess against the embedded broker. A producer
sends, every second, one minute of event time for the demo's churn model (so
windows close every second) and a flood of bad messages (most over the
dead-letter volume cap). Retention is a few seconds, so the prune works all
the time. Measured in the same run: the daemon's RSS (start after warm-up,
peak, end), the database file against what the stream would have stored
without retention and the cap (the limit it must stay far below), and what was
stored, pruned and dropped.

    python bench/soak.py            # 3 minutes
    python bench/soak.py --quick    # 45 seconds

Ends with: RESULT events=… rss_start_mb=… peak_rss_mb=… rss_end_mb=… rss_growth_pct=…
db_mb_end=… db_mb_peak=… unbounded_mb=… windows=… windows_in_table=… dead_letters_dropped=…
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, not an installed copy

from monitor.demo.broker import EmbeddedBroker, free_port  # noqa: E402
from monitor.demo.data import events, write_reference_csv  # noqa: E402

START = datetime(2026, 11, 23, tzinfo=UTC)
RETENTION_S = 20

CONFIG = """
[daemon]
state_dir = "state"
http_listen = "127.0.0.1:{port}"
log_level = "warning"
tick_interval = "1s"

[kafka]
bootstrap_servers = ["{bootstrap}"]
group_id = "soak"
predictions_topic = "{topic}"
session_timeout = "6s"
heartbeat_interval = "1s"
commit_interval = "1s"

[[models]]
name = "churn"
reference = "reference.csv"
segments = ["region"]
features.numerical = ["age", "tenure_days", "monthly_charges"]
features.categorical = ["plan", "region"]
window = {{ type = "tumbling", size = "1m", lateness = "0s", min_rows = 50, idle_timeout = "30s" }}

[retention]
windows = "{retention}s"
metrics = "{retention}s"
dead_letters = "{retention}s"
prune_interval = "2s"
"""


def rss_mb(pid: int) -> float:
    try:
        import psutil  # noqa: PLC0415

        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except ImportError:  # Linux without psutil
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise


def scrape(port: int) -> dict[str, float]:
    """The daemon's /metrics as {"name{labels}": value}."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def db_bytes(state: Path) -> int:
    return sum((state / f"driftwarden.db{s}").stat().st_size for s in ("", "-wal") if (state / f"driftwarden.db{s}").exists())


def produce(bootstrap: str, topic: str, stop: threading.Event, per_s: int, bad_per_s: int, bad_bytes: int,
            sent: dict[str, int]) -> None:  # fmt: skip
    from kafka import KafkaProducer  # noqa: PLC0415

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20)
    k = 0
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            for e in events(model="churn", start=START + timedelta(minutes=k), windows=1, per_window=per_s,
                            window_seconds=60, shift_from=10**9, seed=k):  # fmt: skip
                e["event_id"] = f"{k}-{e['event_id']}"
                p.send(topic, orjson.dumps(e))
            for i in range(bad_per_s):
                p.send(topic, b"<%d>" % (k * bad_per_s + i) + b"x" * bad_bytes)
            p.flush()
            k += 1
            sent["good"] = sent.get("good", 0) + per_s
            sent["bad"] = sent.get("bad", 0) + bad_per_s
            stop.wait(max(0.0, 1.0 - (time.monotonic() - t0)))
    finally:
        p.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=int, default=None)
    a = ap.parse_args()
    seconds = a.seconds or (45 if a.quick else 180)
    per_s, bad_per_s, bad_bytes = 1000, 200, 8192
    with EmbeddedBroker() as b, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        b.create_topic("soak")
        write_reference_csv(str(folder / "reference.csv"), n=3000, seed=7)
        port = free_port()
        (folder / "config.toml").write_text(
            CONFIG.format(port=port, bootstrap=b.bootstrap, topic="soak", retention=RETENTION_S)
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli.app", "run", "-c", str(folder / "config.toml")],
            cwd=folder, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while scrape(port).get("driftwarden_ready", 0) < 1:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the daemon did not become ready")
                time.sleep(0.5)
            stop, sent = threading.Event(), {}
            producer = threading.Thread(
                target=produce, args=(b.bootstrap, "soak", stop, per_s, bad_per_s, bad_bytes, sent), daemon=True
            )
            producer.start()
            state = folder / "state"
            t0, warm = time.monotonic(), max(10.0, seconds * 0.15)
            rss_start, rss_peak, db_peak, rss = None, 0.0, 0, 0.0
            while (elapsed := time.monotonic() - t0) < seconds:
                time.sleep(1.0)
                rss = rss_mb(proc.pid)
                rss_peak = max(rss_peak, rss)
                db_peak = max(db_peak, db_bytes(state))
                if rss_start is None and elapsed >= warm:
                    rss_start = rss
                if int(elapsed) % 15 == 0:
                    print(f"{elapsed:5.0f}s  rss {rss:6.1f} MiB  db+wal {db_bytes(state) / 2**20:6.1f} MiB")
            stop.set()
            producer.join(30)
            time.sleep(3)  # the last flush and prune
            m = scrape(port)
            rss_end, db_end = rss_mb(proc.pid), db_bytes(state)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        conn = sqlite3.connect(f"file:{state / 'driftwarden.db'}?mode=ro", uri=True)
        in_table = conn.execute("SELECT COUNT(*) FROM windows").fetchone()[0]
        conn.close()
    windows = m.get("driftwarden_windows_closed_total", 0)
    dropped = sum(v for k, v in m.items() if k.startswith("driftwarden_dead_letters_dropped_total"))
    unbounded = sent["bad"] * bad_bytes / 2**20
    rss_start = rss_start or rss_end
    growth = 100 * (rss_end - rss_start) / rss_start
    print(
        f"{sent['good']} good and {sent['bad']} bad messages in {seconds}s; {windows:.0f} windows stored,"
        f" {in_table} left after pruning; {dropped:.0f} dead letters counted, not stored"
    )
    print(
        f"RSS {rss_start:.1f} -> peak {rss_peak:.1f} -> end {rss_end:.1f} MiB ({growth:+.1f}%);"
        f" db+wal end {db_end / 2**20:.1f} MiB, peak {db_peak / 2**20:.1f} MiB, vs {unbounded:.1f} MiB of"
        " bad payloads that an uncapped, unpruned store would hold"
    )
    print(
        f"RESULT events={sent['good']} rss_start_mb={rss_start:.1f} peak_rss_mb={rss_peak:.1f}"
        f" rss_end_mb={rss_end:.1f} rss_growth_pct={growth:.1f} db_mb_end={db_end / 2**20:.2f}"
        f" db_mb_peak={db_peak / 2**20:.2f} unbounded_mb={unbounded:.1f} windows={windows:.0f}"
        f" windows_in_table={in_table} dead_letters_dropped={dropped:.0f}"
    )


if __name__ == "__main__":
    main()
