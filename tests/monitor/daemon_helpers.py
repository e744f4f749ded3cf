"""Helpers for integration tests: configs, producing a drifting stream, reading results."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from monitor.demo.data import events, write_reference_csv
from tests.store_targets import open_state_store, state_has_store, state_storage_toml

START = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

BASE_CONFIG = """\
[daemon]
state_dir = "state"
http_listen = "127.0.0.1:{http_port}"
tick_interval = "1s"
log_level = "info"
{daemon_extra}

[kafka]
bootstrap_servers = ["{bootstrap}"]
group_id = "{group}"
predictions_topic = "{topic}"
session_timeout = "6s"
heartbeat_interval = "1s"
commit_interval = "1s"
poll_timeout = "200ms"
max_poll_records = {max_poll_records}

{model}
{extra}
"""

#: one model on the demo's churn data; ``{name}`` and ``{idle_timeout}`` to fill
MODEL_BLOCK = """
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
idle_timeout = "{idle_timeout}"
"""


def write_config(
    folder: Path, *, bootstrap: str, topic: str, http_port: int, extra: str = "", group: str | None = None,
    daemon_extra: str = "", max_poll_records: int = 10000, idle_timeout: str = "2s",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "reference.csv").exists():
        write_reference_csv(str(folder / "reference.csv"), n=3000, seed=7)
    path = folder / "config.toml"
    if "[storage]" not in extra:  # DRIFTWARDEN_TEST_STORE=postgres: the state dir's database
        extra += state_storage_toml(folder / "state")
    path.write_text(
        BASE_CONFIG.format(
            bootstrap=bootstrap, topic=topic, http_port=http_port, extra=extra, group=group or f"g-{topic}",
            daemon_extra=daemon_extra, max_poll_records=max_poll_records,
            model=MODEL_BLOCK.format(name="churn", idle_timeout=idle_timeout),
        )
    )
    return path


def stream(windows: int, per_window: int, shift_from: int, seed: int = 11) -> list[bytes]:
    return [
        orjson.dumps(e)
        for e in events(model="churn", start=START, windows=windows, per_window=per_window,
                        window_seconds=60, shift_from=shift_from, seed=seed)
    ]


def disordered(msgs: list[bytes], seed: int, spread: int = 40) -> list[bytes]:
    """``msgs`` with each one swapped with one of the next ``spread``: event times out of
    order by up to ``spread`` events (across the panes of sliding windows, which is where
    a window could lose the order its rows came in)."""
    rng = random.Random(seed)
    out = list(msgs)
    for i in range(len(out)):
        j = min(len(out) - 1, i + rng.randrange(spread))
        out[i], out[j] = out[j], out[i]
    return out


def produce(bootstrap: str, topic: str, payloads: list[bytes], partition: int | None = None) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for v in payloads:
        p.send(topic, v, partition=partition)
    p.flush()
    p.close()


def topic_records(bootstrap: str, topic: str, expect: int, timeout: float = 20) -> list[Any]:
    """The records of ``topic`` from its start: polled until ``expect`` arrived (or
    ``timeout``), then a little longer, so that more than expected (a duplicate) shows."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    got: list[Any] = []
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            got.extend(r for recs in c.poll(timeout_ms=300).values() for r in recs)
            if len(got) >= expect:
                # linger a little: more than expected would be a duplicate
                got.extend(r for recs in c.poll(timeout_ms=1500).values() for r in recs)
                break
    finally:
        c.close()
    return got


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def count_windows(db: Path, segment: str = "") -> int:
    if not state_has_store(db):
        return 0
    s = open_state_store(db)
    try:
        return s.query("SELECT COUNT(*) AS n FROM windows WHERE segment = ?", (segment,))[0]["n"]
    finally:
        s.close()


def table_dump(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """windows and metrics, without timestamps of computation: for equality between runs.
    ``db``: a SQLite path or a :class:`tests.store_targets.StoreTarget`."""
    s = open_state_store(db) if isinstance(db, Path) else db.open()
    try:
        w = [tuple(r.values()) for r in s.query(
            'SELECT id, model, version, segment, start, "end", rows, status, late_rows FROM windows ORDER BY id')]
        m = [tuple(r.values()) for r in s.query(
            'SELECT window_id, "column", metric, value, p_value, threshold, drifted, test FROM metrics '
            'ORDER BY window_id, "column", metric')]
        return {"windows": w, "metrics": m}
    finally:
        s.close()


def sample_dump(db: Any) -> list[tuple[Any, ...]]:
    """The stored report samples (``window_samples``, payload included), for equality
    between runs. ``db``: as for :func:`table_dump`."""
    s = open_state_store(db) if isinstance(db, Path) else db.open()
    try:
        return [tuple(r.values()) for r in s.query(
            "SELECT window_id, model, rows, sample_rows, payload FROM window_samples ORDER BY window_id")]
    finally:
        s.close()


_ = timedelta


def drain_output(proc: Any) -> Callable[[float], bytes]:
    """Read ``proc``'s stdout as it comes, in a thread: a pipe holds 64 KiB, and a daemon
    whose log writes block once it is full stops consuming. Returns ``finish(timeout)``:
    after the process has ended, everything it wrote."""
    import threading  # noqa: PLC0415

    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)
    reader.start()

    def finish(timeout: float) -> bytes:
        proc.wait(timeout=timeout)
        reader.join(timeout=10)
        return b"".join(lines)

    return finish


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``driftwarden ARGS`` in a subprocess, without the environment's DRIFTWARDEN_* settings
    (so only the arguments and the config they name count); text output captured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    return subprocess.run([sys.executable, "-m", "monitor.cli.app", *args], capture_output=True, text=True,
                          timeout=120, env=env)
