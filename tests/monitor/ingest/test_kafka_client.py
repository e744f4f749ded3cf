"""The Kafka clients the daemon builds from ``[kafka]``: what each one is given."""

from __future__ import annotations

import functools
import socket
import ssl
import struct
import threading
from pathlib import Path

import pytest

from monitor.cli.check import check_kafka
from monitor.config import Config, load_config, parse_config
from monitor.ingest.kafka_client import client_options, log_starts, make_consumer, make_producer
from monitor.ingest.skipped import SkippedOffsets
from tests.monitor.daemon_helpers import wait_for


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


@pytest.mark.broker
def test_log_starts_asks_the_broker_and_a_hole_of_a_whole_log_stays_quiet(
    tmp_path: Path, broker: object, topic: str
) -> None:
    """The daemon confirms a gap in the offsets it read with the broker's log start: a log
    that still begins at 0 lost nothing to retention, so the gap is not counted."""
    cfg = _cfg(tmp_path, broker.bootstrap, topic, {})  # type: ignore[attr-defined]
    producer = make_producer(cfg)
    try:
        for i in range(5):
            producer.send(topic, b"x%d" % i, partition=0)
        producer.flush()
    finally:
        producer.close()
    consumer = make_consumer(cfg)
    try:
        assert log_starts(consumer, topic, [0]) == {0: 0}
        skipped = SkippedOffsets("earliest")
        skipped.suspect(topic, 0, 1, 4)
        skipped.confirm(functools.partial(log_starts, consumer))
        assert skipped.pending == [] and skipped.totals == {}
    finally:
        consumer.close()


# -- what reaches the wire: a loopback front that records each connection's TLS handshake
# and the client id in the header of its first request (then hangs up) ---------------------


class _Front:
    """A listener that, for each connection, completes a TLS handshake (``context``; plain
    TCP without one), and records ``(peer certificate DER or None, client_id)`` of the first
    Kafka request, or ``("failed", error)`` when the handshake fails; then closes it. The
    client never bootstraps."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.seen: list[tuple[object, str]] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.bootstrap = f"127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                peer = None
                if self.context is not None:
                    conn = self.context.wrap_socket(conn, server_side=True)
                    peer = conn.getpeercert(binary_form=True)
                size = struct.unpack(">i", self._read(conn, 4))[0]
                frame = self._read(conn, size)
                (length,) = struct.unpack(">h", frame[8:10])  # api key, version, correlation id, then client_id
                self.seen.append((peer, frame[10 : 10 + length].decode()))
            except (OSError, struct.error) as exc:
                self.seen.append(("failed", str(exc)))
            finally:
                conn.close()

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise OSError("closed early")
            buf += chunk
        return buf

    def close(self) -> None:
        self._sock.close()


def _toml_cfg(tmp_path: Path, kafka: str) -> Config:
    (tmp_path / "ref.csv").write_text("a\n1\n")
    (tmp_path / "config.toml").write_text(
        f"[kafka]\n{kafka}\nconsumer_options = {{ api_version = [2, 8] }}\n"  # no bootstrap in the constructor
        '[[models]]\nname = "m"\nreference = "ref.csv"\nfeatures.numerical = ["a"]\n'
    )
    return load_config(tmp_path / "config.toml")


def _connect(tmp_path: Path, kafka: str, context: ssl.SSLContext | None = None) -> list[tuple[object, str]]:
    """What a front saw of the daemon's consumer, built from ``[kafka]`` lines ``kafka``
    (pointed at the front), once it tried to bootstrap: the successful handshakes'
    ``(peer certificate DER or None, client_id)``, ``("failed", why)`` for the others."""
    front = _Front(context)
    consumer = make_consumer(_toml_cfg(tmp_path, f'bootstrap_servers = ["{front.bootstrap}"]\n{kafka}'))

    def bootstrap() -> None:
        try:
            consumer.bootstrap()
        except Exception:  # noqa: BLE001 - it never can: the front hangs up (the close ends it)
            pass

    trying = threading.Thread(target=bootstrap, daemon=True)
    trying.start()
    try:
        assert wait_for(lambda: front.seen, timeout=10), "no connection reached the front"
    finally:
        consumer.close()
        front.close()
        trying.join(timeout=10)
    return list(front.seen)


def _handshakes(seen: list[tuple[object, str]]) -> set[object]:
    """The client certificates (None: none) of the handshakes that succeeded."""
    return {peer for peer, _ in seen if peer != "failed"}


def test_client_id_is_the_one_each_request_carries(tmp_path: Path) -> None:
    """``kafka.client_id`` is what the broker sees in every request header (its quotas and
    request logs)."""
    assert {cid for _, cid in _connect(tmp_path, 'client_id = "dw-fraud-eu"')} == {"dw-fraud-eu"}
    assert {cid for _, cid in _connect(tmp_path, "")} == {"driftwarden"}
    producer = make_producer(_toml_cfg(tmp_path, 'client_id = "dw-fraud-eu"'), api_version=(2, 8))
    try:  # the dead-letter producer: built from the same options
        assert producer.config["client_id"] == "dw-fraud-eu"
    finally:
        producer.close(timeout=1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA; the broker's certificate for 127.0.0.1 and one for "localhost" only; the client's
    certificate with its key encrypted under the password "k3y-pass"."""
    import trustme  # noqa: PLC0415 - a test-only package
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    ip, name = ca.issue_cert("127.0.0.1"), ca.issue_cert("localhost")
    for cert, stem in ((ip, "broker-ip"), (name, "broker-name")):
        cert.cert_chain_pems[0].write_to_path(str(folder / f"{stem}.pem"))
        cert.private_key_pem.write_to_path(str(folder / f"{stem}.key"))
    client = ca.issue_cert("driftwarden-client")
    client.cert_chain_pems[0].write_to_path(str(folder / "client.pem"))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    (folder / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"k3y-pass"),
    ))
    (folder / "client.key.pass").write_text("k3y-pass\n")
    return folder


def _tls(pki: Path, broker_cert: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki / f"{broker_cert}.pem", pki / f"{broker_cert}.key")
    ctx.load_verify_locations(pki / "ca.pem")
    ctx.verify_mode = ssl.CERT_OPTIONAL  # the front records whether a client certificate came
    return ctx


def test_tls_keys_shape_the_handshake(tmp_path: Path, pki: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``kafka.ssl_*`` keys from a TOML config reach the daemon's consumer: ``ssl_cafile``
    is what makes the broker's certificate trusted, ``ssl_certfile``/``ssl_keyfile`` the client
    certificate the broker receives, ``ssl_password_file``/``_env`` what unlocks its key, and
    ``ssl_check_hostname`` whether a certificate for another name is refused."""
    client_der = ssl.PEM_cert_to_DER_cert((pki / "client.pem").read_text())
    tls = f'security_protocol = "SSL"\nssl_cafile = "{pki / "ca.pem"}"\n'
    mtls = tls + f'ssl_certfile = "{pki / "client.pem"}"\nssl_keyfile = "{pki / "client.key"}"\n'
    ip, name = _tls(pki, "broker-ip"), _tls(pki, "broker-name")
    # the CA file makes the handshake succeed; no client certificate without ssl_certfile
    assert _handshakes(_connect(tmp_path, tls, ip)) == {None}
    # without ssl_cafile the broker's certificate (from a private CA) is refused by the client
    assert _handshakes(_connect(tmp_path, 'security_protocol = "SSL"', ip)) == set()
    # the client certificate, its encrypted key unlocked by the password file, or the variable
    assert _handshakes(_connect(tmp_path, mtls + f'ssl_password_file = "{pki / "client.key.pass"}"', ip)) == {
        client_der
    }
    monkeypatch.setenv("DW_TEST_KEY_PASS", "k3y-pass")
    assert _handshakes(_connect(tmp_path, mtls + 'ssl_password_env = "DW_TEST_KEY_PASS"', ip)) == {client_der}
    # a certificate for "localhost" reached as 127.0.0.1: refused unless ssl_check_hostname = false
    assert _handshakes(_connect(tmp_path, tls, name)) == set()
    assert _handshakes(_connect(tmp_path, tls + "ssl_check_hostname = false", name)) == {None}


def test_group_keys_reach_the_consumer(tmp_path: Path) -> None:
    """``group_id``, ``session_timeout``, ``heartbeat_interval`` and ``max_message_bytes``
    from a TOML config, in the daemon's consumer as kafka-python holds them (the group
    membership it negotiates, and fetches large enough for the largest accepted message)."""
    cfg = _toml_cfg(tmp_path, 'bootstrap_servers = ["127.0.0.1:9"]\ngroup_id = "dw-fraud"\nsession_timeout = "7s"\n'
                              'heartbeat_interval = "2s"\nmax_message_bytes = 4000000')
    consumer = make_consumer(cfg)
    try:
        got = {k: consumer.config[k] for k in ("group_id", "session_timeout_ms", "heartbeat_interval_ms")}
        assert got == {"group_id": "dw-fraud", "session_timeout_ms": 7000, "heartbeat_interval_ms": 2000}
        assert consumer.config["max_partition_fetch_bytes"] >= 4_000_000  # kafka-python: 1 MiB
    finally:
        consumer.close()
