"""``check``'s Kafka line through the real broker: the labels topic is named only when a
model joins labels (a config without labels was told its labels topic was missing)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from monitor.cli.check import check_kafka
from monitor.config import load_config
from monitor.demo.broker import EmbeddedBroker
from tests.monitor.daemon_helpers import write_config
from tests.monitor.labels.helpers import label_config

pytestmark = [pytest.mark.broker]


def test_the_labels_topic_is_checked_only_when_a_model_joins_labels(broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = f"preds-{uuid.uuid4().hex[:8]}"
    broker.create_topic(topic)
    plain = load_config(write_config(tmp_path / "plain", bootstrap=broker.bootstrap, topic=topic, http_port=1))
    assert plain.kafka.labels_topic == "labels"  # the default, read by no model
    assert check_kafka(plain) == f"kafka {broker.bootstrap} (PLAINTEXT) answers; topic {topic!r} has 1 partition"
    missing = f"labels-{uuid.uuid4().hex[:8]}"
    joined = load_config(label_config(tmp_path / "joined", bootstrap=broker.bootstrap, topic=topic,
                                      labels_topic=missing, http_port=1))
    assert check_kafka(joined).endswith(f"; labels topic {missing!r} not found yet")


def test_an_unreachable_broker_is_named(tmp_path: Path) -> None:
    # `check` said only "✗ kafka: no answer within 10s": not which address it tried
    from monitor.cli.check import run_checks
    from monitor.demo.broker import free_port

    bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    cfg = load_config(write_config(tmp_path, bootstrap=bootstrap, topic="p", http_port=free_port()))
    lines: list[str] = []
    assert run_checks(cfg, lines.append) == 1
    (kafka,) = [x for x in lines if "kafka" in x]
    assert kafka.startswith("✗ kafka: ")
    assert kafka.endswith(f"; kafka.bootstrap_servers = {bootstrap} (PLAINTEXT)"), kafka


def test_a_missing_predictions_topic_says_what_to_do(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A new user's first `check` (no topic yet, or the default name left in place) said
    only "LookupError: topic 'predictions' not found"."""
    from monitor.cli.check import run_checks

    topic = f"absent-{uuid.uuid4().hex[:8]}"
    cfg = load_config(write_config(tmp_path, bootstrap=broker.bootstrap, topic=topic, http_port=1))
    lines: list[str] = []
    assert run_checks(cfg, lines.append) == 1
    (kafka,) = [x for x in lines if "kafka" in x]
    assert kafka == (f"✗ kafka: topic {topic!r} not found: create it, or set kafka.predictions_topic to the"
                     f" topic the models' events go to; kafka.bootstrap_servers = {broker.bootstrap} (PLAINTEXT)")
