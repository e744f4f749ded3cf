"""Building kafka-python 3.x clients from ``[kafka]``: the one place security options map."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from monitor.config import Config


def connection_options(config: Config) -> dict[str, Any]:
    """The ``kafka.consumer_options`` every client of the daemon takes: those kafka-python's
    producer knows as well as its consumer (connection settings such as ``api_version``,
    ``request_timeout_ms``, ``metadata_max_age_ms``, ``reconnect_backoff_ms``), so
    ``driftwarden check`` and the dead-letter producer connect as the consumer does. The
    consumer-only ones (fetch sizes, ``group_instance_id``, ...) reach the consumer alone."""
    if not config.kafka.consumer_options:
        return {}
    from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415

    both = KafkaConsumer.DEFAULT_CONFIG.keys() & KafkaProducer.DEFAULT_CONFIG.keys()
    opts = {key: v for key, v in config.kafka.consumer_options.items() if key in both}
    if isinstance(opts.get("api_version"), list):  # TOML has no tuple: [2, 8] means (2, 8)
        opts["api_version"] = tuple(opts["api_version"])
    return opts


def client_options(config: Config) -> dict[str, Any]:
    """Connection and security options shared by consumers and producers (with
    :func:`connection_options`)."""
    k = config.kafka
    opts: dict[str, Any] = {
        "bootstrap_servers": list(k.bootstrap_servers),
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
    }
    if k.sasl_mechanism == "OAUTHBEARER":
        from monitor.ingest.oauth import TokenProvider  # noqa: PLC0415

        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_oauth_token_provider"] = TokenProvider(
            file=k.sasl_oauth_token_file, command=k.sasl_oauth_token_command,
            ttl=k.sasl_oauth_token_ttl.total_seconds(),
        )
    elif k.sasl_mechanism:
        opts["sasl_mechanism"] = k.sasl_mechanism
        opts["sasl_plain_username"] = k.sasl_username
        opts["sasl_plain_password"] = config.secret("kafka.sasl_password")
    if k.uses_tls:
        opts["ssl_check_hostname"] = k.ssl_check_hostname
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            v = getattr(k, key)
            if v is not None:
                opts[key] = str(v)
        pw = config.secret("kafka.ssl_password")
        if pw:
            opts["ssl_password"] = pw
    opts.update(connection_options(config))
    return opts


def make_consumer(config: Config) -> Any:
    """A consumer group member with manual commits (offsets follow durability)."""
    from kafka import KafkaConsumer  # noqa: PLC0415

    k = config.kafka
    opts = client_options(config)
    opts.update(
        group_id=k.group_id,
        enable_auto_commit=False,
        auto_offset_reset=k.auto_offset_reset,
        session_timeout_ms=int(k.session_timeout.total_seconds() * 1000),
        heartbeat_interval_ms=int(k.heartbeat_interval.total_seconds() * 1000),
        max_poll_records=k.max_poll_records,
        max_partition_fetch_bytes=max(1_048_576, k.max_message_bytes + 1024),
        fetch_max_bytes=max(52_428_800, k.max_message_bytes + 1024),
    )
    opts.update(k.consumer_options)
    if isinstance(opts.get("api_version"), list):  # TOML has no tuple: [2, 8] means (2, 8)
        opts["api_version"] = tuple(opts["api_version"])
    return closed_on_failure(KafkaConsumer, opts)


#: milliseconds a question for the log start offsets may take (the consumer thread waits)
LOG_START_TIMEOUT_MS = 5_000


def log_starts(consumer: Any, topic: str, partitions: list[int]) -> dict[int, int]:
    """The broker's log start offset of each of ``partitions`` of ``topic`` (the first
    offset not deleted yet), for :class:`monitor.ingest.skipped.SkippedOffsets`. One
    ListOffsets request; raises what kafka-python raises (a timeout after
    :data:`LOG_START_TIMEOUT_MS`)."""
    from kafka import TopicPartition  # noqa: PLC0415

    got = consumer.beginning_offsets([TopicPartition(topic, p) for p in partitions], timeout_ms=LOG_START_TIMEOUT_MS)
    return {tp.partition: int(o) for tp, o in got.items() if o is not None}


def make_producer(config: Config, **extra: Any) -> Any:
    from kafka import KafkaProducer  # noqa: PLC0415

    opts = client_options(config)
    opts.update(extra)
    return closed_on_failure(KafkaProducer, opts)


def closed_on_failure(kind: Callable[..., Any], opts: dict[str, Any]) -> Any:
    """``kind(**opts)`` (a kafka-python consumer, producer or admin client), closing the
    network client it made when the constructor raises.

    kafka-python 3 makes its network client (the consumer's with a running IO thread and
    its sockets) before it bootstraps, inside the constructor; when the bootstrap fails
    (SASL refused, TLS refused, brokers away for ``bootstrap_timeout_ms``) the constructor
    raises and nobody can close what it made. The daemon reconnects with backoff for as
    long as that lasts, and each attempt left one thread and its sockets behind: after a
    day of a wrong password, thousands of threads and the process out of file descriptors.
    """
    made: list[Any] = []
    factory = opts.get("kafka_client") or kind.DEFAULT_CONFIG["kafka_client"]  # type: ignore[attr-defined]

    def client(**kw: Any) -> Any:
        c = factory(**kw)
        made.append(c)
        return c

    try:
        return kind(**{**opts, "kafka_client": client})
    except BaseException:
        for c in made:
            with contextlib.suppress(Exception):
                c.close()
        raise
