"""Bad input: any byte string is dead-lettered with a reason, never a crash, and the
figures of the valid records do not change."""

from __future__ import annotations

import functools
import json
import random
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.ingest.decode import BatchDecoder
from monitor.ingest.schema import ModelSchema
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, stream, table_dump, wait_for, write_config
from tests.monitor.fault_helpers import durable_offset, open_windows
from tests.store_targets import PostgresTarget, StoreTarget, open_state_store

REASONS = {
    "too_large",
    "empty",
    "not_json",
    "non_finite",
    "not_object",
    "missing_field",
    "bad_type",
    "unknown_model",
}


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    value: bytes | None


@functools.cache
def _decoder() -> BatchDecoder:
    with tempfile.TemporaryDirectory(prefix="fuzz-cfg-") as folder:  # the decoder keeps nothing of it
        cfg = load_config(write_config(Path(folder), bootstrap="127.0.0.1:9", topic="t", http_port=1))
    m = cfg.models[0]
    return BatchDecoder(
        {m.name: ModelSchema.from_config(m)},
        prediction_names={m.name: m.prediction},
        max_message_bytes=4096,
    )


GOOD = orjson.loads(stream(1, 1, 1)[0])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_events(draw: Any) -> bytes:
    """A valid event with one field replaced by any JSON value or removed, then maybe cut."""
    ev = orjson.loads(orjson.dumps(GOOD))
    where = draw(
        st.sampled_from(
            [
                "model",
                "event_id",
                "ts",
                "prediction",
                "features",
                "segment",
                "version",
                *[f"features.{k}" for k in GOOD["features"]],
            ]
        )
    )
    target, key = (ev["features"], where.split(".", 1)[1]) if "." in where else (ev, where)
    if draw(st.booleans()):
        target.pop(key, None)
    else:
        target[key] = draw(json_values)
    raw = json.dumps(ev).encode()  # stdlib: big integers and NaN pass through to the decoder
    cut = draw(st.integers(0, len(raw)))
    return raw[:cut] if draw(st.booleans()) else raw


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(
        st.binary(max_size=300) | mutated_events() | st.none(), min_size=1, max_size=20
    )
)
def test_decode_never_raises_and_accounts_for_every_record(payloads: list[bytes | None]) -> None:
    dec = _decoder()
    recs = [Rec("t", 0, i, 1_900_000_000_000, p) for i, p in enumerate(payloads)]  # 2030: after every good ts
    batches, dead = dec.decode(recs)
    good = sum(len(b) for b in batches.values())
    assert good + len(dead) == len(recs)
    assert len({d.offset for d in dead}) == len(dead)
    for d in dead:
        assert d.reason.split(":", 1)[0] in REASONS, d.reason
    for b in batches.values():
        n = len(b)
        assert all(
            a.shape[0] == n
            for a in (b.partition, b.offset, b.event_id, b.version, *b.columns.values())
        )


def bad_messages(count: int, seed: int, max_bytes: int) -> list[bytes]:
    """``count`` messages each certainly invalid, from a seeded generator (no hypothesis
    shrinking needed at this volume): random bytes, cut JSON, wrong types, wrong shapes."""
    rng = random.Random(seed)
    good = [orjson.loads(m) for m in stream(2, 50, 1, seed=seed)]
    out: list[bytes] = []
    for i in range(count):
        kind = i % 8
        ev = orjson.loads(orjson.dumps(rng.choice(good)))
        if kind == 0:  # random bytes that cannot start a JSON object
            out.append(
                bytes([rng.choice(b"\x00\x01\xff]\\#")]) + rng.randbytes(rng.randint(0, 200))
            )
        elif kind == 1:  # valid event cut before its closing brace
            raw = orjson.dumps(ev)
            out.append(raw[: rng.randint(0, len(raw) - 1)])
        elif kind == 2:  # a required field missing
            ev.pop(rng.choice(["model", "event_id", "prediction", "features"]))
            out.append(orjson.dumps(ev))
        elif kind == 3:  # a feature of the wrong type
            ev["features"][rng.choice(["age", "tenure_days", "monthly_charges"])] = rng.choice(
                ["x", [], {}, True]
            )
            out.append(orjson.dumps(ev))
        elif kind == 4:  # unknown model or a model that is not a string
            ev["model"] = rng.choice([f"m{rng.randint(0, 9)}", 7, [], {"m": 1}])
            out.append(orjson.dumps(ev))
        elif kind == 5:  # JSON that is not an object, or an empty message
            out.append(rng.choice([b"", b"[]", b"1", b'"s"', b"null", b"true", orjson.dumps([ev])]))
        elif kind == 6:  # too large
            out.append(orjson.dumps({**ev, "pad": "y" * (max_bytes + rng.randint(1, 500))}))
        else:  # bad timestamps, bad structure of features, non-finite numbers
            choice = rng.randint(0, 3)
            if choice == 0:
                ev["ts"] = rng.choice(["yesterday", True, [], {"t": 1}, "12:00"])
            elif choice == 1:
                ev["features"] = rng.choice([[], "f", 3])
            elif choice == 2:
                ev["prediction"] = rng.choice(["high", [], {}])
            else:
                out.append(
                    orjson.dumps(ev).replace(b'"features":{', b'"features":{"age":Infinity,', 1)[
                        :-1
                    ]
                    + b"}"
                )
                continue
            out.append(orjson.dumps(ev))
    return out


def _run_until(cfg_path: Path, done: Any, timeout: float = 90, target: StoreTarget | None = None) -> Path | StoreTarget:
    """Run until ``done(store)``; the store is the state dir's SQLite file, or ``target``."""
    cfg = load_config(cfg_path)
    daemon = Daemon(cfg, http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    db: Path | StoreTarget = target if target is not None else cfg.daemon.state_dir / "driftwarden.db"
    try:
        assert wait_for(lambda: done(db), timeout=timeout), f"offset {durable_offset(db)}"
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    return db


@pytest.mark.broker
@pytest.mark.slow
def test_tens_of_thousands_of_bad_messages(broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget) -> None:
    """The fuzzed stream on each store (SQLite, or the shared PostgreSQL), compared with
    one clean run on SQLite; every bad message is stored or counted by the volume cap."""
    pg = store_target if isinstance(store_target, PostgresTarget) else None
    max_bytes, keep = 2048, 100
    good = stream(windows=4, per_window=300, shift_from=2)
    bad = bad_messages(24_000, seed=5, max_bytes=max_bytes)
    rng = random.Random(9)
    dirty = list(good)
    for b in bad:
        dirty.insert(rng.randint(0, len(dirty)), b)
    clean_topic, dirty_topic = f"fz-clean-{free_port()}", f"fz-dirty-{free_port()}"
    broker.create_topic(clean_topic)
    broker.create_topic(dirty_topic)
    produce(broker.bootstrap, clean_topic, good)
    produce(broker.bootstrap, dirty_topic, dirty)
    cfgs = []
    for name, topic in (("clean", clean_topic), ("dirty", dirty_topic)):
        c = write_config(
            tmp_path / name,
            bootstrap=broker.bootstrap,
            topic=topic,
            http_port=free_port(),
            daemon_extra=f"max_payload_bytes = {keep}",
            extra=pg.storage_toml() if pg and name == "dirty" else "",
        )
        c.write_text(
            c.read_text().replace("[kafka]\n", f"[kafka]\nmax_message_bytes = {max_bytes}\n")
        )
        cfgs.append(c)
    db_clean = _run_until(
        cfgs[0], lambda db: durable_offset(db) >= len(good) and open_windows(db) == 0
    )
    db_dirty = _run_until(
        cfgs[1], lambda db: durable_offset(db) >= len(dirty) and open_windows(db) == 0, target=pg
    )

    clean, fuzzed = table_dump(db_clean), table_dump(db_dirty)
    print(
        f"\nfuzz: {len(bad)} bad among {len(good)} good; {len(clean['windows'])} windows,"
        f" {len(clean['metrics'])} metrics compared"
    )
    assert fuzzed == clean
    store = open_state_store(db_dirty) if isinstance(db_dirty, Path) else db_dirty.open()
    try:
        letters = store.query('SELECT "offset", reason, length(payload) AS n FROM dead_letters')
        by_reason: dict[str, int] = {}
        for row in letters:
            code = row["reason"].split(":", 1)[0]
            by_reason[code] = by_reason.get(code, 0) + 1
        print(f"fuzz: dead letters by reason {dict(sorted(by_reason.items()))}")
        # beyond the volume cap letters are counted, not stored: none is lost silently
        volume = store.query(
            "SELECT reason, SUM(stored) AS stored, SUM(dropped) AS dropped, MAX(stored) AS most"
            " FROM dead_letter_volume GROUP BY reason"
        )
        assert sum(r["stored"] + r["dropped"] for r in volume) == len(bad)
        assert {r["reason"]: r["stored"] for r in volume} == by_reason
        assert max(r["most"] for r in volume) <= 60  # retention.dead_letters_per_minute
        assert set(by_reason) <= REASONS
        assert max(r["n"] or 0 for r in letters) <= keep
    finally:
        store.close()
