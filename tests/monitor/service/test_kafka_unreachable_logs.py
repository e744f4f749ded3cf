"""With the broker away, a real daemon process says so itself, at once, naming the broker
and what it does next, and the client library's per-attempt lines do not bury it; when
the broker comes, one line says Kafka is reachable again. An error once connected that is
not about reaching the brokers is said as it is, not as an outage that keeps ending.

Bounds, not timings: the client's own retries ramp up to 30 s apart, so over the first
15 s the old daemon wrote about 20 of the library's lines and nothing of its own. "At once"
is told by the log's order, not by a clock: the daemon's line comes before any line of the
client's (it is said from the client's first failure, before that reaches the log), while
the old daemon's came after the client gave up its bootstrap 30 s later. The waits are
generous: on a loaded machine the daemon's start-up alone (its imports) took 26 s."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.demo.broker import EmbeddedBroker, free_port
from monitor.service.kafka_outage import CONNECTION_LOGGER
from tests.monitor.daemon_helpers import wait_for
from tests.monitor.fault_helpers import fault_config, http_get, start_daemon, terminate

#: how long the bounded run lasts, from the daemon's first line on
RUN_SECONDS = 15.0
#: seconds to wait for the daemon's first line: its start-up included, loaded machines too
FIRST_LINE_WAIT = 90


def _lines(log: Path) -> list[str]:
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def _problems(lines: list[str], fmt: str) -> list[str]:
    """The ERROR and WARNING lines of a text or JSON log."""
    if fmt == "json":
        return [ln for ln in lines if ln.startswith("{") and json.loads(ln)["level"] in ("error", "warning")]
    return [ln for ln in lines if " ERROR " in ln or " WARNING " in ln]


def _logger_and_message(line: str) -> tuple[str, str]:
    """The logger's name and the message of a text or JSON log line ("", "" for neither)."""
    if line.startswith("{"):
        row = json.loads(line)
        return row["logger"], row["msg"]
    parts = line.split(" ", 4)  # date, time, level, "logger:", message
    return (parts[3].rstrip(":"), parts[4]) if len(parts) == 5 else ("", "")


def _said_first(lines: list[str], ours: str) -> None:
    """The daemon's line (containing ``ours``) comes before the client's first failure line
    on its connection logger (the one the daemon listens to): it was said at the client's
    first failed attempt, not when the client gave up its bootstrap 30 s later."""
    mine = next(i for i, ln in enumerate(lines) if ours in ln)
    theirs = next((i for i, ln in enumerate(lines)
                   if (lm := _logger_and_message(ln))[0] == CONNECTION_LOGGER and "failed" in lm[1].lower()), None)
    assert theirs is not None and mine < theirs, "\n".join(lines)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_broker_away_few_lines_and_the_daemon_says_so_first(tmp_path: Path, fmt: str) -> None:
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    cfg = fault_config(tmp_path / "d", bootstrap=closed, topic="p", daemon_extra=f'log_format = "{fmt}"')
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log=log)
    try:
        ours = f"kafka: cannot connect to {closed}: "
        # the old daemon said it only when the client gave up, after 30 s (see _said_first)
        assert wait_for(lambda: any(ours in ln for ln in _lines(log)), timeout=FIRST_LINE_WAIT), _lines(log)
        said_at = time.monotonic()
        assert http_get(cfg, "/readyz")[0] in (0, 503)  # not ready (0: HTTP not up yet)
        time.sleep(max(0.0, RUN_SECONDS - (time.monotonic() - said_at)))
    finally:
        assert terminate(proc) == 0
    lines = _lines(log)
    _said_first(lines, ours)
    problems = _problems(lines, fmt)
    said = [ln for ln in problems if ours in ln]
    assert len(said) == 1, problems
    assert "ECONNREFUSED" in said[0] and "retrying with backoff" in said[0]
    # the client's first line of each kind (4 of them) and the daemon's own; the old
    # daemon wrote about 20 in this time
    assert len(problems) <= 6, "\n".join(problems)
    assert sum("ECONNREFUSED" in ln and "Connection failed" in ln for ln in problems) == 2  # ours, the client's
    if fmt == "json":
        row = json.loads(said[0])
        assert row["logger"] == "driftwarden.daemon" and row["event"] == "kafka_unreachable"
        assert row["brokers"] == closed


class LateForwarder:
    """Listens on ``port`` only once :meth:`open` is called, then forwards to ``target``:
    a bootstrap address that refuses connections until the broker "comes up"."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self.sock: socket.socket | None = None

    def open(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self.sock,), daemon=True).start()

    def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                client, _ = lsock.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                return
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


@pytest.fixture
def late_forwarder(broker: EmbeddedBroker) -> Iterator[LateForwarder]:
    fwd = LateForwarder(free_port(), broker.port)
    try:
        yield fwd
    finally:
        fwd.close()


@pytest.mark.broker
def test_one_line_when_kafka_is_reachable_again(tmp_path: Path, topic: str, late_forwarder: LateForwarder) -> None:
    bootstrap = f"127.0.0.1:{late_forwarder.port}"
    # the client's retries 1 s apart at most, so it finds the broker soon after it comes
    cfg = fault_config(tmp_path / "d", bootstrap=bootstrap, topic=topic,
                       extra="[kafka.consumer_options]\nreconnect_backoff_max_ms = 1000\n")
    log = tmp_path / "daemon.log"
    proc = start_daemon(cfg, log=log)
    try:
        assert wait_for(lambda: any(f"kafka: cannot connect to {bootstrap}" in ln for ln in _lines(log)),
                        timeout=FIRST_LINE_WAIT), "\n".join(_lines(log))
        late_forwarder.open()
        back = f"INFO driftwarden.daemon: kafka: {bootstrap} reachable again after "
        assert wait_for(lambda: any(back in ln for ln in _lines(log)), timeout=60), "\n".join(_lines(log))
        assert wait_for(lambda: http_get(cfg, "/readyz")[0] == 200, timeout=60)
    finally:
        assert terminate(proc) == 0
    lines = _lines(log)
    _said_first(lines, f"kafka: cannot connect to {bootstrap}")
    assert sum(f"kafka: cannot connect to {bootstrap}" in ln for ln in lines) == 1
    assert sum(back in ln for ln in lines) == 1


@pytest.mark.broker
def test_a_refused_login_is_said_at_once_too(tmp_path: Path) -> None:
    """A wrong password: the client's only word is a WARNING per attempt (no "Connection
    failed"); the daemon names it at the first one, and the collapsing keeps it visible."""
    from tests.monitor.ingest.sasl_proxy import SaslFront  # noqa: PLC0415

    with SaslFront(mechanism="PLAIN", users={"driftwarden": "s3cret"}) as front:
        cfg = fault_config(tmp_path / "d", bootstrap=front.bootstrap, topic="p")
        (cfg.parent / "kafka-password").write_text("wrong\n")
        cfg.write_text(cfg.read_text().replace("[kafka]\n", (
            '[kafka]\nsecurity_protocol = "SASL_PLAINTEXT"\nsasl_mechanism = "PLAIN"\n'
            'sasl_username = "driftwarden"\nsasl_password_file = "kafka-password"\n'
        ), 1))
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, log=log)
        try:
            ours = f"kafka: cannot connect to {front.bootstrap}: "
            assert wait_for(lambda: any(ours in ln for ln in _lines(log)), timeout=FIRST_LINE_WAIT), (
                "\n".join(_lines(log)))
        finally:
            assert terminate(proc) == 0
    _said_first(_lines(log), ours)
    said = [ln for ln in _lines(log) if ours in ln]
    assert len(said) == 1 and "SaslAuthenticationFailedError" in said[0], said
    assert "backoff 0." not in said[0]  # the client's backoff is not the daemon's word


class GroupRefused:
    """Answers every FindCoordinator itself with GROUP_AUTHORIZATION_FAILED (error 30), as a
    broker whose ACLs do not let the daemon join its consumer group would; counts them."""

    def __init__(self) -> None:
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, api_key: int, version: int, frame: bytes) -> object | None:
        from kafka.protocol.metadata import FindCoordinatorRequest, FindCoordinatorResponse  # noqa: PLC0415

        if api_key != 10:  # FindCoordinator
            return None
        req = FindCoordinatorRequest.decode(frame, version=version, header=True)
        with self._lock:
            self.refused += 1
        if version >= 4:
            coordinators = [FindCoordinatorResponse.Coordinator(key=k, node_id=-1, host="", port=-1, error_code=30,
                                                                error_message=None) for k in req.coordinator_keys]
            return FindCoordinatorResponse(throttle_time_ms=0, coordinators=coordinators, version=version)
        extra = {"throttle_time_ms": 0, "error_message": None} if version >= 1 else {}
        return FindCoordinatorResponse(error_code=30, node_id=-1, host="", port=-1, version=version, **extra)


@pytest.mark.broker
def test_an_error_once_connected_is_said_as_it_is_not_as_an_outage(tmp_path: Path) -> None:
    """The brokers answer, but refuse the group: the consumer raises at each poll, the daemon
    reconnects with backoff. It used to say "cannot connect" and then, at every reconnect,
    "reachable again after 1s" and "cannot connect" again."""
    from tests.monitor.ingest.sasl_proxy import SaslFront  # noqa: PLC0415

    refuse = GroupRefused()
    with SaslFront(mechanism="PLAIN", answer=refuse) as front:  # PLAINTEXT clients pass straight through
        cfg = fault_config(tmp_path / "d", bootstrap=front.bootstrap, topic="p")
        log = tmp_path / "daemon.log"
        proc = start_daemon(cfg, log=log)
        try:
            # three refusals: three connections, two reconnects (1 s and 2 s of backoff)
            # (the daemon's start-up included: generous for a loaded machine)
            assert wait_for(lambda: refuse.refused >= 3, timeout=FIRST_LINE_WAIT), "\n".join(_lines(log))
            assert http_get(cfg, "/readyz")[0] in (0, 503)
        finally:
            assert terminate(proc) == 0
    lines = _lines(log)
    ours = [ln for ln in lines if " driftwarden.daemon: kafka: " in ln]
    assert ours == [ln for ln in ours if " ERROR " in ln], ours  # nothing "reachable again"
    assert len(ours) == 1, ours  # the recurrences within the minute held back
    assert ours[0].endswith(
        f"ERROR driftwarden.daemon: kafka: {front.bootstrap}: [Error 30] GroupAuthorizationFailedError: g-p;"
        " reconnecting with backoff, not ready until then"
    ), ours
    assert not any("cannot connect" in ln or "reachable again" in ln for ln in lines), lines
