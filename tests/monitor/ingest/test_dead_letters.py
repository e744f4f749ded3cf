"""Every kind of bad message lands in dead_letters with its reason; valid figures are unchanged."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import (
    count_windows,
    produce,
    stream,
    table_dump,
    wait_for,
    write_config,
)
from tests.store_targets import PostgresTarget, StoreTarget, open_state_store

pytestmark = [pytest.mark.broker]

GOOD = {"event_id": "x", "model": "churn", "ts": "2026-11-23T12:00:30Z", "prediction": 0.5,
        "features": {"age": 40, "tenure_days": 10, "monthly_charges": 70, "plan": "pro", "region": "eu"}}


def _with(**changes: object) -> bytes:
    d = orjson.loads(orjson.dumps(GOOD))
    for k, v in changes.items():
        if k.startswith("features."):
            d["features"][k.split(".", 1)[1]] = v
        elif v is ...:
            d.pop(k)
        else:
            d[k] = v
    return orjson.dumps(d)


BAD: list[tuple[bytes, str]] = [
    (b"this is not json", "not_json"),
    (b"", "empty"),
    (b"[1, 2, 3]", "not_object"),
    (b'{"age": 1e999, "model": "churn"}', "non_finite"),
    (_with(model=...), "missing_field: model"),
    (_with(model="fraud"), "unknown_model: fraud"),
    (_with(model=7), "bad_type: model expected string, got number"),
    (_with(event_id=...), "missing_field: event_id"),
    (_with(features=...), "missing_field: features"),
    (_with(features=[1, 2]), "bad_type: features expected object, got array"),
    (_with(prediction=...), "missing_field: prediction"),
    (_with(prediction="high"), "bad_type: prediction expected number, got string"),
    (_with(**{"features.age": "forty"}), "bad_type: features.age expected number, got string"),
    (_with(**{"features.plan": {"a": 1}}), "bad_type: features.plan expected string, got object"),
    (_with(ts="yesterday"), "bad_type: ts is not an RFC 3339 time"),
    (_with(ts=True), "bad_type: ts expected RFC 3339 string or epoch milliseconds, got bool"),
    (b'{"model": "churn", "pad": "' + b"x" * 5000 + b'"}', "too_large: "),
]


def _run(cfg_path: Path, expected_windows: int, target: StoreTarget | None = None) -> Path:
    """Run the daemon until ``expected_windows`` are stored: in its state dir's SQLite file,
    or in ``target`` (the test PostgreSQL) when given."""
    cfg = load_config(cfg_path)
    daemon = Daemon(cfg, http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    db = cfg.daemon.state_dir / "driftwarden.db"

    def stored() -> int:
        if target is None:
            return count_windows(db)
        return target.reader().query("SELECT COUNT(*) AS n FROM windows WHERE segment = ''")[0]["n"]

    try:
        assert wait_for(lambda: stored() >= expected_windows, timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    return db


def test_each_bad_message_is_dead_lettered_and_figures_unchanged(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget
) -> None:
    """The dirty stream is stored on each store (SQLite, or the shared PostgreSQL) and
    compared with one clean run on SQLite: figures equal, one letter per bad message."""
    pg = store_target if isinstance(store_target, PostgresTarget) else None
    good = stream(windows=4, per_window=200, shift_from=2)
    clean_topic, dirty_topic = f"clean-{free_port()}", f"dirty-{free_port()}"
    broker.create_topic(clean_topic)
    broker.create_topic(dirty_topic)
    produce(broker.bootstrap, clean_topic, good)
    # interleave one bad message after every 40 good ones
    dirty: list[bytes] = []
    bad_iter = iter(BAD)
    for i, g in enumerate(good):
        if i % 40 == 0:
            nxt = next(bad_iter, None)
            if nxt is not None:
                dirty.append(nxt[0])
        dirty.append(g)
    dirty.extend(b for b, _ in bad_iter)
    produce(broker.bootstrap, dirty_topic, dirty)

    limits = "max_message_bytes = 4096\n"
    c1 = write_config(tmp_path / "clean", bootstrap=broker.bootstrap, topic=clean_topic, http_port=free_port())
    # every payload is compared below: keep them all (7 bad_type letters > the default cap of 5 a minute)
    keep_payloads = "[retention]\ndead_letter_payloads_per_minute = 60\n"
    c2 = write_config(tmp_path / "dirty", bootstrap=broker.bootstrap, topic=dirty_topic, http_port=free_port(),
                      extra=keep_payloads + (pg.storage_toml() if pg else ""))
    for c in (c1, c2):
        c.write_text(c.read_text().replace("[kafka]\n", "[kafka]\n" + limits))
    db_clean = _run(c1, 4)
    db_dirty = _run(c2, 4, pg)

    assert table_dump(db_clean) == table_dump(pg or db_dirty)
    store = pg.reader() if pg else open_state_store(db_dirty)
    letters = store.query('SELECT "offset", reason, payload FROM dead_letters ORDER BY "offset"')
    assert len(letters) == len(BAD)
    for (payload, reason), row in zip(BAD, letters, strict=True):
        assert row["reason"].startswith(reason), (row["reason"], reason)
        if payload:
            assert bytes(row["payload"]) == payload[:65536]
    assert open_state_store(db_clean).query("SELECT COUNT(*) AS n FROM dead_letters")[0]["n"] == 0
