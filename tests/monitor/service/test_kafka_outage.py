"""The daemon's own word on Kafka being away: once at the first failure, then once a
minute, then once when it is back; the client's failures reach it through BootstrapWatch."""

from __future__ import annotations

import logging

import pytest

from monitor.service.kafka_outage import (
    CONNECTION_LOGGER,
    BootstrapWatch,
    KafkaOutage,
    is_connection_error,
)


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "driftwarden.daemon"]


def test_once_at_first_then_once_a_minute_then_back(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = KafkaOutage(["10.0.0.1:9092", "10.0.0.2:9092"], clock=clock)
    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    outage.recovered()  # no outage: nothing to say
    assert _ours(caplog) == []
    for _ in range(30):  # 90 s of attempts every 3 s
        outage.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
        clock.now += 3.0
    outage.recovered()
    recs = _ours(caplog)
    assert [r.levelname for r in recs] == ["ERROR", "ERROR", "INFO"]
    first, again, back = (r.getMessage() for r in recs)
    assert first == (
        "kafka: cannot connect to 10.0.0.1:9092, 10.0.0.2:9092: Connection failed: KafkaConnectionError: "
        "111 ECONNREFUSED; retrying with backoff (at most 30s apart), not ready until then"
    )
    assert again.startswith("kafka: 10.0.0.1:9092, 10.0.0.2:9092 still unreachable after 1m: Connection failed")
    assert back == "kafka: 10.0.0.1:9092, 10.0.0.2:9092 reachable again after 1m30s"
    assert recs[0].event == "kafka_unreachable" and recs[2].event == "kafka_reachable"  # type: ignore[attr-defined]
    assert not outage.active


def test_every_failed_attempt_is_in_the_status_though_the_log_says_it_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``status`` (the daemon's systemd STATUS=) gets each attempt: it is the current state,
    not a log line to hold back."""
    clock, said = Clock(), []
    outage = KafkaOutage(["b:9092"], clock=clock, status=said.append)
    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    for _ in range(3):
        outage.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
        clock.now += 3.0
    assert said == ["kafka: cannot connect to b:9092: Connection failed: KafkaConnectionError: 111 ECONNREFUSED;"
                    " retrying, not ready"] * 3
    assert len(_ours(caplog)) == 1


def test_durations_are_written_as_the_config_writes_them(caplog: pytest.LogCaptureFixture) -> None:
    """One way of writing durations (``monitor.config.format_duration``): an hour-long
    outage reads "1h1m1s", not "61m01s", and a whole minute "1m", not "1m00s"."""
    clock = Clock()
    outage = KafkaOutage(["b:9092"], clock=clock)
    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    outage.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    clock.now += 3660.6  # rounds to 3661 s
    outage.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    clock.now += 59.0
    outage.recovered()
    _, again, back = (r.getMessage() for r in _ours(caplog))
    assert again == "kafka: b:9092 still unreachable after 1h1m1s: Connection failed: KafkaConnectionError: " \
        "111 ECONNREFUSED; still retrying"
    assert back == "kafka: b:9092 reachable again after 1h2m"
    assert _ours(caplog)[2].down_s == 3720  # type: ignore[attr-defined]


def test_an_error_once_connected_is_no_outage_and_its_recurrences_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The daemon's loop on an error that recurs once connected: connect (recovered),
    fail, reconnect 1, 2, 4, ... 30 s later. Said once, then once a minute with how many
    there were; never "cannot connect" nor "reachable again"; a different error at once."""
    clock = Clock()
    outage = KafkaOutage(["b:9092"], clock=clock)
    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    denied = "[Error 30] GroupAuthorizationFailedError: g-churn"
    backoff = 1.0
    for _ in range(7):  # at 0, 1, 3, 7, 15, 31, 61 s
        outage.recovered()
        outage.error(denied)
        assert not outage.active
        clock.now += backoff
        backoff = min(backoff * 2, 30.0)
    outage.recovered()
    outage.error("[Error 3] UnknownTopicOrPartitionError")
    recs = _ours(caplog)
    assert [r.getMessage() for r in recs] == [
        f"kafka: b:9092: {denied}; reconnecting with backoff, not ready until then",
        f"kafka: b:9092: {denied}; 6 more times in the last 1m1s, still reconnecting",
        "kafka: b:9092: [Error 3] UnknownTopicOrPartitionError; reconnecting with backoff, not ready until then",
    ]
    assert [r.levelname for r in recs] == ["ERROR"] * 3
    assert [(r.event, r.repeated) for r in recs] == [("kafka_error", 0), ("kafka_error", 6), ("kafka_error", 0)]  # type: ignore[attr-defined]


def test_connection_errors_are_told_from_the_brokers_answers() -> None:
    from kafka import errors

    assert is_connection_error(errors.KafkaConnectionError("socket disconnected"))
    assert is_connection_error(errors.NodeNotReadyError("coordinator"))
    assert is_connection_error(errors.KafkaTimeoutError("Failed to update metadata after 60.0 secs."))
    assert not is_connection_error(errors.GroupAuthorizationFailedError("g"))
    assert not is_connection_error(errors.TopicAuthorizationFailedError("p"))
    assert not is_connection_error(errors.UnknownTopicOrPartitionError())
    assert not is_connection_error(errors.IncompatibleBrokerVersion())


def test_the_bootstrap_timeout_does_not_hide_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    outage = KafkaOutage(["b:9092"], clock=clock)
    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    outage.failed("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    clock.now += 61
    outage.failed("KafkaTimeoutError: Unable to bootstrap from ['b:9092']")
    assert "111 ECONNREFUSED" in _ours(caplog)[1].getMessage()


def test_watch_hears_the_clients_connection_errors_only_while_installed(caplog: pytest.LogCaptureFixture) -> None:
    outage = KafkaOutage(["b:9092"], clock=Clock())
    client = logging.getLogger(CONNECTION_LOGGER)
    client.error("Connection failed: %s", "before")
    assert not outage.active
    with BootstrapWatch(outage):
        client.warning("Bootstrap bootstrap-0 not ready; waiting 0.10 secs")  # not a failure of its own
        assert not outage.active
        client.warning("socks5_proxy is deprecated, use proxy_url instead")
        assert not outage.active
        client.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
        assert outage.active
    assert not any(isinstance(h, BootstrapWatch) for h in client.handlers)


def test_watch_hears_a_refused_login(caplog: pytest.LogCaptureFixture) -> None:
    """A refused SASL login is only in the bootstrap's WARNING (no "Connection failed")."""
    caplog.set_level(logging.INFO, logger="driftwarden.daemon")
    outage = KafkaOutage(["b:9092"], clock=Clock())
    with BootstrapWatch(outage):
        logging.getLogger(CONNECTION_LOGGER).warning(
            "Bootstrap connection to %s failed: %s (backoff %.2f secs)", "bootstrap-0",
            "[Error 58] SaslAuthenticationFailedError: authentication failed", 0.04,
        )
    (said,) = _ours(caplog)
    assert said.getMessage().startswith(
        "kafka: cannot connect to b:9092: Bootstrap connection to bootstrap-0 failed: [Error 58] "
        "SaslAuthenticationFailedError: authentication failed; retrying with backoff"
    )


def test_at_log_level_error_the_first_refused_connection_is_still_seen(capsys: pytest.CaptureFixture[str]) -> None:
    """At ``log_level = "error"`` the kafka loggers were set to ERROR too: the client's
    "Connection failed" warnings were never made, so the daemon said nothing for the 30 s
    bootstrap timeout. They are made and seen by the watch, and kept off the output."""
    from monitor.logs import setup_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("kafka").level
    try:
        setup_logging("error", "text")
        outage = KafkaOutage(["127.0.0.1:19999"])
        with BootstrapWatch(outage):
            logging.getLogger(CONNECTION_LOGGER).warning("Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
        logging.getLogger("driftwarden.daemon").warning("a warning of ours: below the level")
        err = capsys.readouterr().err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("kafka").setLevel(saved[2])
    assert outage.active
    assert "ERROR driftwarden.daemon: kafka: cannot connect to 127.0.0.1:19999: Connection failed" in err, err
    assert "WARNING" not in err, err  # the client's warning and ours stay off at error
