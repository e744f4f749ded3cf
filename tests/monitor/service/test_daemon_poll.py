"""How the daemon's consumer loop polls, from ``[kafka]``: ``poll_timeout`` is how long each
poll may wait for records (what bounds how soon an idle loop notices a stop, a tick or a
reload) and ``max_poll_records`` caps the records one poll hands over. A spy on
kafka-python's ``KafkaConsumer.poll`` (calling through) records each call of a real run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, stream, wait_for, write_config
from tests.monitor.fault_helpers import durable_offset

pytestmark = [pytest.mark.broker]


def test_polls_wait_poll_timeout_and_take_at_most_max_poll_records(
    broker: EmbeddedBroker, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kafka import KafkaConsumer

    msgs = stream(windows=1, per_window=30, shift_from=1)
    produce(broker.bootstrap, topic, msgs)
    path = write_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=free_port(), max_poll_records=7)
    text = path.read_text()
    assert 'poll_timeout = "200ms"' in text
    path.write_text(text.replace('poll_timeout = "200ms"', 'poll_timeout = "750ms"'))

    calls: list[tuple[Any, Any, int]] = []
    real = KafkaConsumer.poll

    def spy(self: Any, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True) -> Any:
        got = real(self, timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets)
        calls.append((timeout_ms, max_records, sum(len(recs) for recs in got.values())))
        return got

    monkeypatch.setattr(KafkaConsumer, "poll", spy)
    cfg = load_config(path)
    daemon = Daemon(cfg, http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: durable_offset(cfg.daemon.state_dir / "driftwarden.db") >= len(msgs), timeout=60)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    assert {(timeout, most) for timeout, most, _ in calls} == {(750, 7)}, calls
    sizes = [n for _, _, n in calls if n]
    assert sum(sizes) == len(msgs) and max(sizes) == 7, sizes  # 30 records: at least 5 polls
