"""How the daemon's consumer reads, from ``[kafka]``: ``poll_timeout`` is how long each
poll may wait for records (what bounds how soon an idle loop notices a stop, a tick or a
reload) and ``max_poll_records`` caps the records one poll hands over (a spy on
kafka-python's ``KafkaConsumer.poll``, calling through, records each call of a real run);
``auto_offset_reset`` is where a new group starts in the topic."""

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


def _consume_from_a_new_group(
    broker: EmbeddedBroker, topic: str, before: int, folder: Path, kafka: str
) -> tuple[int, int, int]:
    """A daemon of a new group (and a fresh store) started on ``topic``, which holds
    ``before`` records already, with ``[kafka]`` lines ``kafka``; once it is ready, valid records are
    produced until it has taken some. Returns (valid rows it took, records dead-lettered,
    valid records produced meanwhile)."""
    path = write_config(folder, bootstrap=broker.bootstrap, topic=topic, http_port=free_port(),
                        group=f"g-{folder.name}-{topic}")
    path.write_text(path.read_text().replace('poll_timeout = "200ms"', f'poll_timeout = "200ms"\n{kafka}'))
    cfg = load_config(path)
    daemon = Daemon(cfg, http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    sent = 0

    def took_some() -> bool:
        nonlocal sent
        batch = stream(windows=1, per_window=5, shift_from=1, seed=sent)
        produce(broker.bootstrap, topic, batch)
        sent += len(batch)
        return daemon.pipeline.stats.rows > 0

    try:
        assert wait_for(daemon.ready.is_set, timeout=60)
        assert wait_for(took_some, timeout=30, interval=0.3)
        assert wait_for(lambda: durable_offset(cfg.daemon.state_dir / "driftwarden.db") >= before + sent, timeout=30)
    finally:
        daemon.stop()
        t.join(timeout=30)
    assert not t.is_alive()
    return daemon.pipeline.stats.rows, sum(daemon.pipeline.stats.dead_letters.values()), sent


def test_auto_offset_reset_decides_whether_a_new_group_reads_the_topics_history(
    broker: EmbeddedBroker, topic: str, tmp_path: Path
) -> None:
    """The 30 records of the topic's history that are not JSON (each one read is a dead
    letter) are all read by a new group by default ("earliest"), and none with
    ``auto_offset_reset = "latest"``, which starts at the end of the topic."""
    produce(broker.bootstrap, topic, [f"history-{i}".encode() for i in range(30)])
    # then 5 valid records, in one batch: the embedded broker (Tansu 0.6) answers "latest"
    # with one past the first offset of the newest batch, not the end of the topic, so a
    # "latest" consumer of it starts inside this batch (with Kafka: after it)
    produce(broker.bootstrap, topic, stream(windows=1, per_window=5, shift_from=1, seed=99))
    rows, dead, sent = _consume_from_a_new_group(broker, topic, 35, tmp_path / "earliest", "")
    assert (rows, dead) == (5 + sent, 30)
    rows, dead, _ = _consume_from_a_new_group(broker, topic, 35 + sent, tmp_path / "latest",
                                              'auto_offset_reset = "latest"')
    assert dead == 0 and rows > 0
