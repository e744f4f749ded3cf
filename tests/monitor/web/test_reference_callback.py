"""The retraining loop's daemon side: POST a new reference, the next windows are judged against it."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.demo.data import events, sample
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import START, count_windows, produce, wait_for, write_config
from tests.store_targets import open_state_store

pytestmark = [pytest.mark.broker]

TOKEN = "test-api-token-0123456789"


def _csv(cols: dict[str, np.ndarray]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    names = list(cols)
    w.writerow(names)
    for i in range(len(cols[names[0]])):
        w.writerow([cols[c][i] for c in names])
    return buf.getvalue().encode()


def _drifted(db: Path) -> list[tuple[bool, str]]:
    s = open_state_store(db)
    try:
        rows = s.query(
            "SELECT m.drifted, w.reference FROM windows w JOIN metrics m ON m.window_id = w.id "
            "AND m.metric = 'drift_share' AND m.\"column\" = '' WHERE w.segment = '' ORDER BY w.start"
        )
        return [(bool(r["drifted"]), r["reference"]) for r in rows]
    finally:
        s.close()


def test_posted_reference_is_used_from_the_next_window(broker: EmbeddedBroker, topic: str, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTWARDEN_TEST_API_TOKEN", TOKEN)
    port = free_port()
    cfg_path = write_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=port,
                            daemon_extra='api_token_env = "DRIFTWARDEN_TEST_API_TOKEN"',
                            idle_timeout="1h")  # windows close by data only
    cfg = load_config(cfg_path)
    db = cfg.daemon.state_dir / "driftwarden.db"
    # phase 1: two normal windows, two shifted ones; windows 0-2 close, 3 stays open
    produce(broker.bootstrap, topic, [orjson.dumps(e) for e in events(
        model="churn", start=START, windows=4, per_window=300, window_seconds=60, shift_from=2)])
    daemon = Daemon(cfg)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: count_windows(db) >= 3, timeout=60)
        api = f"http://127.0.0.1:{port}/api/v1/models/churn/references?version=v2"
        body = _csv(sample(3000, np.random.default_rng(99), shifted=True))
        # without the token: refused, nothing registered
        assert httpx.post(api, content=body).status_code == 401
        assert httpx.post(api, content=body, headers={"Authorization": "Bearer nope"}).status_code == 401
        r = httpx.post(api, content=body, headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv"})
        assert r.status_code == 201, r.text
        assert r.json()["rows"] == 3000
        models = httpx.get(f"http://127.0.0.1:{port}/api/v1/models").json()["models"]
        assert models[0]["reference"]["version"] == "v2"
        # phase 2: more shifted windows (and two rows of a 7th to close the 6th: one alone
        # moves no clock):
        # window 3, still open at the swap, and the new ones are judged against v2
        produce(broker.bootstrap, topic, [orjson.dumps(e) for e in events(
            model="churn", start=START + timedelta(minutes=4), windows=2, per_window=300, window_seconds=60,
            shift_from=0, seed=5)])
        produce(broker.bootstrap, topic, [orjson.dumps(e) for e in events(
            model="churn", start=START + timedelta(minutes=6), windows=1, per_window=2, window_seconds=60,
            shift_from=0, seed=6)])
        assert wait_for(lambda: count_windows(db) >= 6, timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    got = _drifted(db)
    assert [d for d, _ in got] == [False, False, True, False, False, False]
    assert len({ref for _, ref in got[:3]}) == 1
    assert got[3][1] == got[4][1] == got[5][1] != got[0][1]
    s = open_state_store(db)
    refs = s.query('SELECT model, version, source, rows FROM "references" ORDER BY registered_at')
    assert [(r["version"], r["source"], r["rows"]) for r in refs] == [("", "config", 3000), ("v2", "callback", 3000)]
    s.close()
    # a restart keeps monitoring against the registered reference
    d2 = Daemon(load_config(cfg_path), http=False)
    assert d2.pipeline.models["churn"].prepared.version == "v2"
    d2.store.close()
