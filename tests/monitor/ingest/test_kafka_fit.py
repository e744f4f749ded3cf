"""Real clusters: compressed topics (gzip, lz4, snappy, zstd) give the same tables as an
uncompressed one, and the dead-letter topic receives every stored bad message once, with
its key and headers, after it is durable."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import (
    count_windows,
    stream,
    table_dump,
    topic_records,
    wait_for,
    write_config,
)
from tests.monitor.fault_helpers import durable_offset, with_sentinel
from tests.store_targets import PG_MODE, open_state_store

pytestmark = [pytest.mark.broker]

CODECS = ["gzip", "lz4", "snappy", "zstd"]


def _produce(bootstrap: str, topic: str, payloads: list[bytes], codec: str | None) -> None:
    from kafka import KafkaProducer

    p = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, compression_type=codec)
    for v in payloads:
        p.send(topic, v)
    p.flush()
    p.close()


def _run(cfg_path: Path, n: int, until: Callable[[Daemon], bool] | None = None) -> Path:
    """Run the daemon until ``n`` messages are durable (and ``until(daemon)``, if given)."""
    cfg = load_config(cfg_path)
    daemon = Daemon(cfg, http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    db = cfg.daemon.state_dir / "driftwarden.db"
    try:
        assert wait_for(lambda: durable_offset(db) >= n and (until is None or until(daemon)), timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    return db


def test_each_codec_is_consumed_and_figures_equal_an_uncompressed_topic(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    msgs = with_sentinel(stream(windows=8, per_window=150, shift_from=4, seed=8))
    plain, packed = f"plain-{uuid.uuid4().hex[:8]}", f"packed-{uuid.uuid4().hex[:8]}"
    broker.create_topic(plain)
    broker.create_topic(packed)
    _produce(broker.bootstrap, plain, msgs, None)
    # one topic, one slice of the stream per codec, in order
    cut = len(msgs) // len(CODECS) + 1
    for i, codec in enumerate(CODECS):
        _produce(broker.bootstrap, packed, msgs[i * cut : (i + 1) * cut], codec)
    dumps = []
    for name in (plain, packed):
        cfg = write_config(tmp_path / name, bootstrap=broker.bootstrap, topic=name, http_port=free_port(),
                           idle_timeout="1h")
        dumps.append(table_dump(_run(cfg, len(msgs))))
    assert len(dumps[0]["windows"]) >= 8 * 4  # every window, overall and per region
    assert dumps[1] == dumps[0]


_WITHOUT = """
import sys, time
for m in sys.argv[2].split(","):
    sys.modules[m] = None
from kafka import KafkaConsumer
c = KafkaConsumer(sys.argv[1], bootstrap_servers=sys.argv[3], auto_offset_reset="earliest", group_id=None)
n, end = 0, time.time() + 10
try:
    while n < 50 and time.time() < end:
        n += sum(len(r) for r in c.poll(timeout_ms=500).values())
    print("consumed", n)
except Exception as exc:
    print(type(exc).__name__)
"""


@pytest.mark.parametrize(("codec", "modules"), [("lz4", "lz4,lz4.frame"), ("snappy", "snappy,cramjam"),
                                                ("zstd", "zstandard")])
def test_the_broker_serves_batches_as_compressed_and_the_codec_package_is_what_reads_them(
    broker: EmbeddedBroker, codec: str, modules: str
) -> None:
    """Tansu 0.6 stores and serves each codec's batches unchanged: a consumer without the
    codec's package fails, so the test above really exercised each decompressor."""
    topic = f"{codec}-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    _produce(broker.bootstrap, topic, [orjson.dumps({"i": i, "pad": "x" * 100}) for i in range(50)], codec)
    res = subprocess.run([sys.executable, "-c", _WITHOUT, topic, modules, broker.bootstrap],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "UnsupportedCodecError", res.stdout + res.stderr[-500:]
    with_codec = subprocess.run([sys.executable, "-c", _WITHOUT, topic, "", broker.bootstrap],
                                capture_output=True, text=True, timeout=60)
    assert with_codec.stdout.strip() == "consumed 50", with_codec.stdout + with_codec.stderr[-500:]


# --------------------------------------------------------------------------- dead-letter topic

BAD = [b"not json", b'{"model": "churn"}', b'{"model": "fraud", "prediction": 1}', b"[1, 2]"]


def test_dead_letters_are_produced_to_the_topic_once_with_key_and_headers(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    topic, dlq = f"dl-src-{uuid.uuid4().hex[:8]}", f"dl-out-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    broker.create_topic(dlq)
    good = stream(windows=3, per_window=60, shift_from=99, seed=2)
    msgs = good[:60] + BAD[:2] + good[60:] + BAD[2:]
    _produce(broker.bootstrap, topic, msgs, None)
    cfg = write_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=free_port(), idle_timeout="1h")
    cfg.write_text(cfg.read_text().replace("[kafka]\n", f'[kafka]\ndead_letter_topic = "{dlq}"\n')
                   + "\n[retention]\ndead_letter_payloads_per_minute = 60\n")  # keep every payload here
    until = None
    if PG_MODE:
        # on a shared store the daemon runs until the feed has caught up with the stored letters

        def until(d: Daemon) -> bool:
            last = d.store.query("SELECT txid, id FROM dead_letters ORDER BY txid DESC, id DESC LIMIT 1")
            return (
                d.dead_letter_topic is not None
                and bool(last)
                and tuple(d.dead_letter_topic.cursor()) >= (last[0]["txid"], last[0]["id"])
            )

    db = _run(cfg, len(msgs), until)
    records = topic_records(broker.bootstrap, dlq, len(BAD))
    store = open_state_store(db, readonly=True)
    try:
        stored = store.query('SELECT "offset", reason, payload FROM dead_letters ORDER BY id')
    finally:
        store.close()
    assert [r["payload"] for r in stored] == BAD
    assert len(records) == len(BAD)
    for rec, row in zip(records, stored, strict=True):
        headers = {k: v.decode() for k, v in rec.headers}  # type: ignore[attr-defined]
        assert rec.key == f"{topic}/0/{row['offset']}".encode()  # type: ignore[attr-defined]
        assert rec.value == row["payload"]  # type: ignore[attr-defined]
        assert headers["driftwarden.reason"] == row["reason"]
        assert headers["driftwarden.source.topic"] == topic
        assert headers["driftwarden.source.partition"] == "0"
        assert headers["driftwarden.source.offset"] == str(row["offset"])
        assert headers["driftwarden.received_at"].endswith("Z")
    assert [int(dict(r.headers)["driftwarden.source.offset"]) for r in records] == [60, 61, 182, 183]  # type: ignore[attr-defined]

    # a restart produces only what is new: the cursor is durable
    _produce(broker.bootstrap, topic, [b"late garbage"], None)
    _run(cfg, len(msgs) + 1, until)
    again = topic_records(broker.bootstrap, dlq, len(BAD) + 1)
    assert len(again) == len(BAD) + 1
    assert again[-1].value == b"late garbage"  # type: ignore[attr-defined]
    assert count_windows(db) >= 2
