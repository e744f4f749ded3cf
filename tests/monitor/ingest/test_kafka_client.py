"""The Kafka clients the daemon builds from ``[kafka]``: what each one is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli.check import check_kafka
from monitor.config import Config, parse_config
from monitor.ingest.kafka_client import client_options, make_consumer, make_producer


def _cfg(tmp_path: Path, bootstrap: str, topic: str, options: dict[str, object]) -> Config:
    (tmp_path / "ref.csv").write_text("a\n1\n")
    doc = {
        "kafka": {"bootstrap_servers": [bootstrap], "predictions_topic": topic, "consumer_options": options},
        "models": [{"name": "m", "reference": "ref.csv", "features": {"numerical": ["a"]}}],
    }
    return parse_config(doc, base_dir=tmp_path)


@pytest.mark.broker
def test_connection_options_reach_every_client_and_consumer_only_ones_the_consumer(
    tmp_path: Path, broker: object, topic: str
) -> None:
    """``check`` and the dead-letter producer once connected with kafka-python's defaults
    whatever ``consumer_options`` said (an ``api_version`` pin, a metadata age, ...)."""
    options = {"metadata_max_age_ms": 12_345, "reconnect_backoff_max_ms": 4_321, "fetch_max_wait_ms": 200,
               "request_timeout_ms": 45_000}
    cfg = _cfg(tmp_path, broker.bootstrap, topic, options)  # type: ignore[attr-defined]
    shared = client_options(cfg)
    assert (shared["metadata_max_age_ms"], shared["reconnect_backoff_max_ms"]) == (12_345, 4_321)
    assert "fetch_max_wait_ms" not in shared  # a consumer's option: the producer refuses it
    producer = make_producer(cfg)
    try:
        assert (producer.config["metadata_max_age_ms"], producer.config["request_timeout_ms"]) == (12_345, 45_000)
    finally:
        producer.close()
    consumer = make_consumer(cfg)
    try:
        assert (consumer.config["metadata_max_age_ms"], consumer.config["fetch_max_wait_ms"]) == (12_345, 200)
    finally:
        consumer.close()
    # the check keeps its own time bound over consumer_options.request_timeout_ms
    assert f"topic {topic!r} has 1 partition" in check_kafka(cfg)
