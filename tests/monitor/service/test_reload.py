"""SIGHUP through a real daemon subprocess, on SQLite and on a shared PostgreSQL: new rules, notifiers and thresholds apply from the
next closed window; the window open during the reload keeps every row; a config that does
not validate, or that changes what needs a restart, is refused and the old one keeps running."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker
from monitor.demo.sinks import WebhookSink
from tests.monitor.daemon_helpers import produce, stream, wait_for
from tests.monitor.fault_helpers import (
    durable_offset,
    fault_config,
    finished,
    http_get,
    open_windows,
    start_daemon,
    terminate,
    wait_ready,
    with_sentinel,
)
from tests.monitor.service.notify_helpers import NotifySocket
from tests.store_targets import PostgresTarget, StoreTarget, state_target

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PER_WINDOW = 200

RULES = """
[models.drift.columns.age]
threshold = {age_threshold}

[[rules]]
name = "drift"
metric = "drift_share"
op = ">="
threshold = {threshold}
notifiers = ["{notifier}"]

[notifiers.one]
type = "webhook"
url = "{sink}/one"
backoff = "1s"
{two}
"""

TWO = """
[notifiers.two]
type = "webhook"
url = "{sink}/two"
backoff = "1s"
"""


def _age_thresholds(db: StoreTarget) -> list[tuple[str, float]]:
    s = db.open(readonly=True)
    try:
        return [
            (r["start"], r["threshold"])
            for r in s.query(
                "SELECT w.start, m.threshold FROM metrics m JOIN windows w ON w.id = m.window_id"
                " WHERE w.segment = '' AND m.\"column\" = 'age' AND m.metric = 'drift_score' ORDER BY w.start"
            )
        ]
    finally:
        s.close()


def _rows(db: StoreTarget) -> list[int]:
    s = db.open(readonly=True)
    try:
        return [r["rows"] for r in s.query("SELECT rows FROM windows WHERE segment = '' ORDER BY start")]
    finally:
        s.close()


def test_sighup_reloads_rules_notifiers_and_thresholds_and_refuses_bad_configs(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget
) -> None:
    """On SQLite and on a shared PostgreSQL (the store only changes where rows land)."""
    pg = store_target if isinstance(store_target, PostgresTarget) else None
    topic = f"reload-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    msgs = with_sentinel(stream(windows=8, per_window=PER_WINDOW, shift_from=4, seed=21))
    with WebhookSink() as sink, NotifySocket() as ns:
        base = sink.url.rstrip("/")
        cfg = fault_config(
            tmp_path, bootstrap=broker.bootstrap, topic=topic, idle_timeout="1h",
            extra=RULES.format(age_threshold=0.1, threshold=0.99, notifier="one", sink=base, two="")
            + (pg.storage_toml() if pg is not None else ""),
        )
        # the rules' extra lands after [models.window]: the drift override belongs to the model
        original = cfg.read_text()
        db: StoreTarget = pg or state_target(cfg.parent / "state")
        log = tmp_path / "daemon.log"
        produce(broker.bootstrap, topic, msgs[: 6 * PER_WINDOW])
        proc = start_daemon(cfg, env=ns.env(), log=log)
        try:
            assert wait_ready(cfg), log.read_text()[-2000:]
            assert wait_for(lambda: durable_offset(db) >= 6 * PER_WINDOW, timeout=30)
            assert wait_for(lambda: len(_rows(db)) == 5, timeout=60)
            assert open_windows(db) > 0  # the sixth window is open, its rows in memory
            time.sleep(1.5)
            assert sink.requests == []  # drift share 0.6 < 0.99: nothing fired

            # 1. a good reload: fire at 0.2 to notifier "two" (new), age judged at 5.0
            cfg.write_text(original.replace(RULES.format(age_threshold=0.1, threshold=0.99, notifier="one", sink=base, two=""),
                                            RULES.format(age_threshold=5.0, threshold=0.2, notifier="two", sink=base,
                                                         two=TWO.format(sink=base))))
            size = log.stat().st_size
            proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: b"reloaded " in log.read_bytes()[size:], timeout=60), log.read_text()[-2000:]
            assert "1 rule(s), 2 notifier(s), drift settings of churn" in log.read_text()[size:]
            assert wait_for(lambda: any(f[0] == "READY=1" and f[1].startswith("STATUS=reloaded: ")
                                        for _, f in ns.snapshot()), timeout=5)
            reloading = [t for t, f in ns.snapshot() if f[0] == "RELOADING=1"]
            assert len(reloading) == 1

            produce(broker.bootstrap, topic, msgs[6 * PER_WINDOW :])
            assert wait_for(lambda: finished(db, len(msgs)) and len(_rows(db)) == 8, timeout=30)
            assert wait_for(lambda: len(sink.accepted()) >= 1, timeout=20)
            assert {r.path for r in sink.accepted()} == {"/hooks/two"}

            # the window open during the reload kept every row; nothing was dropped
            assert _rows(db) == [PER_WINDOW] * 8
            thresholds = _age_thresholds(db)
            assert [t for _, t in thresholds] == [0.1] * 5 + [5.0] * 3

            # 2. a file that does not validate: refused, named, the daemon goes on
            good = cfg.read_text()
            cfg.write_text(good.replace('size = "1m"', 'size = "fast"'))
            size = log.stat().st_size
            proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: b"reload refused" in log.read_bytes()[size:], timeout=60)
            text = log.read_text()[size:]
            assert (
                f'reload refused, the running config stays: invalid config {cfg}: '
                'models[0].window.size: expected a duration like "15m", got "fast"'
            ) in text

            # 3. a change that needs a restart: refused, named
            cfg.write_text(good.replace(f'group_id = "g-{topic}"', 'group_id = "other"'))
            size = log.stat().st_size
            proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: b"reload refused" in log.read_bytes()[size:], timeout=60)
            assert "kafka.group_id changed: restart to apply it" in log.read_text()[size:]
            # READY=1 follows the log line (this refusal's, not step 2's: it names the group)
            assert wait_for(lambda: any(f[0] == "READY=1" and "reload refused" in f[1] and "group_id" in f[1]
                                        for _, f in ns.snapshot()), timeout=60), ns.snapshot()
            assert http_get(cfg, "/readyz")[0] == 200
            assert proc.poll() is None
        finally:
            rc = terminate(proc)
        assert rc == 0, log.read_text()[-3000:]
        if pg is not None:  # every row went to PostgreSQL
            assert not (cfg.parent / "state" / "driftwarden.db").exists()
