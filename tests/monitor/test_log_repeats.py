"""kafka-python's repeated lines are collapsed: the first of each kind shows, repeats are
counted and summarised once a period, a different error shows at once, memory is bounded."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from monitor.log_repeats import RepeatFilter
from monitor.logs import JsonFormatter, setup_logging


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def captured(clock: Clock) -> Iterator[tuple[io.StringIO, RepeatFilter]]:
    """A handler with the filter on the real ``kafka.net.manager`` and ``kafka.net.connection`` loggers."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    rf = RepeatFilter(("kafka",), period=60.0, max_kinds=8, clock=clock)
    handler.addFilter(rf)
    loggers = [logging.getLogger(n) for n in ("kafka.net.manager", "kafka.net.connection", "driftwarden.daemon")]
    saved = [(lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.handlers[:] = [handler]
        lg.propagate = False
        lg.setLevel(logging.DEBUG)
    try:
        yield out, rf
    finally:
        for lg, (h, p, lvl) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.propagate = h, p
            lg.setLevel(lvl)


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_repeats_collapse_and_a_summary_comes_after_the_period(
    captured: tuple[io.StringIO, RepeatFilter], clock: Clock
) -> None:
    out, _ = captured
    mgr = logging.getLogger("kafka.net.manager")
    for i in range(20):
        mgr.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
        # numbers that change between attempts do not make a new kind
        mgr.warning("Bootstrap bootstrap-0 not ready; waiting %.2f secs", 0.1 * (i + 1))
        clock.now += 2.0  # 40 s in all: within the period
    assert _lines(out) == [
        "ERROR kafka.net.manager: Connection failed: KafkaConnectionError: 111 ECONNREFUSED",
        "WARNING kafka.net.manager: Bootstrap bootstrap-0 not ready; waiting 0.10 secs",
    ]
    clock.now += 25.0  # 65 s after the first
    mgr.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
    assert _lines(out)[2:] == [
        "ERROR kafka.net.manager: Connection failed: KafkaConnectionError: 111 ECONNREFUSED"
        " (repeated 19 times in the last 65s)"
    ]
    # the count starts again; a line with nothing held back carries no summary
    clock.now += 61.0
    mgr.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
    assert _lines(out)[3] == "ERROR kafka.net.manager: Connection failed: KafkaConnectionError: 111 ECONNREFUSED"


def test_a_different_error_shows_at_once(captured: tuple[io.StringIO, RepeatFilter], clock: Clock) -> None:
    out, _ = captured
    mgr = logging.getLogger("kafka.net.manager")
    conn = logging.getLogger("kafka.net.connection")
    for _ in range(5):
        mgr.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
    # same template, another error: an authentication failure, then a TLS one
    mgr.error("Connection failed: %s", "SaslAuthenticationFailedError: Authentication failed: Invalid username or password")
    mgr.error("Connection failed: %s", "KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED]")
    # the same text from another logger, or at another level, is another kind too
    conn.error("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
    mgr.warning("Connection failed: %s", "KafkaConnectionError: 111 ECONNREFUSED")
    assert len(_lines(out)) == 5
    assert "Invalid username or password" in _lines(out)[1]
    assert "CERTIFICATE_VERIFY_FAILED" in _lines(out)[2]


def test_other_loggers_and_debug_lines_of_their_own_pass(captured: tuple[io.StringIO, RepeatFilter]) -> None:
    out, _ = captured
    for _ in range(3):
        logging.getLogger("driftwarden.daemon").error("kafka: cannot connect")
    assert len(_lines(out)) == 3


def test_memory_is_bounded_and_the_newest_kinds_are_kept(
    captured: tuple[io.StringIO, RepeatFilter], clock: Clock
) -> None:
    out, rf = captured
    mgr = logging.getLogger("kafka.net.manager")
    for i in range(50):
        mgr.error("Connection to %s failed", f"broker-{chr(97 + i % 26)}{chr(97 + i // 26)}")
    assert rf.kinds == 8  # max_kinds
    assert len(_lines(out)) == 50  # each distinct, so each shown
    mgr.error("Connection to %s failed", "broker-xb")  # the last one: remembered, held back
    assert len(_lines(out)) == 50
    mgr.error("Connection to %s failed", "broker-aa")  # forgotten long ago: shown again
    assert len(_lines(out)) == 51


def test_thread_safe_one_line_per_kind(captured: tuple[io.StringIO, RepeatFilter]) -> None:
    out, _ = captured
    mgr = logging.getLogger("kafka.net.manager")

    def spam(kind: int) -> None:
        for _ in range(500):
            mgr.error("Connection failed: error kind %s", "ABCD"[kind])

    threads = [threading.Thread(target=spam, args=(i % 4,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(_lines(out)) == [f"ERROR kafka.net.manager: Connection failed: error kind {k}" for k in "ABCD"]


def test_json_lines_carry_the_count(clock: Clock) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RepeatFilter(("kafka",), period=60.0, clock=clock))
    lg = logging.getLogger("kafka.json-test")
    lg.handlers[:], lg.propagate = [handler], False
    lg.setLevel(logging.WARNING)
    for _ in range(4):
        lg.warning("Bootstrap connection to %s failed: %s", "bootstrap-0", "KafkaConnectionError: 111 ECONNREFUSED")
    clock.now += 60.0
    lg.warning("Bootstrap connection to %s failed: %s", "bootstrap-0", "KafkaConnectionError: 111 ECONNREFUSED")
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 2
    assert "repeated" not in rows[0]
    assert rows[1]["repeated"] == 3  # the first of the four showed
    assert rows[1]["msg"].endswith("(repeated 3 times in the last 60s)")


@pytest.mark.parametrize(("level", "collapsed"), [("info", True), ("warning", True), ("debug", False)])
def test_setup_logging_collapses_kafka_lines_except_at_debug(level: str, collapsed: bool) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("kafka").level
    try:
        setup_logging(level, "text")
        (handler,) = root.handlers
        assert any(isinstance(f, RepeatFilter) for f in handler.filters) is collapsed
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("kafka").setLevel(saved[2])
