"""A storage outage with a label join: every labels partition is read again once the store
is back.

During an outage the consumer loop pauses every assigned partition (``_stay_in_group``);
once a flush succeeds it claims the predictions partitions again, which resumes them and
the labels partitions of the same numbers. A labels partition with no predictions
partition of that number (the labels topic has more partitions; with a store of its own
one instance joins them all) must be resumed too: otherwise its labels are never read
again, silently, until the daemon restarts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.daemon import Daemon
from tests.monitor.daemon_helpers import produce, stream, wait_for
from tests.monitor.fault_helpers import durable_offset, fault_config, peek_state
from tests.monitor.labels.helpers import label_config
from tests.monitor.labels.test_join import scenario
from tests.monitor.service.test_faults_outage import Proxy, proxied_broker  # noqa: F401 - a fixture
from tests.monitor.service.test_faults_rebalance_outage import Outage
from tests.store_targets import PostgresTarget, SqliteTarget, StoreTarget

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(240)]


def _labels(start: int, n: int) -> list[bytes]:
    return [orjson.dumps({"event_id": f"nobody-{start + i}", "model": "churn", "label": 0, "ts": 1_795_000_000_000})
            for i in range(n)]


@pytest.mark.sqlite_only("with a shared store a labels partition of no held predictions partition is not read here")
def test_labels_partitions_without_a_predictions_partition_are_resumed_after_an_outage(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    tag = time.time_ns() % 10**8
    preds_topic, labels_topic = f"olp-{tag}", f"oll-{tag}"
    broker.create_topic(preds_topic, partitions=1)
    broker.create_topic(labels_topic, partitions=2)
    preds, _labs = scenario(seed=5)
    cfg = label_config(tmp_path, bootstrap=broker.bootstrap, topic=preds_topic, labels_topic=labels_topic,
                       http_port=free_port(), group=f"g-{tag}")
    produce(broker.bootstrap, preds_topic, [orjson.dumps(p) for p in preds[:300]], partition=0)
    produce(broker.bootstrap, labels_topic, _labels(0, 10), partition=0)
    produce(broker.bootstrap, labels_topic, _labels(100, 10), partition=1)
    daemon = Daemon(load_config(cfg), http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        joined = daemon.pipeline.labels
        assert joined is not None
        assert wait_for(lambda: joined.positions.get(0) == 10 and joined.positions.get(1) == 10, timeout=60), \
            dict(joined.positions)
        with Outage(SqliteTarget(tmp_path / "state" / "driftwarden.db"), daemon):
            assert wait_for(lambda: daemon.paused_for_storage, timeout=30), "the loop never found the store away"
        assert wait_for(lambda: daemon.storage_error is None and not daemon.paused_for_storage, timeout=30)
        # after the outage: new labels on both labels partitions are read
        produce(broker.bootstrap, labels_topic, _labels(10, 5), partition=0)
        produce(broker.bootstrap, labels_topic, _labels(110, 5), partition=1)
        assert wait_for(lambda: joined.positions.get(0) == 15, timeout=30), dict(joined.positions)
        assert wait_for(lambda: joined.positions.get(1) == 15, timeout=15), (
            dict(joined.positions), sorted(daemon.paused_partitions()))
        assert t.is_alive()
    finally:
        daemon.stop()
        t.join(timeout=60)
    assert not t.is_alive()


def test_the_store_back_while_kafka_is_away_clears_the_storage_error(
    proxied_broker: tuple[str, Proxy], tmp_path: Path, store_target: StoreTarget  # noqa: F811 - the fixture
) -> None:
    """The store comes back while the broker is still away: the storage error clears (the
    alert tick with its no-data rules, the outbox and prune run again; /readyz names Kafka
    alone), rather than staying set until the broker is back."""
    from kafka.admin import KafkaAdminClient, NewTopic

    bootstrap, proxy = proxied_broker
    topic = "predictions"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    admin.close()
    msgs = stream(windows=4, per_window=300, shift_from=4, seed=8)
    produce(bootstrap, topic, msgs[:450])
    cfg_path = fault_config(tmp_path / "f", bootstrap=bootstrap, topic=topic, max_poll_records=200, idle_timeout="1h",
                            extra=store_target.storage_toml())
    if isinstance(store_target, SqliteTarget):
        store_target = SqliteTarget(tmp_path / "f" / "state" / "driftwarden.db")
    where: Path | StoreTarget = store_target if isinstance(store_target, PostgresTarget) else store_target.path
    daemon = Daemon(load_config(cfg_path), http=False)
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: durable_offset(where) >= 300, timeout=30)
        with Outage(store_target, daemon):
            # on PostgreSQL each attempt waits out the pool timeout (10 s)
            assert wait_for(lambda: daemon.paused_for_storage, timeout=60), "the loop never found the store away"
            proxy.drop()
            time.sleep(3)
        assert t.is_alive()
        # the broker stays away (the proxy refuses): the store alone is back
        assert wait_for(lambda: daemon.storage_error is None, timeout=20), daemon.storage_error
        proxy.restore()
        reader = getattr(store_target, "_reader", None)  # the test's own connection: cut by the outage
        if reader is not None:
            reader.close()
            store_target._reader = None
        produce(bootstrap, topic, msgs[450:])
        # the broker back: the rest is consumed and stored
        assert wait_for(lambda: durable_offset(where) >= 900, timeout=60)
        assert daemon.storage_error is None
    finally:
        proxy.restore()
        daemon.stop()
        t.join(timeout=60)
    assert not t.is_alive()


def test_a_final_flush_failing_for_another_reason_is_no_storage_outage(
    broker: EmbeddedBroker, tmp_path: Path, store_target: StoreTarget
) -> None:
    """The final flush raises something other than a storage error (here: the last tick)
    while the store answers: the stop still drains the outbox and gives the partitions up
    (their next owner claims them at once), and does not report the store away."""
    topic = f"stop-other-{time.time_ns() % 10**8}"
    broker.create_topic(topic)
    msgs = stream(windows=3, per_window=300, shift_from=4, seed=9)
    cfg_path = fault_config(tmp_path / "f", bootstrap=broker.bootstrap, topic=topic, max_poll_records=200,
                            idle_timeout="1h", extra=store_target.storage_toml())
    if isinstance(store_target, SqliteTarget):
        store_target = SqliteTarget(tmp_path / "f" / "state" / "driftwarden.db")
    where: Path | StoreTarget = store_target if isinstance(store_target, PostgresTarget) else store_target.path
    events: list[str] = []
    daemon = Daemon(load_config(cfg_path), http=False, on_event=lambda kind, _d: events.append(kind))
    produce(broker.bootstrap, topic, msgs[:450])
    t = threading.Thread(target=daemon.run, daemon=True)
    t.start()
    try:
        assert wait_for(lambda: durable_offset(where) >= 300, timeout=30)
        assert peek_state(where, owned_only=True) is not None  # claimed

        def broken_tick() -> None:
            raise RuntimeError("a bug in the last tick")

        daemon.pipeline.tick = broken_tick  # type: ignore[method-assign]
    finally:
        daemon.stop()
        t.join(timeout=60)
    assert not t.is_alive()
    assert "unflushed" not in events
    assert daemon.storage_error is None
    # given up at the stop: no row is left owned by the stopped instance
    assert peek_state(where, owned_only=True) is None
